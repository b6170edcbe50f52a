/**
 * The bench's interleaved rounds (bench/rounds.ts): which rows run in which round, and how a row's
 * slices become one result. The numbers are worked out by hand in each test.
 */
import { describe, expect, it } from "vitest";
import type { LoadResult } from "../../bench/load-worker.js";
import { mergeSlices, plan, type SliceResult } from "../../bench/rounds.js";
import { scenarios } from "../../bench/scenarios.js";

function load(slice: { seconds: number; right: number; wrong?: number; p99: number; max: number; mean: number }): LoadResult {
  const wrong = slice.wrong ?? 0;
  const responses = slice.right + wrong;
  return {
    phase: "measure",
    responses,
    checks: responses,
    elapsedSec: slice.seconds,
    perSec: slice.right / slice.seconds,
    latencyMs: { p50: slice.p99 / 4, p99: slice.p99, p999: slice.p99 * 2, max: slice.max, mean: slice.mean },
    statusCounts: { 200: slice.right, ...(wrong ? { 503: wrong } : {}) },
    errors: 0,
    timeouts: 0,
    wrongAnswers: wrong,
    wrongSamples: [],
    errorSamples: [],
  };
}

describe("bench rounds", () => {
  const all = scenarios({ rate: 2000, memoryEntries: 1000 });

  it("every timed row runs once per round in the canonical order; the memory row once, in the last round", () => {
    const rounds = plan(all, 3);
    expect(rounds).toHaveLength(3);
    const timed = all.filter((s) => s.measure.kind === "duration").map((s) => s.name);
    expect(rounds[0]!.map((s) => s.name)).toEqual(timed);
    expect(rounds[1]!.map((s) => s.name)).toEqual(timed);
    expect(rounds[2]!.map((s) => s.name)).toEqual(all.map((s) => s.name));
  });

  it("a row's rate is its right answers over its measured seconds, counts add up, percentiles are the slices' median", () => {
    const slices: SliceResult[] = [
      { failures: [], measured: load({ seconds: 2, right: 2000, p99: 5, max: 9, mean: 1 }), rssMb: 100, cpuPercent: { server: 50 } },
      { failures: [], measured: load({ seconds: 4, right: 2000, wrong: 10, p99: 1, max: 30, mean: 4 }), rssMb: 120, cpuPercent: { server: 80 } },
      { failures: ["slow"], measured: load({ seconds: 2, right: 4000, p99: 3, max: 4, mean: 2 }), rssMb: 110, cpuPercent: { server: 20 } },
    ];
    const row = mergeSlices(slices);
    // 8000 right answers in 8 s, not the mean of 1000, 500 and 2000 per second.
    expect(row.measured!.perSec).toBe(1000);
    expect(row.measured!.responses).toBe(8010);
    expect(row.measured!.wrongAnswers).toBe(10);
    expect(row.measured!.statusCounts).toEqual({ 200: 8000, 503: 10 });
    expect(row.measured!.latencyMs.p99).toBe(3);
    expect(row.measured!.latencyMs.max).toBe(30);
    expect(row.measured!.latencyMs.mean).toBeCloseTo((2000 * 1 + 2010 * 4 + 4000 * 2) / 8010, 10);
    expect(row.rssMb).toBe(120);
    // CPU weighted by seconds: (50·2 + 80·4 + 20·2) / 8.
    expect(row.cpuPercent).toEqual({ server: 57.5 });
    expect(row.failures).toEqual(["round 3: slow"]);
    expect(row.rounds.map((r) => r.perSec)).toEqual([1000, 500, 2000]);
  });
});
