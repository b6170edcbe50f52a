/**
 * The metrics of SPEC §8 as /metrics shows them: a known sequence of calls gives exact counter
 * values, cumulative buckets (a value on a bound counts in that bound's bucket, one above the
 * largest only in +Inf), `_count` and `_sum`; a scrape moves nothing, so two in a row agree and
 * calls between scrapes add up. The strongest check: the same calls fed to plain prom-client
 * Counters and Histograms (the metrics as they were before the hot-path rewrite) give the
 * identical text, JSON and single-metric answers, for fixed and for random sequences.
 */
import fc from "fast-check";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createMetrics, LATENCY_BUCKETS, type Metrics } from "../../src/metrics.js";
import type { Outcome } from "../../src/model.js";

const OUTCOMES: readonly Outcome[] = ["allow", "deny", "unauthenticated", "bad_request", "unavailable", "shadow_deny"];
const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2500];

/**
 * The reference: the same metrics on plain prom-client metrics, as src/metrics.ts had them, plus
 * `zero()` for each outcome so the duration series exist from the start (prom-client's
 * `labels(...)` alone creates no series until the first observation).
 */
function referenceMetrics(registry: Registry): Metrics {
  const requests = new Counter({ name: "cerbos_forwardauth_requests_total", help: "ForwardAuth requests answered, by route and outcome.", labelNames: ["route", "outcome"], registers: [registry] });
  const duration = new Histogram({
    name: "cerbos_forwardauth_request_duration_seconds",
    help: "Time from receiving a ForwardAuth request to its answer.",
    labelNames: ["outcome"],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const cache = new Counter({ name: "cerbos_forwardauth_cache_requests_total", help: "Decision cache look-ups by result.", labelNames: ["result"], registers: [registry] });
  const cacheEntries = new Gauge({ name: "cerbos_forwardauth_cache_entries", help: "Decisions in the cache.", registers: [registry] });
  const coalesced = new Counter({ name: "cerbos_forwardauth_coalesced_checks_total", help: "Checks answered by an identical check already in flight.", registers: [registry] });
  const pdpRequests = new Counter({ name: "cerbos_forwardauth_pdp_requests_total", help: "Calls to the PDP by gRPC status code.", labelNames: ["code"], registers: [registry] });
  const pdpDuration = new Histogram({ name: "cerbos_forwardauth_pdp_request_duration_seconds", help: "Duration of PDP calls.", buckets: LATENCY_BUCKETS, registers: [registry] });
  const batch = new Histogram({ name: "cerbos_forwardauth_batch_size", help: "Checks carried by one PDP call.", buckets: BATCH_BUCKETS, registers: [registry] });
  const pending = new Gauge({ name: "cerbos_forwardauth_pending_checks", help: "Checks waiting for or in a PDP call.", registers: [registry] });
  const pdpUp = new Gauge({ name: "cerbos_forwardauth_pdp_up", help: "1 when the PDP answers its health check.", registers: [registry] });
  const reloads = new Counter({ name: "cerbos_forwardauth_config_reloads_total", help: "Configuration reloads (SIGHUP) by result.", labelNames: ["result"], registers: [registry] });
  for (const outcome of OUTCOMES) duration.zero({ outcome });
  cache.labels("hit").inc(0);
  cache.labels("miss").inc(0);
  coalesced.inc(0);
  reloads.labels("success").inc(0);
  reloads.labels("failure").inc(0);
  pdpUp.set(0);
  pending.set(0);
  return {
    registry,
    request(route, outcome, seconds) {
      requests.labels(route, outcome).inc();
      duration.labels(outcome).observe(seconds);
    },
    cacheHit: () => cache.labels("hit").inc(),
    cacheMiss: () => cache.labels("miss").inc(),
    setCacheEntries: (n) => cacheEntries.set(n),
    coalesced: () => coalesced.inc(),
    pdpCall(code, seconds) {
      pdpRequests.labels(code).inc();
      pdpDuration.observe(seconds);
    },
    batchSize: (n) => batch.observe(n),
    setPendingChecks: (n) => pending.set(n),
    setPdpUp: (up) => pdpUp.set(up ? 1 : 0),
    configReload: (ok) => reloads.labels(ok ? "success" : "failure").inc(),
  };
}

/** The service's metrics and the reference, without process metrics (those differ by the moment). */
function pair(): { fast: Metrics; ref: Metrics } {
  return { fast: createMetrics(new Registry(), { defaultMetrics: false }), ref: referenceMetrics(new Registry()) };
}

/** The value of one sample line of the exposition text; throws when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.keys(got).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
}

/** Cumulative bucket counts of one histogram series, in bound order, then +Inf. */
function buckets(text: string, name: string, bounds: readonly number[], labels: Record<string, string> = {}): number[] {
  return [...bounds.map(String), "+Inf"].map((le) => sample(text, `${name}_bucket`, { ...labels, le }));
}

/** A fixed sequence: several routes and outcomes; durations below, on and between bounds, and above the largest. */
function feed(m: Metrics): void {
  m.request("generic", "allow", 0.00003); // ≤ 0.00005
  m.request("generic", "allow", 0.00005); // exactly on the first bound: counts in it
  m.request("generic", "allow", 0.0004); // ≤ 0.0005
  m.request("generic", "allow", 1); // exactly on the largest bound
  m.request("generic", "allow", 2.5); // above the largest: +Inf only
  m.request("documents", "allow", 0.0001); // on a bound
  m.request("documents", "deny", 0.0007); // ≤ 0.001
  m.request("-", "unauthenticated", 0.00002);
  m.request("-", "bad_request", 0.00001);
  m.request("generic", "unavailable", 0.05); // on a bound
  for (let i = 0; i < 3; i++) m.cacheHit();
  for (let i = 0; i < 2; i++) m.cacheMiss();
  for (let i = 0; i < 4; i++) m.coalesced();
  m.batchSize(1); // on the first bound
  m.batchSize(3); // ≤ 5
  m.batchSize(2500); // on the largest bound
  m.batchSize(3000); // +Inf only
  m.pdpCall("OK", 0.002);
  m.pdpCall("OK", 0.0004);
  m.pdpCall("UNAVAILABLE", 1.2);
  m.setPendingChecks(9);
  m.setPendingChecks(7); // a gauge: the last value
  m.setCacheEntries(5);
  m.setPdpUp(true);
  m.configReload(true);
}

const REQ = "cerbos_forwardauth_requests_total";
const DUR = "cerbos_forwardauth_request_duration_seconds";
const PDP_DUR = "cerbos_forwardauth_pdp_request_duration_seconds";
const BATCH = "cerbos_forwardauth_batch_size";

describe("metrics exposition", () => {
  it("shows every metric of §8 from the start, each outcome's duration series and the unlabelled histograms at zero", async () => {
    const { fast, ref } = pair();
    const text = await fast.registry.metrics();
    for (const outcome of OUTCOMES) {
      expect(buckets(text, DUR, LATENCY_BUCKETS, { outcome })).toEqual(Array(LATENCY_BUCKETS.length + 1).fill(0));
      expect(sample(text, `${DUR}_sum`, { outcome })).toBe(0);
      expect(sample(text, `${DUR}_count`, { outcome })).toBe(0);
    }
    expect(sample(text, `${PDP_DUR}_count`)).toBe(0);
    expect(sample(text, `${BATCH}_count`)).toBe(0);
    expect(sample(text, "cerbos_forwardauth_cache_requests_total", { result: "hit" })).toBe(0);
    expect(sample(text, "cerbos_forwardauth_coalesced_checks_total")).toBe(0);
    expect(sample(text, "cerbos_forwardauth_pending_checks")).toBe(0);
    expect(sample(text, "cerbos_forwardauth_config_reloads_total", { result: "failure" })).toBe(0);
    expect(text).toContain(`# HELP ${REQ} ForwardAuth requests answered, by route and outcome.\n# TYPE ${REQ} counter\n`);
    expect(text).toContain(`# TYPE ${DUR} histogram\n${DUR}_bucket{le="0.00005",outcome="allow"} 0\n`);
    expect(text).toBe(await ref.registry.metrics());
  });

  it("counts a known sequence exactly: counters, cumulative buckets, _count and _sum, labels", async () => {
    const { fast } = pair();
    feed(fast);
    const text = await fast.registry.metrics();

    expect(sample(text, REQ, { route: "generic", outcome: "allow" })).toBe(5);
    expect(sample(text, REQ, { route: "documents", outcome: "allow" })).toBe(1);
    expect(sample(text, REQ, { route: "documents", outcome: "deny" })).toBe(1);
    expect(sample(text, REQ, { route: "-", outcome: "unauthenticated" })).toBe(1);
    expect(sample(text, REQ, { route: "-", outcome: "bad_request" })).toBe(1);
    expect(sample(text, REQ, { route: "generic", outcome: "unavailable" })).toBe(1);
    expect(() => sample(text, REQ, { route: "documents", outcome: "unavailable" })).toThrow(/no sample/); // never seen: no series

    // 50µ 100µ 250µ 500µ 1m 2.5m 5m 10m 25m 50m 100m 250m 500m 1 +Inf
    expect(buckets(text, DUR, LATENCY_BUCKETS, { outcome: "allow" })).toEqual([2, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 6]);
    expect(sample(text, `${DUR}_count`, { outcome: "allow" })).toBe(6);
    expect(sample(text, `${DUR}_sum`, { outcome: "allow" })).toBeCloseTo(0.00003 + 0.00005 + 0.0004 + 1 + 2.5 + 0.0001, 12);
    expect(buckets(text, DUR, LATENCY_BUCKETS, { outcome: "deny" })).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(buckets(text, DUR, LATENCY_BUCKETS, { outcome: "unavailable" })).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    expect(sample(text, `${DUR}_sum`, { outcome: "unavailable" })).toBeCloseTo(0.05, 12);
    expect(sample(text, `${DUR}_count`, { outcome: "shadow_deny" })).toBe(0);

    expect(sample(text, "cerbos_forwardauth_cache_requests_total", { result: "hit" })).toBe(3);
    expect(sample(text, "cerbos_forwardauth_cache_requests_total", { result: "miss" })).toBe(2);
    expect(sample(text, "cerbos_forwardauth_coalesced_checks_total")).toBe(4);
    expect(sample(text, "cerbos_forwardauth_cache_entries")).toBe(5);
    expect(sample(text, "cerbos_forwardauth_pending_checks")).toBe(7);
    expect(sample(text, "cerbos_forwardauth_pdp_up")).toBe(1);
    expect(sample(text, "cerbos_forwardauth_config_reloads_total", { result: "success" })).toBe(1);

    // 1 2 5 10 20 50 100 200 500 1000 2500 +Inf
    expect(buckets(text, BATCH, BATCH_BUCKETS)).toEqual([1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4]);
    expect(sample(text, `${BATCH}_sum`)).toBe(1 + 3 + 2500 + 3000);
    expect(sample(text, `${BATCH}_count`)).toBe(4);

    expect(sample(text, "cerbos_forwardauth_pdp_requests_total", { code: "OK" })).toBe(2);
    expect(sample(text, "cerbos_forwardauth_pdp_requests_total", { code: "UNAVAILABLE" })).toBe(1);
    expect(buckets(text, PDP_DUR, LATENCY_BUCKETS)).toEqual([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3]);
    expect(sample(text, `${PDP_DUR}_sum`)).toBeCloseTo(0.002 + 0.0004 + 1.2, 12);
    expect(sample(text, `${PDP_DUR}_count`)).toBe(3);

    // Label layout as prom-client prints it: the series labels, `le` first on buckets.
    expect(text).toContain(`${REQ}{route="generic",outcome="allow"} 5\n`);
    expect(text).toContain(`${DUR}_bucket{le="+Inf",outcome="allow"} 6\n`);
    expect(text).toContain(`${DUR}_count{outcome="allow"} 6\n`);
    expect(text).toContain(`${BATCH}_bucket{le="2500"} 3\n${BATCH}_bucket{le="+Inf"} 4\n${BATCH}_sum 5504\n${BATCH}_count 4\n`);
  });

  it("moves nothing on a scrape: two in a row agree, calls between scrapes add up, a new route appears", async () => {
    const { fast } = pair();
    feed(fast);
    const first = await fast.registry.metrics();
    expect(await fast.registry.metrics()).toBe(first);
    expect(await fast.registry.getMetricsAsJSON()).toEqual(await fast.registry.getMetricsAsJSON());

    fast.request("generic", "allow", 0.0002);
    fast.request("reports", "deny", 0.3); // a route new since a config reload
    fast.cacheHit();
    fast.batchSize(7);
    fast.pdpCall("DEADLINE_EXCEEDED", 0.6);
    const second = await fast.registry.metrics();
    expect(sample(second, REQ, { route: "generic", outcome: "allow" })).toBe(6);
    expect(sample(second, REQ, { route: "reports", outcome: "deny" })).toBe(1);
    expect(buckets(second, DUR, LATENCY_BUCKETS, { outcome: "allow" })).toEqual([2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 7]);
    expect(sample(second, `${DUR}_sum`, { outcome: "allow" })).toBeCloseTo(sample(first, `${DUR}_sum`, { outcome: "allow" }) + 0.0002, 12);
    expect(sample(second, `${DUR}_count`, { outcome: "deny" })).toBe(2);
    expect(sample(second, "cerbos_forwardauth_cache_requests_total", { result: "hit" })).toBe(4);
    expect(sample(second, `${BATCH}_count`)).toBe(5);
    expect(sample(second, "cerbos_forwardauth_pdp_requests_total", { code: "DEADLINE_EXCEEDED" })).toBe(1);
    expect(await fast.registry.metrics()).toBe(second);
  });

  it("prints the same text as plain prom-client metrics fed the same calls, scrape after scrape", async () => {
    const { fast, ref } = pair();
    for (const m of [fast, ref]) feed(m);
    expect(await fast.registry.metrics()).toBe(await ref.registry.metrics());
    expect(await fast.registry.metrics()).toBe(await ref.registry.metrics());
    for (const m of [fast, ref]) {
      m.request("reports", "shadow_deny", 0.07);
      m.request("generic", "allow", 0.00049);
      m.pdpCall("OK", 0.0011);
      m.coalesced();
    }
    expect(await fast.registry.metrics()).toBe(await ref.registry.metrics());
  });

  it("answers getMetricsAsJSON, getSingleMetric(name).get() and getSingleMetricAsString as prom-client does", async () => {
    const { fast, ref } = pair();
    for (const m of [fast, ref]) feed(m);
    expect(await fast.registry.getMetricsAsJSON()).toEqual(await ref.registry.getMetricsAsJSON());
    for (const name of [REQ, DUR, BATCH, PDP_DUR, "cerbos_forwardauth_coalesced_checks_total", "cerbos_forwardauth_pending_checks"]) {
      expect(await fast.registry.getSingleMetric(name)!.get(), name).toEqual(await ref.registry.getSingleMetric(name)!.get());
      expect(await fast.registry.getSingleMetricAsString(name)).toBe(await ref.registry.getSingleMetricAsString(name));
    }
  });

  it("prints the same text as plain prom-client for random call sequences", async () => {
    const ROUTES = ["generic", "documents", "-", "unmatched", "reports"];
    const CODES = ["OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"];
    // Latencies mostly near the bounds (on, just below, just above), some anywhere in 0…3 s.
    const seconds = fc.oneof(
      fc.constantFrom(...LATENCY_BUCKETS).chain((b) => fc.constantFrom(b, b * (1 - 1e-9), b * (1 + 1e-9))),
      fc.double({ min: 0, max: 3, noNaN: true }),
    );
    const call = fc.oneof(
      fc.record({ k: fc.constant("request" as const), route: fc.constantFrom(...ROUTES), outcome: fc.constantFrom(...OUTCOMES), s: seconds }),
      fc.record({ k: fc.constant("pdp" as const), code: fc.constantFrom(...CODES), s: seconds }),
      fc.record({ k: fc.constant("batch" as const), n: fc.integer({ min: 1, max: 3000 }) }),
      fc.record({ k: fc.constantFrom("hit" as const, "miss" as const, "coalesced" as const, "scrape" as const) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(call, { maxLength: 60 }), async (calls) => {
        const { fast, ref } = pair();
        for (const c of calls) {
          for (const m of [fast, ref]) {
            if (c.k === "request") m.request(c.route, c.outcome, c.s);
            else if (c.k === "pdp") m.pdpCall(c.code, c.s);
            else if (c.k === "batch") m.batchSize(c.n);
            else if (c.k === "hit") m.cacheHit();
            else if (c.k === "miss") m.cacheMiss();
            else if (c.k === "coalesced") m.coalesced();
          }
          if (c.k === "scrape") expect(await fast.registry.metrics()).toBe(await ref.registry.metrics());
        }
        expect(await fast.registry.metrics()).toBe(await ref.registry.metrics());
      }),
      { numRuns: 150 },
    );
  });

  it("drops a non-finite duration rather than throwing on the request path", async () => {
    const { fast } = pair();
    fast.request("generic", "allow", Number.NaN);
    fast.request("generic", "allow", Number.POSITIVE_INFINITY);
    fast.request("generic", "allow", 0.001);
    const text = await fast.registry.metrics();
    expect(sample(text, REQ, { route: "generic", outcome: "allow" })).toBe(3); // the request still counts
    expect(sample(text, `${DUR}_count`, { outcome: "allow" })).toBe(1);
    expect(sample(text, `${DUR}_sum`, { outcome: "allow" })).toBe(0.001);
  });

  it("keeps counting into bound series after registry.resetMetrics()", async () => {
    const { fast } = pair();
    feed(fast);
    fast.registry.resetMetrics();
    let text = await fast.registry.metrics();
    expect(sample(text, REQ, { route: "generic", outcome: "allow" })).toBe(0);
    expect(sample(text, `${DUR}_count`, { outcome: "allow" })).toBe(0);
    fast.request("generic", "allow", 0.01);
    fast.cacheMiss();
    text = await fast.registry.metrics();
    expect(sample(text, REQ, { route: "generic", outcome: "allow" })).toBe(1);
    expect(buckets(text, DUR, LATENCY_BUCKETS, { outcome: "allow" })).toEqual([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(sample(text, "cerbos_forwardauth_cache_requests_total", { result: "miss" })).toBe(1);
  });
});
