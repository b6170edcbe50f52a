/**
 * A real Prometheus (Debian's `prometheus` binary, installed by .ci/run) for e2e tests.
 *
 *   const prom = await startPrometheus({ global: { scrape_interval: "1s" }, scrape_configs: [...] });
 *   await prom.query('up{job="x"}');           // instant query through /api/v1/query
 *   afterAll(() => prom.stop());
 *
 * Config and TSDB live in a private temp dir (removed by stop()). The web listener is on a free
 * loopback port: a port found by binding port 0 and closing can be taken by someone else before
 * Prometheus binds it (TESTING.md: the loopback is shared), so a start that fails with "address
 * already in use" is retried on a new port. The process is stopped by its PID.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";

export const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN ?? "prometheus";

/** One element of an instant-vector result (or a scalar, with an empty metric). */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface TestPrometheus {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly pid: number;
  /** Private dir holding prometheus.yml and the TSDB. */
  readonly dir: string;
  /** Prometheus' own log (stderr), last 256 KB. */
  log(): string;
  /** GET /api/v1/<path>; throws unless status is "success". */
  api<T = unknown>(path: string, params?: Record<string, string | string[]>): Promise<T>;
  /** Instant query (`/api/v1/query`) at now; vector and scalar results as samples. */
  query(expr: string): Promise<PromSample[]>;
  /** SIGTERM by PID, SIGKILL after 5 s; removes the dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartPrometheusOptions {
  /** Attempts on a new port when the chosen one is taken. Default 5. */
  attempts?: number;
  /** Per attempt. Default 20 s. */
  readyTimeoutMs?: number;
}

/** A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error("no port from listen(0)"))));
    });
  });
}

class AddressInUse extends Error {}

/** Starts Prometheus with `config` (an object, written as YAML, or YAML text); resolves once /-/ready answers 200. */
export async function startPrometheus(config: object | string, opts: StartPrometheusOptions = {}): Promise<TestPrometheus> {
  const dir = await mkdtemp(join(tmpdir(), "prometheus-test-"));
  const configFile = join(dir, "prometheus.yml");
  await writeFile(configFile, typeof config === "string" ? config : stringify(config));
  const attempts = opts.attempts ?? 5;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await launch(dir, configFile, await freePort(), opts.readyTimeoutMs ?? 20_000);
      } catch (error) {
        if (!(error instanceof AddressInUse) || attempt >= attempts) throw error;
      }
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

async function launch(dir: string, configFile: string, port: number, readyTimeoutMs: number): Promise<TestPrometheus> {
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--storage.tsdb.retention.time=1h`,
      `--web.listen-address=127.0.0.1:${port}`,
      `--log.level=info`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    log += chunk.toString("utf8");
    if (log.length > 256 * 1024) log = log.slice(-256 * 1024);
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
  let spawnError: Error | undefined;
  child.once("error", (error) => (spawnError = error));

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (spawnError) throw new Error(`cannot run ${PROMETHEUS_BIN} (Debian package "prometheus"): ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      await exited;
      if (/address already in use/i.test(log)) throw new AddressInUse(`port ${port} taken`);
      throw new Error(`prometheus exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${log.slice(-4000)}`);
    }
    if (Date.now() > deadline) {
      await kill(child, exited);
      throw new Error(`prometheus not ready after ${readyTimeoutMs} ms:\n${log.slice(-4000)}`);
    }
    try {
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      await res.text();
      // Another Prometheus that took the port first would be ready too: check it runs our config.
      if (res.status === 200 && (await runsConfig(url, configFile)) && child.exitCode === null) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  const api = async <T>(path: string, params: Record<string, string | string[]> = {}): Promise<T> => {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) for (const one of Array.isArray(v) ? v : [v]) search.append(k, one);
    const res = await fetch(`${url}/api/v1/${path}?${search}`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { status: string; data?: T; errorType?: string; error?: string };
    if (body.status !== "success") throw new Error(`Prometheus /api/v1/${path} ${search}: ${body.errorType}: ${body.error}`);
    return body.data as T;
  };
  let stopping: Promise<void> | undefined;
  return {
    url,
    pid: child.pid!,
    dir,
    log: () => log,
    api,
    async query(expr) {
      const data = await api<{ resultType: string; result: unknown }>("query", { query: expr });
      if (data.resultType === "scalar") return [{ metric: {}, value: Number((data.result as [number, string])[1]) }];
      if (data.resultType !== "vector") throw new Error(`unexpected result type ${data.resultType} for ${expr}`);
      return (data.result as Array<{ metric: Record<string, string>; value: [number, string] }>).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    stop() {
      stopping ??= (async () => {
        await kill(child, exited);
        await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

async function runsConfig(url: string, configFile: string): Promise<boolean> {
  const res = await fetch(`${url}/api/v1/status/flags`, { signal: AbortSignal.timeout(1000) });
  const body = (await res.json()) as { data?: Record<string, string> };
  return body.data?.["config.file"] === configFile;
}

async function kill(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(child.pid!, sig);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) signal("SIGKILL");
  }, 5000);
  await exited;
  clearTimeout(timer);
}
