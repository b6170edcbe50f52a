/**
 * One fixture table, identical answers in every engine variant (SPEC §6, STYLE example 11):
 * cache on/off × batching on/off × 1 or 4 gRPC connections, against the real PDP with
 * test/fixtures/policies. The table is sent concurrently (so checks of one principal share a
 * flush and batch), twice (so the second round is answered from the cache where it is on).
 *
 * - cache off: `cache.maxEntries: 0`.
 * - batching off: `pdp.maxResourcesPerRequest: 1` and `pdp.maxActionsPerResource: 1` — one
 *   resource, one action per CheckResources call, i.e. every check is its own call (an AuthZEN
 *   batch under these limits also carries one evaluation).
 * `pdp.protocol` stays at its default; "PDP calls" count both call shapes.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest, type HeaderLines } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { readyz, settledDecisionCalls } from "../support/pdp-calls.js";
import { startService, waitFor, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));

const ROUTES = [
  {
    name: "documents",
    path: "/documents/:id",
    resource: { kind: "document", id: "{params.id}", attr: { owner: "{query.owner}", size: 3 } },
    actions: { GET: "read", PUT: "update", DELETE: "delete" },
  },
  {
    name: "reports",
    hosts: ["reports.example.com"],
    path: "/reports/:tenant/:id",
    resource: { kind: "report", id: "{params.id}", attr: { tenant: "{params.tenant}" } },
    action: "view",
  },
  { name: "beta", path: "/beta/*", resource: { kind: "route", id: "{path}" }, action: "{method}", shadow: true },
];

const BASE = {
  identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups", attr: { tenant: "Remote-Tenant" } } },
  routes: ROUTES,
  response: { headers: { "X-Auth-Principal": "{principal.id}" } },
};

const as = (user: string, roles: string, tenant?: string): HeaderLines => [
  ["Remote-User", user],
  ["Remote-Groups", roles],
  ...(tenant ? ([["Remote-Tenant", tenant]] as const) : []),
];

interface Row {
  readonly what: string;
  readonly method: string;
  readonly uri: string;
  readonly who: HeaderLines;
  readonly host?: string;
  readonly status: number;
}

/** The expected answers, from the fixture policies. */
const TABLE: readonly Row[] = [
  { what: "generic: user reads /api/*", method: "GET", uri: "/api/items?limit=5", who: as("alice", "user"), status: 200 },
  { what: "generic: user may not write /api/*", method: "POST", uri: "/api/items", who: as("alice", "user"), status: 403 },
  { what: "generic: user may not read /admin/*", method: "GET", uri: "/admin/users", who: as("alice", "user"), status: 403 },
  { what: "generic: admin may do anything", method: "DELETE", uri: "/admin/users", who: as("root", "admin"), status: 200 },
  { what: "generic: any role reads /public/*", method: "GET", uri: "/public/index.html", who: as("bob", "guest"), status: 200 },
  { what: "generic: any role reads /health", method: "HEAD", uri: "/health", who: as("bob", "guest"), status: 200 },
  { what: "generic: guest may not read /api/*", method: "GET", uri: "/api/items", who: as("bob", "guest"), status: 403 },
  { what: "actions map + query attr: anyone with user reads", method: "GET", uri: "/documents/1?owner=alice", who: as("bob", "user"), status: 200 },
  { what: "actions map + query attr: owner updates", method: "PUT", uri: "/documents/1?owner=alice", who: as("alice", "user"), status: 200 },
  { what: "actions map + query attr: non-owner may not update", method: "PUT", uri: "/documents/1?owner=alice", who: as("bob", "user"), status: 403 },
  { what: "actions map: no owner, no delete", method: "DELETE", uri: "/documents/1", who: as("alice", "user"), status: 403 },
  { what: "actions map + params: owner deletes another document", method: "DELETE", uri: "/documents/2?owner=alice", who: as("alice", "user"), status: 200 },
  { what: "actions map: admin deletes any document", method: "DELETE", uri: "/documents/2?owner=bob", who: as("carol", "admin"), status: 200 },
  { what: "actions map: unmapped method denied without the PDP", method: "PATCH", uri: "/documents/1?owner=alice", who: as("alice", "user"), status: 403 },
  { what: "principal attr from Remote-Tenant matches the path", method: "GET", uri: "/reports/acme/q1", who: as("alice", "user", "acme"), host: "reports.example.com", status: 200 },
  { what: "principal attr from Remote-Tenant does not match", method: "GET", uri: "/reports/acme/q1", who: as("bob", "user", "globex"), host: "reports.example.com", status: 403 },
  { what: "no tenant attribute: denied", method: "GET", uri: "/reports/acme/q2", who: as("alice", "user"), host: "reports.example.com", status: 403 },
  { what: "shadow route: PDP denies, answer is 200", method: "DELETE", uri: "/beta/thing", who: as("alice", "user"), status: 200 },
  { what: "nobody identified", method: "GET", uri: "/api/items", who: [], status: 401 },
];

