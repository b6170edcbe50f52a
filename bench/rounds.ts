/**
 * Interleaved rounds (`--rounds N`, bench/run.ts). On a shared VM the machine's speed drifts by
 * tens of percent over minutes, so two rows measured a minute apart compare two different
 * machines. Instead every timed row is measured in N slices of `duration / N` seconds: round 1
 * runs one slice of every row in the canonical order, then round 2, and so on, so every row
 * samples the whole run and the ratios between rows compare rows measured at nearly the same time.
 *
 * `mergeSlices` makes one row result of a row's slices: rates from the sums (right answers ÷
 * measured seconds), counts summed, latency percentiles the median of the slices' (percentiles
 * of different runs cannot be added up; the median keeps one slow slice from owning the row),
 * maxima the maximum, CPU shares weighted by each slice's measured seconds.
 */
import type { LoadResult } from "./load-worker.js";
import type { Scenario } from "./scenarios.js";

export interface PdpCalls {
  readonly calls: number;
  readonly checkResourcesCalls: number;
  readonly accessEvaluationBatchCalls: number;
  readonly checks: number;
  readonly meanChecksPerCall: number | null;
}

export interface CacheCounts {
  readonly hits: number;
  readonly misses: number;
  readonly hitRatio: number | null;
  /** Decisions cached at the end of the measurement. */
  readonly entries: number;
}

/** CPU use during the measurement, % of one core. */
export interface CpuPercent {
  server?: number;
  pdp?: number;
  loadGenerator?: number;
}

/** What one slice of a row measured: the part of a row's result that `mergeSlices` combines. */
export interface SliceResult {
  readonly failures: string[];
  measured?: LoadResult;
  warmup?: Pick<LoadResult, "responses" | "wrongAnswers" | "errors" | "timeouts">;
  pdp?: PdpCalls;
  /** From the service's own metrics, when it exports them. */
  cache?: CacheCounts;
  /** PDP checks per answered request (1 for naive; 1 − this ≈ share answered without the PDP). */
  pdpChecksPerRequest?: number;
  rssMb?: number;
  cpuPercent?: CpuPercent;
}

/** One slice's rate and tail, kept in latest.json so the spread between slices is visible. */
export interface SliceSummary {
  readonly perSec: number;
  readonly p99: number;
}

/** The memory row fills the cache with a fixed number of requests: no rate to slice, it runs whole. */
export const isSliced = (s: Scenario): boolean => s.measure.kind !== "memory";

/** The rows of each round: the sliced rows in every round, the others once, in the last round. */
export function plan(rows: readonly Scenario[], rounds: number): Scenario[][] {
  return Array.from({ length: rounds }, (_, i) => rows.filter((s) => isSliced(s) || i === rounds - 1));
}

/** One row result of its slices (in round order); the row's fixed fields come from the first. */
export function mergeSlices<T extends SliceResult>(slices: readonly T[]): T & { rounds: SliceSummary[] } {
  const measured = present(slices.map((s) => s.measured));
  const merged = measured.length > 0 ? mergeLoad(measured) : undefined;
  const pdp = mergePdp(present(slices.map((s) => s.pdp)));
  const hadChecksPerRequest = slices.some((s) => s.pdpChecksPerRequest !== undefined);
  return {
    ...slices[0]!,
    failures: slices.flatMap((s, i) => s.failures.map((f) => (slices.length > 1 ? `round ${i + 1}: ${f}` : f))),
    measured: merged,
    warmup: mergeWarmup(present(slices.map((s) => s.warmup))),
    pdp,
    cache: mergeCache(present(slices.map((s) => s.cache))),
    pdpChecksPerRequest: hadChecksPerRequest && pdp && merged && merged.responses > 0 ? pdp.checks / merged.responses : undefined,
    rssMb: max(present(slices.map((s) => s.rssMb))),
    cpuPercent: mergeCpu(slices),
    rounds: measured.map((m) => ({ perSec: m.perSec, p99: m.latencyMs.p99 })),
  };
}

