/**
 * The throughput engine against the real Cerbos PDP (test/fixtures/policies): batching through
 * the real pool (PDP calls counted from the PDP's own metrics), INVALID_ARGUMENT retried per item,
 * decision TTLs, errors never cached, coalescing, cache purge and per-route `cache: false`.
 * Every allow and deny here comes from the real PDP; answers of a batched run are compared with
 * a run that sends one check per call.
 *
 * The batcher is driven directly with `protocol: "checkresources"` (these are the CheckResources
 * rules; AuthZEN batches across principals have their own tests) and its calls are counted as
 * CheckResources calls. Through the service, "PDP calls" count both call shapes.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createChecker } from "../../src/decision/checker.js";
import { createDecisionCache } from "../../src/decision/decision-cache.js";
import { PdpUnavailable } from "../../src/errors.js";
import type { Check, Principal, Resource } from "../../src/model.js";
import { createBatcher, type BatcherOptions, type PdpChecker } from "../../src/pdp/batcher.js";
import { createPool, type PdpPool } from "../../src/pdp/pool.js";
import { forwarded, rawRequest, type HeaderLines } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";
import { readyz, settledDecisionCalls } from "../support/pdp-calls.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));

/** Generous: a deadline is not what these tests are about, and the machine is shared. */
const TIMEOUT_MS = 5000;

const alice: Principal = { id: "alice", roles: ["user"], attr: { tenant: "acme" } };
const route = (id: string): Resource => ({ kind: "route", id, attr: { method: "GET", host: "app.example.com", path: id } });
const doc = (id: string, owner?: string): Resource => ({ kind: "document", id, attr: owner ? { owner } : {} });
const chk = (resource: Resource, action: string, principal: Principal = alice): Check => ({ principal, resource, action });

function batcherFor(pool: PdpPool, opts: Partial<BatcherOptions> = {}): PdpChecker {
  return createBatcher(pool, { maxResourcesPerRequest: 50, maxActionsPerResource: 50, maxDelayMs: 0, maxCallsInFlight: 0, maxPendingChecks: 10_000, protocol: "checkresources", ...opts });
}

/** The reference: every check alone in its own CheckResources call, one after another. */
async function oneByOne(pool: PdpPool, checks: readonly Check[]): Promise<boolean[]> {
  const single = batcherFor(pool, { maxResourcesPerRequest: 1, maxActionsPerResource: 1 });
  const out: boolean[] = [];
  for (const c of checks) out.push((await single.check(c)).allowed);
  return out;
}

const as = (user: string, roles: string): HeaderLines => [
  ["Remote-User", user],
  ["Remote-Groups", roles],
];
const IDENTITY = { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups", attr: { tenant: "Remote-Tenant" } } };
const DOCUMENTS = {
  name: "documents",
  path: "/documents/:id",
  resource: { kind: "document", id: "{params.id}", attr: { owner: "{query.owner}" } },
  actions: { GET: "read", PUT: "update", DELETE: "delete" },
};

/** A service on the shared PDP, ready (health checked) before a test counts PDP calls. */
async function readyService(target: string, overrides: Record<string, unknown>): Promise<TestService> {
  const svc = await startService(target, overrides);
  await waitFor(async () => (await readyz(svc.adminPort)) === 200, { what: "readyz 200" });
  return svc;
}

async function counter(svc: TestService, name: string): Promise<number> {
  const metric = svc.app.metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  return (await metric.get()).values.reduce((n, v) => n + v.value, 0);
}

let pdp: TestPdp;
beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
});
afterAll(async () => {
  await pdp?.stop();
});

