/**
 * The gRPC pool on the wire (SPEC §6): `pdp.connections` clients really are distinct TCP (HTTP/2)
 * connections, counted by a TCP proxy in front of the real PDP's unix socket; calls are spread by
 * least in-flight; and `pdp.maxPendingChecks` answers 503 at once beyond it, through the service,
 * which answers 200 again once the load drops. The proxy's hold() stalls the PDP without a sleep.
 */
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Principal } from "../../src/model.js";
import { createPool, type PdpPool } from "../../src/pdp/pool.js";
import { forwarded, rawRequest, type RawResponse } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const TIMEOUT_MS = 20_000;

const alice: Principal = { id: "alice", roles: ["user"], attr: {} };

/** One single-check call: users may GET /api/*, not /admin/*. */
const single = (pool: PdpPool, i: number) =>
  pool.checkResources({ principal: alice, entries: [{ resource: { kind: "route", id: i % 2 ? `/api/${i}` : `/admin/${i}`, attr: {} }, actions: ["GET"] }] });

let pdp: TestPdp;
beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
});
afterAll(async () => {
  await pdp?.stop();
});

describe("pool connections", () => {
  let proxy: TcpProxy | undefined;
  let pool: PdpPool | undefined;
  afterEach(async () => {
    proxy?.release();
    pool?.close();
    await proxy?.close();
    proxy = undefined;
    pool = undefined;
  });

  it.each([4, 1, 3])("pdp.connections %i → exactly that many TCP connections to the PDP", async (connections) => {
    proxy = await startTcpProxy(pdp.grpcTarget.slice("unix:".length));
    pool = createPool({ target: proxy.target, tls: false, connections, timeoutMs: TIMEOUT_MS });
    const p = pool;
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => single(p, i)));
      // Real decisions from the real PDP, matched to their own resource.
      answers.forEach((a, i) => {
        expect(a.results).toHaveLength(1);
        expect(a.results[0]!.allowed("GET")).toBe(i % 2 === 1);
      });
      expect(proxy.accepted()).toBe(connections);
    }
    expect(proxy.open()).toBe(connections);
    expect([...p.inFlight()]).toEqual(Array(connections).fill(0));
  });

  it("calls are spread by least in-flight: 8 stalled calls on 4 connections are 2 per connection", async () => {
    proxy = await startTcpProxy(pdp.grpcTarget.slice("unix:".length));
    pool = createPool({ target: proxy.target, tls: false, connections: 4, timeoutMs: TIMEOUT_MS });
    const p = pool;
    proxy.hold();
    const calls = Array.from({ length: 8 }, (_, i) => single(p, i));
    expect([...p.inFlight()]).toEqual([2, 2, 2, 2]);
    await waitFor(() => proxy!.accepted() === 4, { what: "4 connections" });
    proxy.release();
    const answers = await Promise.all(calls);
    expect(answers.map((a) => a.results[0]!.allowed("GET"))).toEqual([false, true, false, true, false, true, false, true]);
    expect([...p.inFlight()]).toEqual([0, 0, 0, 0]);
    expect(proxy.accepted()).toBe(4);
  });
});

describe("maxPendingChecks through the service", () => {
  const MAX = 5;
  let proxy: TcpProxy;
  let svc: TestService;
  beforeAll(async () => {
    proxy = await startTcpProxy(pdp.grpcTarget.slice("unix:".length));
    svc = await startService(proxy.target, {
      identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } },
      pdp: { maxPendingChecks: MAX, timeoutMs: TIMEOUT_MS },
    });
  });
  afterAll(async () => {
    proxy?.release();
    await svc?.stop();
    await proxy?.close();
  });

  let seq = 0;
  /** An allowed request on a path never asked before: no cache hit, no coalescing. */
  const fresh = () =>
    rawRequest(svc.port, {
      headers: forwarded("DELETE", `/admin/pending/${++seq}`, undefined, [
        ["Remote-User", "root"],
        ["Remote-Groups", "admin"],
      ]),
      timeoutMs: 30_000,
    });

  async function pendingGauge(): Promise<number> {
    const metric = svc.app.metrics.registry.getSingleMetric("cerbos_forwardauth_pending_checks");
    return (await metric!.get()).values[0]?.value ?? -1;
  }

  it("beyond maxPendingChecks → 503 + Retry-After at once, while the others wait; 200 again when the load drops", async () => {
    expect((await fresh()).status).toBe(200);

    // The PDP stalls: the next MAX checks are pending and stay so.
    proxy.hold();
    let settled = 0;
    const waiting = Array.from({ length: MAX }, () =>
      fresh().then((r) => {
        settled++;
        return r;
      }),
    );
    await waitFor(async () => (await pendingGauge()) === MAX, { what: `${MAX} pending checks` });

    // Over the bound: refused at once — answered while the PDP is still stalled.
    const overflow: RawResponse[] = await Promise.all(Array.from({ length: 4 }, () => fresh()));
    for (const res of overflow) {
      expect(res.status).toBe(503);
      expect(res.header("retry-after")).toBe("1");
      expect(JSON.parse(res.body)).toEqual({ error: "unavailable", requestId: res.header("x-request-id") });
    }
    expect(settled).toBe(0);
    expect(await pendingGauge()).toBe(MAX);

    // The load drops: the waiting checks are answered, and new ones are accepted again.
    proxy.release();
    expect((await Promise.all(waiting)).map((r) => r.status)).toEqual(Array(MAX).fill(200));
    expect((await fresh()).status).toBe(200);
    expect(await pendingGauge()).toBe(0);
  });
});
