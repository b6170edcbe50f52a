/**
 * SIGTERM under load (issue 8, SPEC §10), on the built CLI in front of a real Cerbos PDP reached
 * through the fault proxy (so the PDP can be slowed or black-holed while requests are in flight):
 * /readyz turns 503 at once, every request already received gets its real answer (a batch still
 * waiting for its flush is flushed), a request on a kept-alive connection after the signal gets
 * 503 + Connection: close, the process exits 0 within 10 s; a second signal exits at once.
 *
 * Our own raw requests, not a load generator: each one must be seen to get its answer.
 * cli.test.ts covers the embedded PDP's lifetime across SIGTERM/SIGKILL.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.js";
import { forwarded, parseResponse, rawRequest, type HeaderLines, type RawResponse } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { runCli, type CliProcess } from "../support/process.js";
import { waitFor } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const ADMIN: HeaderLines = [
  ["Remote-User", "root"],
  ["Remote-Groups", "admin"],
];
const USER: HeaderLines = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
];

let seq = 0;
/** A request on a path never asked before; the policy allows it for admin, denies it for a user. */
function fresh(allowed: boolean): HeaderLines {
  const n = ++seq;
  return forwarded("DELETE", `/admin/shutdown/${n}`, undefined, [...(allowed ? ADMIN : USER), ["X-Request-Id", `sd-${process.pid}-${n}`]]);
}

function writeConfig(pdpTarget: string, pdp: string, batch: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "cfa-shutdown-")), "config.yaml");
  writeFileSync(
    path,
    `
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
pdp: { address: "${pdpTarget}", ${pdp} }
batch: { ${batch} }
identity:
  trustedHeaders: { id: Remote-User, roles: Remote-Groups }
log: { decisions: all }
`,
  );
  return path;
}

/** One sample of the exposition text (no labels); 0 when absent. */
function sample(text: string, name: string, labels = ""): number {
  const m = new RegExp(`^${name}${labels.replace(/[{}]/g, "\\$&")} ([0-9.e+-]+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/**
 * A kept-alive HTTP/1.1 connection: one request at a time, each answer parsed whole.
 * `closed` resolves when the server closes it.
 */
class KeepAliveConnection {
  readonly closed: Promise<void>;
  #socket: Socket;
  #buffer = "";
  #waiting: ((text: string) => void) | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      this.#buffer += chunk.toString("latin1");
      const end = this.#buffer.indexOf("\r\n\r\n");
      if (end < 0 || !this.#waiting) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(this.#buffer.slice(0, end))?.[1] ?? 0);
      if (this.#buffer.length < end + 4 + length) return;
      const text = this.#buffer.slice(0, end + 4 + length);
      this.#buffer = this.#buffer.slice(end + 4 + length);
      const wake = this.#waiting;
      this.#waiting = undefined;
      wake(text);
    });
    this.closed = new Promise((resolve) => socket.on("close", () => resolve()));
  }

  static open(port: number): Promise<KeepAliveConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, "127.0.0.1", () => resolve(new KeepAliveConnection(socket)));
      socket.once("error", reject);
    });
  }

  send(headers: HeaderLines): Promise<RawResponse> {
    const text = ["GET / HTTP/1.1", "Host: auth.local", ...headers.map(([k, v]) => `${k}: ${v}`)].join("\r\n") + "\r\n\r\n";
    return new Promise((resolve, reject) => {
      this.#waiting = (answer) => resolve(parseResponse(answer));
      void this.closed.then(() => reject(new Error("connection closed before an answer")));
      this.#socket.write(text);
    });
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

/** The promise's value, or "too slow" once `ms` have passed. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | "too slow"> {
  let timer: NodeJS.Timeout | undefined;
  const slow = new Promise<"too slow">((resolve) => (timer = setTimeout(() => resolve("too slow"), Math.max(0, ms))));
  try {
    return await Promise.race([promise, slow]);
  } finally {
    clearTimeout(timer);
  }
}

async function listening(proc: CliProcess): Promise<{ port: number; adminPort: number }> {
  const ready = await waitFor(() => proc.logs().find((l) => l.msg === "cerbos-forwardauth listening"), {
    timeoutMs: 30_000,
    what: `service start (stderr: ${proc.stderr()})`,
  });
  const ports = { port: ready.port as number, adminPort: ready.admin as number };
  await waitFor(async () => (await fetch(`http://127.0.0.1:${ports.adminPort}/readyz`)).status === 200, { what: "readyz 200" });
  return ports;
}

let pdp: TestPdp;
const running: CliProcess[] = [];
const proxies: FaultProxy[] = [];
beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
});
afterEach(async () => {
  for (const p of running.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGKILL");
      await p.exited;
    }
  }
  for (const proxy of proxies.splice(0)) await proxy.stop();
});
afterAll(async () => {
  await pdp?.stop();
});

