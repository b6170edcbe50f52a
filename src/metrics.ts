/**
 * Every metric of SPEC §8, in one place, on an injected registry. Label values are bounded:
 * route names from the config (plus "generic", "unmatched", "-"), outcomes, gRPC status names.
 * Label children used on the hot path are bound once.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
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

export function createMetrics(registry: Registry = new Registry(), opts: { defaultMetrics?: boolean } = {}): Metrics {
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  const requests = new Counter({
    name: "cerbos_forwardauth_requests_total",
    help: "ForwardAuth requests answered, by route and outcome.",
    labelNames: ["route", "outcome"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "cerbos_forwardauth_request_duration_seconds",
    help: "Time from receiving a ForwardAuth request to its answer.",
    labelNames: ["outcome"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const cache = new Counter({
    name: "cerbos_forwardauth_cache_requests_total",
    help: "Decision cache look-ups by result.",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const cacheEntries = new Gauge({ name: "cerbos_forwardauth_cache_entries", help: "Decisions in the cache.", registers: [registry] });
  const coalesced = new Counter({
    name: "cerbos_forwardauth_coalesced_checks_total",
    help: "Checks answered by an identical check already in flight.",
    registers: [registry],
  });
  const pdpRequests = new Counter({
    name: "cerbos_forwardauth_pdp_requests_total",
    help: "Calls to the PDP by gRPC status code.",
    labelNames: ["code"] as const,
    registers: [registry],
  });
  const pdpDuration = new Histogram({
    name: "cerbos_forwardauth_pdp_request_duration_seconds",
    help: "Duration of PDP calls.",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const batch = new Histogram({
    name: "cerbos_forwardauth_batch_size",
    help: "Checks carried by one PDP call.",
    buckets: BATCH_BUCKETS,
    registers: [registry],
  });
  const pending = new Gauge({ name: "cerbos_forwardauth_pending_checks", help: "Checks waiting for or in a PDP call.", registers: [registry] });
  const pdpUp = new Gauge({ name: "cerbos_forwardauth_pdp_up", help: "1 when the PDP answers its health check.", registers: [registry] });
  const reloads = new Counter({
    name: "cerbos_forwardauth_config_reloads_total",
    help: "Configuration reloads (SIGHUP) by result.",
    labelNames: ["result"] as const,
    registers: [registry],
  });

  // Pre-bound children for the hot path; every outcome series exists from the start.
  const durationBy = new Map(OUTCOMES.map((o) => [o, duration.labels(o)]));
  const requestChildren = new Map<string, ReturnType<typeof requests.labels>>();
  const hit = cache.labels("hit");
  const miss = cache.labels("miss");
  hit.inc(0);
  miss.inc(0);
  coalesced.inc(0);
  reloads.labels("success").inc(0);
  reloads.labels("failure").inc(0);
  pdpUp.set(0);
  pending.set(0);

  return {
    registry,
    request(route, outcome, seconds) {
      const key = `${route}\u0000${outcome}`;
      let child = requestChildren.get(key);
      if (!child) {
        child = requests.labels(route, outcome);
        requestChildren.set(key, child);
      }
      child.inc();
      durationBy.get(outcome)!.observe(seconds);
    },
    cacheHit: () => hit.inc(),
    cacheMiss: () => miss.inc(),
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