function mergeLoad(slices: readonly LoadResult[]): LoadResult {
  const first = slices[0]!;
  const elapsedSec = sum(slices, (s) => s.elapsedSec);
  const responses = sum(slices, (s) => s.responses);
  // A slice's right answers: its checks less its wrong ones (what its own perSec counts).
  const right = sum(slices, (s) => s.checks - s.wrongAnswers);
  const latency = (pick: (l: LoadResult["latencyMs"]) => number) => slices.map((s) => pick(s.latencyMs));
  return {
    phase: first.phase,
    responses,
    checks: sum(slices, (s) => s.checks),
    elapsedSec,
    perSec: elapsedSec > 0 ? right / elapsedSec : 0,
    latencyMs: {
      p50: median(latency((l) => l.p50)),
      p99: median(latency((l) => l.p99)),
      p999: median(latency((l) => l.p999)),
      max: Math.max(...latency((l) => l.max)),
      mean: responses > 0 ? sum(slices, (s) => s.latencyMs.mean * s.responses) / responses : 0,
    },
    statusCounts: addCounts(slices.map((s) => s.statusCounts)),
    errors: sum(slices, (s) => s.errors),
    timeouts: sum(slices, (s) => s.timeouts),
    wrongAnswers: sum(slices, (s) => s.wrongAnswers),
    wrongSamples: slices.flatMap((s) => s.wrongSamples),
    errorSamples: slices.flatMap((s) => s.errorSamples),
    ...(first.offeredRate !== undefined ? { offeredRate: first.offeredRate, lateSends: sum(slices, (s) => s.lateSends ?? 0) } : {}),
  };
}

function mergeWarmup(slices: readonly NonNullable<SliceResult["warmup"]>[]): SliceResult["warmup"] {
  if (slices.length === 0) return undefined;
  return {
    responses: sum(slices, (s) => s.responses),
    wrongAnswers: sum(slices, (s) => s.wrongAnswers),
    errors: sum(slices, (s) => s.errors),
    timeouts: sum(slices, (s) => s.timeouts),
  };
}

function mergePdp(slices: readonly PdpCalls[]): PdpCalls | undefined {
  if (slices.length === 0) return undefined;
  const calls = sum(slices, (s) => s.calls);
  const checks = sum(slices, (s) => s.checks);
  return {
    calls,
    checkResourcesCalls: sum(slices, (s) => s.checkResourcesCalls),
    accessEvaluationBatchCalls: sum(slices, (s) => s.accessEvaluationBatchCalls),
    checks,
    meanChecksPerCall: calls > 0 ? checks / calls : null,
  };
}

function mergeCache(slices: readonly CacheCounts[]): CacheCounts | undefined {
  if (slices.length === 0) return undefined;
  const hits = sum(slices, (s) => s.hits);
  const misses = sum(slices, (s) => s.misses);
  return { hits, misses, hitRatio: hits + misses > 0 ? hits / (hits + misses) : null, entries: max(slices.map((s) => s.entries))! };
}

/** Each process's CPU share over all slices: weighted by the slices' measured seconds. */
function mergeCpu(slices: readonly SliceResult[]): CpuPercent | undefined {
  const timed = slices.filter((s) => s.cpuPercent !== undefined && s.measured !== undefined);
  if (timed.length === 0) return undefined;
  const out: CpuPercent = {};
  for (const key of ["server", "pdp", "loadGenerator"] as const) {
    const have = timed.filter((s) => s.cpuPercent![key] !== undefined);
    const seconds = sum(have, (s) => s.measured!.elapsedSec);
    if (seconds > 0) out[key] = Math.round((sum(have, (s) => s.cpuPercent![key]! * s.measured!.elapsedSec) / seconds) * 10) / 10;
  }
  return out;
}

function addCounts(counts: readonly Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of counts) for (const [key, n] of Object.entries(c)) out[key] = (out[key] ?? 0) + n;
  return out;
}

function present<T>(values: readonly (T | undefined)[]): T[] {
  return values.filter((v): v is T => v !== undefined);
}

function sum<T>(items: readonly T[], value: (item: T) => number): number {
  return items.reduce((total, item) => total + value(item), 0);
}

function max(values: readonly number[]): number | undefined {
  return values.length > 0 ? Math.max(...values) : undefined;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
