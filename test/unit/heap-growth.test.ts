/**
 * The heap-growth limit is applied unless node was given its own --heap-growing-percent.
 * (Its effect on RSS is measured by the benchmark's memory row, not asserted here.)
 */
import { describe, expect, it } from "vitest";
import { limitHeapGrowth } from "../../src/heap-growth.js";

describe("limitHeapGrowth", () => {
  it("sets the flag when node was not given one", () => {
    expect(limitHeapGrowth([], "")).toBe(true);
  });

  it("leaves an explicit --heap-growing-percent alone, on the command line or in NODE_OPTIONS", () => {
    expect(limitHeapGrowth(["--heap-growing-percent=50"], "")).toBe(false);
    expect(limitHeapGrowth(["--heap_growing_percent", "50"], "")).toBe(false);
    expect(limitHeapGrowth([], "--max-old-space-size=512 --heap-growing-percent=10")).toBe(false);
  });
});
