/**
 * A real Cerbos PDP for integration tests, on unix sockets in a private temp dir (no TCP ports).
 *
 *   const pdp = await startPdp();              // quickstart policies
 *   new GRPC(pdp.grpcTarget, { tls: false });
 *   await pdp.stop(); await pdp.start();       // an outage, then the PDP back on the same sockets
 *   await pdp.checkCalls();                    // CheckResources calls the PDP has served
 *   afterAll(() => pdp.stop());
 *
 * Built on EmbeddedPdp with auto-restart off, so a stopped PDP stays down until start().
 * Policies are not watched (TESTING.md): pass your own policiesDir for special policies.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cerbosHttpGet } from "../../src/pdp/cerbos-binary.js";
import { EmbeddedPdp, type PdpLog } from "../../src/pdp/embedded.js";

export const QUICKSTART_POLICIES = fileURLToPath(new URL("../../examples/quickstart/policies", import.meta.url));

export type PdpMethod = "CheckResources" | "AccessEvaluationBatch";

const RPC_METHODS: Record<PdpMethod, string> = {
  CheckResources: "cerbos.svc.v1.CerbosService/CheckResources",
  AccessEvaluationBatch: "authzen.authorization.v1.AuthorizationService/AccessEvaluationBatch",
};

export interface StartPdpOptions {
  /** Default examples/quickstart/policies. */
  policiesDir?: string;
  /** Reload policies on change (storage.disk.watchForChanges). Default false. */
  watch?: boolean;
  /** Optional Cerbos config merged over the defaults (e.g. server.requestLimits). */
  extraConfigFile?: string;
  /** Receives the PDP's log lines; default: only warnings and errors, on stderr. */
  log?: PdpLog;
}

export interface TestPdp {
  /** `unix:/…/grpc.sock`; stays the same across stop()/start(). */
  readonly grpcTarget: string;
  /** HTTP unix socket; stays the same across stop()/start(). */
  readonly httpSocket: string;
  /** The private directory (0700) holding config and sockets; removed by stop(), recreated by start(). */
  readonly dir: string;
  /** PID of the Cerbos process; undefined while stopped. */
  readonly pid: number | undefined;
  /** Starts the PDP again on the same socket paths; resolves when healthy. No-op when running. */
  start(): Promise<void>;
  /**
   * Kills the PDP by PID and waits for its exit: SIGTERM by default (Cerbos shuts down at once,
   * SIGKILL follows after 3 s), or SIGKILL for a crash. Idempotent.
   */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /**
   * Calls of `method` (default CheckResources) the PDP has served since startPdp(), from its own
   * metrics (`rpc_server_call_duration_seconds_count`, summed over every status code). Counts of
   * earlier runs are kept across stop()/start() (read just before each stop).
   */
  checkCalls(method?: PdpMethod): Promise<number>;
  /** checkCalls() once the count has not moved for quietMs (default 200); polls up to timeoutMs. */
  settledCheckCalls(method?: PdpMethod, quietMs?: number, timeoutMs?: number): Promise<number>;
}

/** Sums `rpc_server_call_duration_seconds_count` lines of one rpc_method in Prometheus text. */
export function sumCallCounts(metricsText: string, rpcMethod: string): number {
  const line = /^rpc_server_call_duration_seconds_count\{([^}]*)\}\s+(\S+)/;
  let total = 0;
  for (const text of metricsText.split("\n")) {
    const m = line.exec(text);
    if (m && m[1]!.split(",").includes(`rpc_method="${rpcMethod}"`)) total += Number(m[2]);
  }
  return total;
}

const defaultLog: PdpLog = (level, msg, fields) => {
  if (level === "warn" || level === "error") process.stderr.write(`[test pdp] ${level}: ${msg} ${JSON.stringify(fields ?? {})}\n`);
};

class HarnessPdp implements TestPdp {
  #pdp: EmbeddedPdp | undefined;
  #earlier: Record<PdpMethod, number> = { CheckResources: 0, AccessEvaluationBatch: 0 };
  /** Whether this.dir exists, created by us (mkdtemp at first, exclusive mkdir after a stop). */
  #dirExists = true;

  constructor(
    readonly dir: string,
    private readonly opts: StartPdpOptions,
  ) {}

  get grpcTarget(): string {
    return `unix:${join(this.dir, "grpc.sock")}`;
  }
  get httpSocket(): string {
    return join(this.dir, "http.sock");
  }
  get pid(): number | undefined {
    return this.#pdp?.pid;
  }

  async start(): Promise<void> {
    if (this.#pdp) return;
    if (!this.#dirExists) {
      // Exclusive create of the same path: EEXIST rather than reuse a dir someone else made.
      await mkdir(this.dir, { mode: 0o700 });
      this.#dirExists = true;
    }
    const pdp = new EmbeddedPdp({
      policiesDir: this.opts.policiesDir ?? QUICKSTART_POLICIES,
      watch: this.opts.watch ?? false,
      restart: false,
      dir: this.dir,
      log: this.opts.log ?? defaultLog,
      ...(this.opts.extraConfigFile !== undefined ? { extraConfigFile: this.opts.extraConfigFile } : {}),
    });
    this.#pdp = pdp;
    try {
      await pdp.start();
    } catch (err) {
      this.#pdp = undefined;
      await this.#removeDir();
      throw err;
    }
  }

  async #removeDir(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
    this.#dirExists = false;
  }

  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const pdp = this.#pdp;
    if (!pdp) return;
    this.#pdp = undefined;
    for (const method of Object.keys(RPC_METHODS) as PdpMethod[]) {
      this.#earlier[method] += await this.#currentCalls(method).catch(() => 0);
    }
    if (signal === "SIGKILL" && pdp.pid !== undefined) process.kill(pdp.pid, "SIGKILL");
    await pdp.stop();
    await this.#removeDir();
  }

  async checkCalls(method: PdpMethod = "CheckResources"): Promise<number> {
    const now = this.#pdp ? await this.#currentCalls(method) : 0;
    return this.#earlier[method] + now;
  }

  async settledCheckCalls(method: PdpMethod = "CheckResources", quietMs = 200, timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let last = await this.checkCalls(method);
    let since = Date.now();
    while (Date.now() - since < quietMs) {
      if (Date.now() > deadline) throw new Error(`PDP ${method} count still moving after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 25));
      const now = await this.checkCalls(method);
      if (now !== last) {
        last = now;
        since = Date.now();
      }
    }
    return last;
  }

  async #currentCalls(method: PdpMethod): Promise<number> {
    const res = await cerbosHttpGet(this.httpSocket, "/_cerbos/metrics");
    if (res.status !== 200) throw new Error(`GET /_cerbos/metrics answered ${res.status}`);
    return sumCallCounts(res.body, RPC_METHODS[method]);
  }
}

/** Starts a real Cerbos PDP (see the file comment); resolves once it answers its health check. */
export async function startPdp(opts: StartPdpOptions = {}): Promise<TestPdp> {
  const pdp = new HarnessPdp(await mkdtemp(join(tmpdir(), "cerbos-test-")), opts);
  await pdp.start(); // removes the dir itself on failure
  return pdp;
}