describe("SIGTERM under load", () => {
  it("/readyz 503 at once, every received request gets its real answer (its pending batch flushed), 503 + Connection: close on a kept-alive connection, exit 0 within 10 s", async () => {
    const proxy = await startFaultProxy(pdp.grpcTarget.slice("unix:".length));
    proxies.push(proxy);
    // Checks wait up to 1 s for their batch, then 400 ms for the slowed PDP: a window in which
    // the signal arrives while every request is received but not yet sent to the PDP.
    const proc = runCli(["--config", writeConfig(proxy.target, "timeoutMs: 5000", "maxDelayMs: 1000")]);
    running.push(proc);
    const { port, adminPort } = await listening(proc);
    const metrics = async () => (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();

    const kept = await KeepAliveConnection.open(port);
    expect((await kept.send(fresh(true))).status).toBe(200);

    await proxy.setMode({ kind: "delay", ms: 400 });
    const before = await metrics();
    const N = 40;
    const answers = new Map<number, RawResponse>();
    const inFlight = Array.from({ length: N }, (_, i) => {
      const allowed = i % 2 === 0;
      return rawRequest(port, { headers: fresh(allowed), timeoutMs: 15_000 }).then((res) => {
        answers.set(i, res);
        return { allowed, res };
      });
    });
    // Every request is received and queued in the batcher (a cache miss each), none flushed yet.
    const missesBefore = sample(before, "cerbos_forwardauth_cache_requests_total", '{result="miss"}');
    await waitFor(async () => sample(await metrics(), "cerbos_forwardauth_cache_requests_total", '{result="miss"}') === missesBefore + N, {
      intervalMs: 5,
      what: `${N} checks queued`,
    });
    expect(sample(await metrics(), "cerbos_forwardauth_batch_size_count")).toBe(sample(before, "cerbos_forwardauth_batch_size_count"));

    const signalled = Date.now();
    proc.child.kill("SIGTERM");
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 503, { timeoutMs: 1000, intervalMs: 5, what: "readyz 503" });
    // "At once": not ready while every one of those requests still waits for its answer.
    expect(answers.size).toBe(0);

    // A request on a connection kept alive from before the signal: refused and the connection closed.
    const late = await kept.send(fresh(true));
    expect(late.status).toBe(503);
    expect(late.header("connection")).toBe("close");
    expect(late.header("retry-after")).toBe("1");
    await kept.closed;
    // A new connection is not accepted any more (never a 2xx).
    const refused = await rawRequest(port, { headers: fresh(true), timeoutMs: 2000 }).then(
      (res) => res.status,
      () => 0,
    );
    expect(refused === 0 || refused === 503).toBe(true);

    // Every request received before the signal gets the PDP's real answer.
    for (const { allowed, res } of await Promise.all(inFlight)) {
      expect(res.status).toBe(allowed ? 200 : 403);
    }
    expect(await within(proc.exited, 10_000 - (Date.now() - signalled))).toEqual({ code: 0, signal: null });
    // Decided by the PDP (each was a cache miss, counted above), one record each; the request
    // refused on the kept-alive connection was never decided.
    const decided = proc.logs().filter((l) => l.decision === true && String(l.requestId).startsWith(`sd-${process.pid}-`));
    expect(decided.map((d) => d.status).sort()).toEqual([200, ...Array(N / 2).fill(200), ...Array(N / 2).fill(403)].sort());
    expect(proc.logs().some((l) => l.msg === "stopped")).toBe(true);
  });
});

describe("second signal", () => {
  it("exits at once while requests are still in flight (no 2xx from the exit)", async () => {
    const proxy = await startFaultProxy(pdp.grpcTarget.slice("unix:".length));
    proxies.push(proxy);
    const TIMEOUT_MS = 8000;
    const proc = runCli(["--config", writeConfig(proxy.target, `timeoutMs: ${TIMEOUT_MS}`, "maxDelayMs: 0")]);
    running.push(proc);
    const { port, adminPort } = await listening(proc);
    expect((await rawRequest(port, { headers: fresh(true) })).status).toBe(200);

    // The PDP goes silent: checks stay in flight until their 8 s deadline.
    await proxy.setMode({ kind: "blackhole" });
    const N = 10;
    const inFlight = Array.from({ length: N }, () => rawRequest(port, { headers: fresh(true), timeoutMs: 15_000 }).catch(() => undefined));
    await waitFor(
      async () => sample(await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text(), "cerbos_forwardauth_pending_checks") === N,
      { what: `${N} checks in flight` },
    );

    proc.child.kill("SIGTERM");
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 503, { timeoutMs: 1000, intervalMs: 5, what: "draining" });
    const second = Date.now();
    proc.child.kill("SIGTERM");
    const exit = await proc.exited;
    // Well before the in-flight checks' deadline would have let a graceful stop finish.
    expect(Date.now() - second).toBeLessThan(2000);
    expect(exit.code).not.toBe(0);
    expect(proc.logs().some((l) => l.msg === "second signal: exiting at once")).toBe(true);
    for (const res of await Promise.all(inFlight)) {
      if (res) expect(res.status < 200 || res.status >= 300, `status ${res.status}`).toBe(true);
    }
  });
});
