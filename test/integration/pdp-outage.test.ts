/**
 * PDP failures fail closed: 503 + Retry-After within the deadline, never a 2xx, and the service
 * recovers by itself when the PDP returns. Faults are real: the PDP process is stopped, or the
 * target is a TCP listener that accepts and never answers.
 */
import { createServer, type Server, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const TIMEOUT_MS = 250;
let seq = 0;
/** A request the policies allow, on a path never asked before (so no cache answers it). */
const admin = () =>
  forwarded("DELETE", `/admin/users/${++seq}`, undefined, [
    ["Remote-User", "root"],
    ["Remote-Groups", "admin"],
  ]);
const IDENTITY = { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } };

async function readyz(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return res.status;
}

function expectUnavailable(res: { status: number; header(n: string): string | undefined; body: string }): void {
  expect(res.status).toBe(503);
  expect(res.header("retry-after")).toBe("1");
  expect(res.header("cache-control")).toBe("no-store");
  expect(JSON.parse(res.body)).toEqual({ error: "unavailable", requestId: res.header("x-request-id") });
}

describe("PDP stopped and restarted", () => {
  let pdp: TestPdp;
  let svc: TestService;
  beforeAll(async () => {
    pdp = await startPdp({ policiesDir });
    svc = await startService(pdp.grpcTarget, { identity: IDENTITY, pdp: { timeoutMs: TIMEOUT_MS } });
  });
  afterAll(async () => {
    await svc?.stop();
    await pdp?.stop();
  });

  it("answers 503 within the deadline while the PDP is down, then allows again without a restart", async () => {
    await waitFor(async () => (await readyz(svc.adminPort)) === 200, { what: "readyz 200" });
    expect((await rawRequest(svc.port, { headers: admin() })).status).toBe(200);

    await pdp.stop();
    const seen = svc.decisions().length;
    const answers = await Promise.all(Array.from({ length: 20 }, () => rawRequest(svc.port, { headers: admin() })));
    for (const res of answers) expectUnavailable(res);
    // The service's own measure of each decision (the test client shares 2 busy cores).
    const durations = svc
      .decisions()
      .slice(seen)
      .map((d) => d.durationMs as number);
    expect(durations).toHaveLength(20);
    for (const ms of durations) expect(ms).toBeLessThanOrEqual(TIMEOUT_MS + 50);
    await waitFor(async () => (await readyz(svc.adminPort)) === 503, { what: "readyz 503" });

    await pdp.start();
    const restarted = Date.now();
    await waitFor(async () => (await rawRequest(svc.port, { headers: admin() })).status === 200, { timeoutMs: 5000, intervalMs: 50, what: "allow after PDP restart" });
    expect(Date.now() - restarted).toBeLessThan(5000);
    await waitFor(async () => (await readyz(svc.adminPort)) === 200, { what: "readyz 200 again" });
  });
});

describe("PDP that never answers", () => {
  let blackHole: Server;
  const sockets = new Set<Socket>();
  let svc: TestService;
  beforeAll(async () => {
    blackHole = createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((r) => blackHole.listen(0, "127.0.0.1", r));
    const port = (blackHole.address() as { port: number }).port;
    svc = await startService(`127.0.0.1:${port}`, { identity: IDENTITY, pdp: { timeoutMs: TIMEOUT_MS } });
  });
  afterAll(async () => {
    await svc?.stop();
    for (const s of sockets) s.destroy();
    await new Promise((r) => blackHole?.close(r));
  });

  it("answers 503 at the deadline, never 2xx", async () => {
    const seen = svc.decisions().length;
    const answers = await Promise.all(Array.from({ length: 10 }, () => rawRequest(svc.port, { headers: admin() })));
    for (const res of answers) expectUnavailable(res);
    const durations = svc
      .decisions()
      .slice(seen)
      .map((d) => d.durationMs as number);
    for (const ms of durations) {
      expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
      expect(ms).toBeLessThanOrEqual(TIMEOUT_MS + 50);
    }
    expect(await readyz(svc.adminPort)).toBe(503);
  });
});
