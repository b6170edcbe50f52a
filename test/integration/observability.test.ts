/**
 * Metrics exposition after a known sequence of requests, and decision logs (SPEC §8, §9).
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest, type HeaderLines } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const USER: HeaderLines = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
];
const SERVICE = {
  identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } },
  response: { headers: { "X-Auth-Principal": "{principal.id}" } },
  routes: [{ name: "documents", path: "/documents/:id", resource: { kind: "document", id: "{params.id}" }, actions: { GET: "read" } }],
};

/** The value of one sample line of the exposition text (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    const m = /^(\{[^}]*\})? ([0-9.e+-]+)$/.exec(rest);
    if (!m) continue;
    const got = Object.fromEntries([...(m[1] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(m[2]);
  }
  return 0;
}

describe("metrics", () => {
  let pdp: TestPdp;
  let svc: TestService;
  beforeAll(async () => {
    pdp = await startPdp({ policiesDir });
    svc = await startService(pdp.grpcTarget, { ...SERVICE, log: { decisions: "none" } });
  });
  afterAll(async () => {
    await svc?.stop();
    await pdp?.stop();
  });
  const scrape = async () => {
    const res = await fetch(`http://127.0.0.1:${svc.adminPort}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    return res.text();
  };

  it("counts a known sequence of allow, deny, 401, 400, 503, cache hit and coalesced checks", async () => {
    await waitFor(async () => sample(await scrape(), "cerbos_forwardauth_pdp_up") === 1, { what: "pdp_up 1" });
    const ask = (method: string, uri: string, extra: HeaderLines = USER) => rawRequest(svc.port, { headers: forwarded(method, uri, undefined, extra) });
    expect((await ask("GET", "/api/one")).status).toBe(200); // miss → allow
    expect((await ask("GET", "/api/one")).status).toBe(200); // hit → allow
    expect((await ask("GET", "/admin/x")).status).toBe(403); // miss → deny
    expect((await ask("GET", "/documents/7")).status).toBe(200); // route documents, miss → allow
    expect((await ask("GET", "/api/one", [])).status).toBe(401);
    expect((await rawRequest(svc.port, { headers: [["X-Forwarded-Method", "GET"]] })).status).toBe(400);
    // Five identical concurrent checks of a new path: one leader, followers coalesced.
    const burst = await Promise.all(Array.from({ length: 5 }, () => ask("GET", "/api/burst")));
    for (const r of burst) expect(r.status).toBe(200);
    await pdp.stop();
    expect((await ask("GET", "/api/down")).status).toBe(503);
    await pdp.start();

    const text = await scrape();
    const req = (route: string, outcome: string) => sample(text, "cerbos_forwardauth_requests_total", { route, outcome });
    expect(req("generic", "allow")).toBe(7);
    expect(req("generic", "deny")).toBe(1);
    expect(req("documents", "allow")).toBe(1);
    expect(req("-", "unauthenticated")).toBe(1);
    expect(req("-", "bad_request")).toBe(1);
    expect(req("generic", "unavailable")).toBe(1);
    expect(sample(text, "cerbos_forwardauth_request_duration_seconds_count", { outcome: "allow" })).toBe(8);
    expect(sample(text, "cerbos_forwardauth_request_duration_seconds_bucket", { outcome: "allow", le: "0.00005" })).toBeGreaterThanOrEqual(0);
    expect(sample(text, "cerbos_forwardauth_cache_requests_total", { result: "hit" })).toBeGreaterThanOrEqual(1);
    // Misses: /api/one, /admin/x, /documents/7, 5 × /api/burst, /api/down.
    expect(sample(text, "cerbos_forwardauth_cache_requests_total", { result: "miss" })).toBe(9);
    expect(sample(text, "cerbos_forwardauth_coalesced_checks_total")).toBe(4);
    expect(sample(text, "cerbos_forwardauth_cache_entries")).toBe(4);
    expect(sample(text, "cerbos_forwardauth_pdp_requests_total", { code: "OK" })).toBeGreaterThanOrEqual(4);
    expect(sample(text, "cerbos_forwardauth_pdp_requests_total", { code: "UNAVAILABLE" })).toBeGreaterThanOrEqual(1);
    expect(sample(text, "cerbos_forwardauth_pdp_request_duration_seconds_count")).toBeGreaterThanOrEqual(4);
    expect(sample(text, "cerbos_forwardauth_batch_size_count")).toBeGreaterThanOrEqual(5);
    expect(sample(text, "cerbos_forwardauth_pending_checks")).toBe(0);
    expect(sample(text, "cerbos_forwardauth_config_reloads_total", { result: "success" })).toBe(0);
    expect(text).toContain("process_resident_memory_bytes");
    expect(text).toContain("nodejs_eventloop_lag_seconds");
    // Bounded labels: no path or principal ever becomes a label value.
    expect(text).not.toMatch(/alice|\/api\/one|\/documents\/7/);
  });

  it("empties the cache on POST /cache/purge", async () => {
    const purge = await fetch(`http://127.0.0.1:${svc.adminPort}/cache/purge`, { method: "POST" });
    expect(purge.status).toBe(204);
    expect(sample(await scrape(), "cerbos_forwardauth_cache_entries")).toBe(0);
  });
});

describe("decision logs", () => {
  let pdp: TestPdp;
  let svc: TestService;
  beforeAll(async () => {
    pdp = await startPdp({ policiesDir });
    svc = await startService(pdp.grpcTarget, { ...SERVICE, log: { decisions: "deny" } });
    // Let the start-up records settle, so each test sees only the records its requests produce.
    await waitFor(() => svc.logs.some((l) => l.msg === "PDP is healthy"), { what: "PDP healthy record" });
  });
  afterAll(async () => {
    await svc?.stop();
    await pdp?.stop();
  });

  it("writes one record with the fields of §9 for a denied request, none for an allow", async () => {
    const before = svc.decisions().length;
    expect((await rawRequest(svc.port, { headers: forwarded("GET", "/api/ok", undefined, USER) })).status).toBe(200);
    const denied = await rawRequest(svc.port, { headers: forwarded("DELETE", "/documents/9", undefined, USER) });
    expect(denied.status).toBe(403);
    const records = svc.decisions().slice(before);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      requestId: denied.header("x-request-id"),
      route: "documents",
      outcome: "deny",
    });
    for (const field of ["requestId", "route", "principal", "resourceKind", "resourceId", "action", "outcome", "durationMs", "cerbosCallId"]) {
      expect(records[0], field).toHaveProperty(field);
    }
  });

  it("never logs tokens or cookies, and a forged newline in the URI yields exactly one record", async () => {
    const start = svc.logs.length;
    const res = await rawRequest(svc.port, {
      headers: forwarded("GET", '/admin/x%0A{"level":30,"forged":true}', undefined, [
        ...USER,
        ["Authorization", "Bearer eyJhbGciOiJub25lIn0.c2VjcmV0LXRva2Vu.sig"],
        ["Cookie", "session=cookie-secret-value"],
      ]),
    });
    expect(res.status).toBe(400);
    const lines = svc.logs.slice(start);
    expect(lines, JSON.stringify(lines)).toHaveLength(1);
    const text = JSON.stringify(lines);
    expect(text).not.toContain("eyJhbGciOiJub25lIn0");
    expect(text).not.toContain("cookie-secret-value");
    expect(lines.some((l) => "forged" in l)).toBe(false);
  });
});