const VARIANTS = [false, true].flatMap((cache) =>
  [false, true].flatMap((batching) => [1, 4].map((connections) => ({ cache, batching, connections }))),
);

let pdp: TestPdp;
beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
});
afterAll(async () => {
  await pdp?.stop();
});

describe.each(VARIANTS)("cache $cache, batching $batching, $connections connection(s)", ({ cache, batching, connections }) => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService(pdp.grpcTarget, {
      ...BASE,
      pdp: {
        connections,
        timeoutMs: 5000,
        ...(batching ? {} : { maxResourcesPerRequest: 1, maxActionsPerResource: 1 }),
      },
      cache: cache ? { maxEntries: 1000, allowTtlMs: 600_000, denyTtlMs: 600_000 } : { maxEntries: 0 },
    });
    await waitFor(async () => (await readyz(svc.adminPort)) === 200, { what: "readyz 200" });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  const send = () => Promise.all(TABLE.map((row) => rawRequest(svc.port, { headers: forwarded(row.method, row.uri, row.host, row.who) })));

  async function batchSizes(): Promise<{ sum: number; count: number }> {
    const metric = svc.app.metrics.registry.getSingleMetric("cerbos_forwardauth_batch_size");
    // A histogram's values carry their series name (_bucket, _sum, _count).
    const values = (await metric!.get()).values as Array<{ value: number; metricName?: string }>;
    const pick = (suffix: string) => values.find((v) => v.metricName === `cerbos_forwardauth_batch_size${suffix}`)?.value ?? 0;
    return { sum: pick("_sum"), count: pick("_count") };
  }

  it("gives the expected status for every row of the table, concurrently, twice", async () => {
    const expected = TABLE.map((r) => `${r.what}: ${r.status}`);
    const start = await settledDecisionCalls(pdp);
    const first = await send();
    expect(first.map((res, i) => `${TABLE[i]!.what}: ${res.status}`)).toEqual(expected);
    const afterFirst = await settledDecisionCalls(pdp);
    expect(afterFirst).toBeGreaterThan(start);

    const second = await send();
    expect(second.map((res, i) => `${TABLE[i]!.what}: ${res.status}`)).toEqual(expected);
    const afterSecond = await settledDecisionCalls(pdp);
    // With the cache on, every decision of the second round comes from it.
    if (cache) expect(afterSecond - afterFirst).toBe(0);
    else expect(afterSecond - afterFirst).toBeGreaterThan(0);

    for (const [i, res] of [...first, ...second].entries()) {
      const row = TABLE[i % TABLE.length]!;
      if (res.status === 200) expect(res.header("x-auth-principal"), row.what).toBe(row.who[0]![1]);
    }

    // Batching off: every PDP call carried exactly one check.
    const { sum, count } = await batchSizes();
    expect(count).toBeGreaterThan(0);
    if (!batching) expect(sum).toBe(count);
  });
});
