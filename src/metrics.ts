/**
 * Every metric of SPEC §8, in one place, on an injected registry. Label values are bounded:
 * route names from the config (plus "generic", "unmatched", "-"), outcomes, gRPC status names.
 * The per-request and per-PDP-call metrics are metrics-fast.js counters and histograms, bound
 * once per label set and counted into plain numbers (tens of ns, not µs); the pending-checks
 * gauge is a plain number read at scrape time. The rare ones stay plain prom-client metrics.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { FastCounter, FastHistogram, type CounterSeries, type HistogramSeries } from "./metrics-fast.js";
import type { Outcome } from "./model.js";

/** 50 µs … 1 s: decisions are fast, cache hits faster. */
export const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2500];
const OUTCOMES: readonly Outcome[] = ["allow", "deny", "unauthenticated", "bad_request", "unavailable", "shadow_deny"];

export interface Metrics {
  readonly registry: Registry;
  request(route: string, outcome: Outcome, seconds: number): void;
  cacheHit(): void;
  cacheMiss(): void;
  setCacheEntries(n: number): void;
  coalesced(): void;
  pdpCall(code: string, seconds: number): void;
  batchSize(checks: number): void;
  setPendingChecks(n: number): void;
  setPdpUp(up: boolean): void;
  configReload(ok: boolean): void;
}

/** One outcome's series: its duration histogram and its request counters by route (grown as routes appear). */
interface OutcomeSeries {
  readonly duration: HistogramSeries;
  readonly byRoute: Map<string, CounterSeries>;
}

export function createMetrics(registry: Registry = new Registry(), opts: { defaultMetrics?: boolean } = {}): Metrics {
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  // Created in exposition order: the registry prints metrics in the order they register.
  const requests = new FastCounter(registry, {
    name: "cerbos_forwardauth_requests_total",
    help: "ForwardAuth requests answered, by route and outcome.",
    labelNames: ["route", "outcome"],
  });
  const duration = new FastHistogram(registry, {
    name: "cerbos_forwardauth_request_duration_seconds",
    help: "Time from receiving a ForwardAuth request to its answer.",
    labelNames: ["outcome"],
    buckets: LATENCY_BUCKETS,
  });
  const cache = new FastCounter(registry, {
    name: "cerbos_forwardauth_cache_requests_total",
    help: "Decision cache look-ups by result.",
    labelNames: ["result"],
  });
  const cacheEntries = new Gauge({ name: "cerbos_forwardauth_cache_entries", help: "Decisions in the cache.", registers: [registry] });
  const coalesced = new FastCounter(registry, {
    name: "cerbos_forwardauth_coalesced_checks_total",
    help: "Checks answered by an identical check already in flight.",
  });
  const pdpRequests = new FastCounter(registry, {
    name: "cerbos_forwardauth_pdp_requests_total",
    help: "Calls to the PDP by gRPC status code.",
    labelNames: ["code"],
  });
  const pdpDuration = new FastHistogram(registry, {
    name: "cerbos_forwardauth_pdp_request_duration_seconds",
    help: "Duration of PDP calls.",
    buckets: LATENCY_BUCKETS,
  });
  const batch = new FastHistogram(registry, {
    name: "cerbos_forwardauth_batch_size",
    help: "Checks carried by one PDP call.",
    buckets: BATCH_BUCKETS,
  });
  // Set per batcher change; a number here, copied into the gauge when it is read.
  let pendingChecks = 0;
  new Gauge({
    name: "cerbos_forwardauth_pending_checks",
    help: "Checks waiting for or in a PDP call.",
    registers: [registry],
    collect() {
      this.set(pendingChecks);
    },
  });
  const pdpUp = new Gauge({ name: "cerbos_forwardauth_pdp_up", help: "1 when the PDP answers its health check.", registers: [registry] });
  const reloads = new Counter({
    name: "cerbos_forwardauth_config_reloads_total",
    help: "Configuration reloads (SIGHUP) by result.",
    labelNames: ["result"] as const,
    registers: [registry],
  });

  // Series bound once for the hot path; every outcome's duration series exists from the start.
  const byOutcome = new Map<string, OutcomeSeries>();
  const outcomeSeries = (outcome: string): OutcomeSeries => {
    let o = byOutcome.get(outcome);
    if (!o) {
      o = { duration: duration.child(outcome), byRoute: new Map() };
      byOutcome.set(outcome, o);
    }
    return o;
  };
  for (const outcome of OUTCOMES) outcomeSeries(outcome);
  const hit = cache.child("hit");
  const miss = cache.child("miss");
  const coalescedChecks = coalesced.child();
  const pdpDurations = pdpDuration.child();
  const batches = batch.child();
  reloads.labels("success").inc(0);
  reloads.labels("failure").inc(0);
  pdpUp.set(0);

  return {
    registry,
    request(route, outcome, seconds) {
      const o = byOutcome.get(outcome) ?? outcomeSeries(outcome);
      let n = o.byRoute.get(route);
      if (!n) {
        n = requests.child(route, outcome); // a new route (config reload): one more series
        o.byRoute.set(route, n);
      }
      n.inc();
      o.duration.observe(seconds);
    },
    // Called unbound (checker hooks): arrow functions, no `this`.
    cacheHit: () => hit.inc(),
    cacheMiss: () => miss.inc(),
    setCacheEntries: (n) => cacheEntries.set(n),
    coalesced: () => coalescedChecks.inc(),
    pdpCall(code, seconds) {
      // Once per PDP call, not per request: child() finds the code's series itself.
      pdpRequests.child(code).inc();
      pdpDurations.observe(seconds);
    },
    batchSize: (n) => batches.observe(n),
    setPendingChecks: (n) => {
      pendingChecks = n;
    },
    setPdpUp: (up) => pdpUp.set(up ? 1 : 0),
    configReload: (ok) => reloads.labels(ok ? "success" : "failure").inc(),
  };
}