describe("batching through the real pool", () => {
  let pool: PdpPool;
  beforeAll(() => {
    pool = createPool({ target: pdp.grpcTarget, tls: false, connections: 2, timeoutMs: TIMEOUT_MS });
  });
  afterAll(() => pool?.close());

  it("120 checks of one principal in one turn → exactly 3 CheckResources calls, every answer as when asked alone", async () => {
    const checks = Array.from({ length: 120 }, (_, i) => {
      switch (i % 5) {
        case 0:
          return chk(route(`/api/items/${i}`), "GET"); // allow: users read /api/*
        case 1:
          return chk(route(`/admin/users/${i}`), "GET"); // deny
        case 2:
          return chk(route(`/public/${i}`), i % 2 ? "GET" : "POST"); // allow GET, deny POST
        case 3:
          return chk(doc(`${i}`, i % 2 ? "alice" : "bob"), "update"); // allow only as owner
        default:
          return chk(doc(`${i}`), "read"); // allow
      }
    });
    const before = await pdp.settledCheckCalls();
    const batcher = batcherFor(pool);
    const batched = await Promise.all(checks.map((c) => batcher.check(c)));
    expect((await pdp.settledCheckCalls()) - before).toBe(3);

    const reference = await oneByOne(pool, checks);
    expect((await pdp.settledCheckCalls()) - before).toBe(3 + 120);
    expect(batched.map((d) => d.allowed)).toEqual(reference);
    expect(reference.filter(Boolean).length).toBeGreaterThan(0);
    expect(reference.filter((a) => !a).length).toBeGreaterThan(0);
    // All answers of one call carry that call's id.
    expect(new Set(batched.map((d) => d.callId)).size).toBe(3);
  });

  it("3 actions on one resource in one turn → 1 call, each action answered for itself", async () => {
    const batcher = batcherFor(pool);
    const before = await pdp.settledCheckCalls();
    const owned = await Promise.all(["read", "update", "delete"].map((a) => batcher.check(chk(doc("7", "alice"), a))));
    expect((await pdp.settledCheckCalls()) - before).toBe(1);
    const notOwned = await Promise.all(["read", "update", "delete"].map((a) => batcher.check(chk(doc("7", "bob"), a))));
    expect((await pdp.settledCheckCalls()) - before).toBe(2);
    expect(owned.map((d) => d.allowed)).toEqual([true, true, true]);
    expect(notOwned.map((d) => d.allowed)).toEqual([true, false, false]);
    const alone = await oneByOne(pool, ["alice", "bob"].flatMap((owner) => ["read", "update", "delete"].map((a) => chk(doc("7", owner), a))));
    expect([...owned, ...notOwned].map((d) => d.allowed)).toEqual(alone);
  });

  it("one resource kind and id with different attributes in one call: each answered for its own attributes", async () => {
    const batcher = batcherFor(pool);
    const before = await pdp.settledCheckCalls();
    const [mine, theirs] = await Promise.all([batcher.check(chk(doc("9", "alice"), "delete")), batcher.check(chk(doc("9", "bob"), "delete"))]);
    expect((await pdp.settledCheckCalls()) - before).toBe(1);
    expect([mine!.allowed, theirs!.allowed]).toEqual([true, false]);
  });

  it("the PDP answers INVALID_ARGUMENT for a whole call when one resource has an empty id", async () => {
    const before = await pdp.settledCheckCalls();
    const error = await pool
      .checkResources({ principal: alice, entries: [{ resource: route("/api/x"), actions: ["GET"] }, { resource: doc(""), actions: ["read"] }] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(PdpUnavailable);
    expect(error).toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
    // The PDP itself refused it (its call counter moved): not a client-side check.
    expect((await pdp.settledCheckCalls()) - before).toBe(1);
  });

  it("INVALID_ARGUMENT retried item by item: the neighbours of a bad item get their real decisions, the bad one rejects", async () => {
    const batcher = batcherFor(pool);
    const checks = [chk(route("/api/a"), "GET"), chk(doc(""), "read"), chk(route("/admin/b"), "GET"), chk(doc("3", "alice"), "update")];
    const before = await pdp.settledCheckCalls();
    const settled = await Promise.allSettled(checks.map((c) => batcher.check(c)));
    // One refused batch, then one call per item.
    expect((await pdp.settledCheckCalls()) - before).toBe(1 + 4);
    expect(settled[1]!.status).toBe("rejected");
    expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(PdpUnavailable);
    const good = [0, 2, 3].map((i) => (settled[i] as PromiseFulfilledResult<{ allowed: boolean }>).value.allowed);
    expect(good).toEqual(await oneByOne(pool, [checks[0]!, checks[2]!, checks[3]!]));
    expect(good).toEqual([true, false, true]);
    expect(batcher.pending()).toBe(0);
  });
});

describe("decision TTLs against the real PDP", () => {
  // The cache's clock is injected. lru-cache reuses one now() reading for 1 ms of real time, so
  // every move of the clock below comes after a settledCheckCalls() (which itself waits ≥ 200 ms).
  const T0 = 1_700_000_000_000;
  let pool: PdpPool;
  beforeAll(() => {
    pool = createPool({ target: pdp.grpcTarget, tls: false, connections: 1, timeoutMs: TIMEOUT_MS });
  });
  afterAll(() => pool?.close());

  it("an allow is re-asked after allowTtlMs and a deny after denyTtlMs, not before", async () => {
    let clock = T0;
    const cache = createDecisionCache({ maxEntries: 100, allowTtlMs: 1000, denyTtlMs: 500 }, () => clock);
    const checker = createChecker(cache, batcherFor(pool));
    const allow = chk(route("/api/ttl"), "GET");
    const deny = chk(route("/admin/ttl"), "GET");
    const ask = () => Promise.all([checker(allow, { cacheable: true }), checker(deny, { cacheable: true })]);

    const start = await pdp.settledCheckCalls();
    expect((await ask()).map((d) => d.allowed)).toEqual([true, false]);
    expect((await pdp.settledCheckCalls()) - start).toBe(1);

    clock = T0 + 499;
    expect(await ask()).toEqual([
      { allowed: true, cached: true },
      { allowed: false, cached: true },
    ]);
    expect((await pdp.settledCheckCalls()) - start).toBe(1);

    clock = T0 + 501; // the deny has expired, the allow has not
    const [a, d] = await ask();
    expect(a).toEqual({ allowed: true, cached: true });
    expect(d!.allowed).toBe(false);
    expect(d!.cached).toBeUndefined();
    expect((await pdp.settledCheckCalls()) - start).toBe(2);

    clock = T0 + 1001; // the allow has expired; the deny was stored again at +501
    const [a2, d2] = await ask();
    expect(a2!.allowed).toBe(true);
    expect(a2!.cached).toBeUndefined();
    expect(d2).toEqual({ allowed: false, cached: true });
    expect((await pdp.settledCheckCalls()) - start).toBe(3);
  });

  it("an allow is re-asked once the token's exp has passed, even within allowTtlMs", async () => {
    let clock = T0;
    const cache = createDecisionCache({ maxEntries: 100, allowTtlMs: 60_000, denyTtlMs: 60_000 }, () => clock);
    const checker = createChecker(cache, batcherFor(pool));
    const allow = chk(route("/api/exp"), "GET");
    const opts = { cacheable: true, expiresAt: T0 / 1000 + 2 };
    const start = await pdp.settledCheckCalls();
    expect(await checker(allow, opts)).toMatchObject({ allowed: true });
    await pdp.settledCheckCalls();
    clock = T0 + 1999;
    expect(checker(allow, opts)).toEqual({ allowed: true, cached: true });
    expect((await pdp.settledCheckCalls()) - start).toBe(1);
    clock = T0 + 2001;
    expect(await checker(allow, opts)).toMatchObject({ allowed: true });
    expect((await pdp.settledCheckCalls()) - start).toBe(2);
  });
});

describe("errors are never cached", () => {
  // Its own PDP: this one is stopped and started.
  let own: TestPdp;
  let svc: TestService;
  let pool: PdpPool;
  beforeAll(async () => {
    own = await startPdp({ policiesDir });
    svc = await startService(own.grpcTarget, { identity: IDENTITY, pdp: { timeoutMs: TIMEOUT_MS } });
    pool = createPool({ target: own.grpcTarget, tls: false, connections: 1, timeoutMs: TIMEOUT_MS });
  });
  afterAll(async () => {
    pool?.close();
    await svc?.stop();
    await own?.stop();
  });

  it("PDP stopped → 503; PDP back → the same request is answered 200, not a cached 503", async () => {
    const request = () => rawRequest(svc.port, { headers: forwarded("GET", "/api/never-asked-before", undefined, as("alice", "user")) });
    const cache = createDecisionCache({ maxEntries: 100, allowTtlMs: 60_000, denyTtlMs: 60_000 });
    const checker = createChecker(cache, batcherFor(pool));
    const check = chk(route("/api/never-asked-before"), "GET");

    await own.stop();
    const refused = await request();
    expect(refused.status).toBe(503);
    expect(refused.header("retry-after")).toBe("1");
    await expect(checker(check, { cacheable: true })).rejects.toBeInstanceOf(PdpUnavailable);
    expect(cache.size()).toBe(0);

    await own.start();
    const start = await settledDecisionCalls(own);
    // Reconnection takes a moment (backoff): wait for an answer that is not a 503.
    const answered = await waitFor(
      async () => {
        const res = await request();
        return res.status === 503 ? undefined : res;
      },
      { timeoutMs: 15_000, intervalMs: 50, what: "an answer other than 503" },
    );
    expect(answered.status).toBe(200);
    expect((await settledDecisionCalls(own)) - start).toBeGreaterThanOrEqual(1);
    const decided = await waitFor(
      () =>
        Promise.resolve(checker(check, { cacheable: true })).then(
          (d) => d,
          () => undefined,
        ),
      { timeoutMs: 15_000, what: "checker answer" },
    );
    expect(decided.allowed).toBe(true);
    expect(cache.size()).toBe(1);
  });
});

describe("coalescing through the service", () => {
  let proxy: TcpProxy;
  let svc: TestService;
  beforeAll(async () => {
    // A proxy in front of the PDP holds the leader's call until every follower has arrived.
    proxy = await startTcpProxy(pdp.grpcTarget.slice("unix:".length));
    svc = await readyService(proxy.target, { identity: IDENTITY, pdp: { timeoutMs: 30_000 } });
  });
  afterAll(async () => {
    proxy?.release();
    await svc?.stop();
    await proxy?.close();
  });

  it("50 identical concurrent uncached requests → 1 PDP call; 49 coalesced", async () => {
    const start = await settledDecisionCalls(pdp);
    const coalescedBefore = await counter(svc, "cerbos_forwardauth_coalesced_checks_total");
    proxy.hold();
    const answers = Promise.all(Array.from({ length: 50 }, () => rawRequest(svc.port, { headers: forwarded("GET", "/api/coalesce", undefined, as("alice", "user")), timeoutMs: 30_000 })));
    await waitFor(async () => (await counter(svc, "cerbos_forwardauth_coalesced_checks_total")) - coalescedBefore === 49, { what: "49 coalesced checks" });
    proxy.release();
    const responses = await answers;
    expect(responses.map((r) => r.status)).toEqual(Array(50).fill(200));
    expect((await settledDecisionCalls(pdp)) - start).toBe(1);
    expect((await counter(svc, "cerbos_forwardauth_coalesced_checks_total")) - coalescedBefore).toBe(49);
  });
});

describe("cache purge and per-route cache: false", () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await readyService(pdp.grpcTarget, {
      identity: IDENTITY,
      pdp: { timeoutMs: TIMEOUT_MS },
      // Long TTLs: an answer in the cache stays there for the whole test.
      cache: { allowTtlMs: 600_000, denyTtlMs: 600_000 },
      routes: [{ ...DOCUMENTS, cache: false }],
    });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  const ask = (method: string, uri: string, user = "alice") => rawRequest(svc.port, { headers: forwarded(method, uri, undefined, as(user, "user")) });

  it("POST /cache/purge on the admin port → 204, and the next request asks the PDP again", async () => {
    const start = await settledDecisionCalls(pdp);
    expect((await ask("GET", "/api/purge")).status).toBe(200);
    expect((await ask("GET", "/admin/purge")).status).toBe(403);
    expect((await settledDecisionCalls(pdp)) - start).toBe(2);
    expect((await ask("GET", "/api/purge")).status).toBe(200);
    expect((await ask("GET", "/admin/purge")).status).toBe(403);
    expect((await settledDecisionCalls(pdp)) - start).toBe(2); // both from the cache

    const purge = await fetch(`http://127.0.0.1:${svc.adminPort}/cache/purge`, { method: "POST" });
    expect(purge.status).toBe(204);
    expect(await purge.text()).toBe("");

    expect((await ask("GET", "/api/purge")).status).toBe(200);
    expect((await ask("GET", "/admin/purge")).status).toBe(403);
    expect((await settledDecisionCalls(pdp)) - start).toBe(4);
  });

  it("a route with cache: false asks the PDP for every request", async () => {
    const start = await settledDecisionCalls(pdp);
    for (let i = 0; i < 3; i++) {
      expect((await ask("PUT", "/documents/1?owner=alice")).status).toBe(200);
      expect((await ask("PUT", "/documents/1?owner=alice", "bob")).status).toBe(403);
    }
    expect((await settledDecisionCalls(pdp)) - start).toBe(6);
  });
});
