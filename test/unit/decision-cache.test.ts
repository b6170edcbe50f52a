/**
 * The decision cache (SPEC §6): separate allow and deny TTLs, a TTL never beyond the token's
 * `exp` (epoch seconds), nothing stored for an expiry already past, the `maxEntries` bound,
 * `maxEntries: 0` disables it, purge empties it.
 *
 * Time: the cache's `now` is injected and driven by vitest's fake clock (`Date`), which also
 * fires lru-cache's own timer — lru-cache reuses a `now()` reading for `ttlResolution` (1 ms) via
 * setTimeout, so an injected clock moved without the timers would be read stale.
 */
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createDecisionCache, type DecisionCache } from "../../src/decision/decision-cache.js";

/** An epoch instant in ms (a whole second), as Date.now() returns. */
const T0 = 1_700_000_000_000;
const T0_SEC = T0 / 1000;

function cacheOf(cfg: { maxEntries?: number; allowTtlMs?: number; denyTtlMs?: number } = {}): DecisionCache {
  return createDecisionCache({ maxEntries: 1000, allowTtlMs: 10_000, denyTtlMs: 2_000, ...cfg }, () => Date.now());
}

/** Moves the fake clock (and lru-cache's timers) forward. */
const advance = (ms: number) => vi.advanceTimersByTime(ms);

beforeEach(() => {
  vi.useFakeTimers({ now: T0, toFake: ["Date", "setTimeout", "clearTimeout"] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("decision cache: TTLs", () => {
  it("allow and deny have their own TTL", () => {
    const cache = cacheOf({ allowTtlMs: 1000, denyTtlMs: 100 });
    cache.set("allow", true);
    cache.set("deny", false);
    advance(99);
    expect(cache.get("allow")).toBe(true);
    expect(cache.get("deny")).toBe(false);
    advance(2); // 101 ms
    expect(cache.get("deny")).toBeUndefined();
    expect(cache.get("allow")).toBe(true);
    advance(898); // 999 ms
    expect(cache.get("allow")).toBe(true);
    advance(2); // 1001 ms
    expect(cache.get("allow")).toBeUndefined();
  });

  it("a deny TTL longer than the allow TTL is honoured as well", () => {
    const cache = cacheOf({ allowTtlMs: 100, denyTtlMs: 1000 });
    cache.set("allow", true);
    cache.set("deny", false);
    advance(101);
    expect(cache.get("allow")).toBeUndefined();
    expect(cache.get("deny")).toBe(false);
    advance(900);
    expect(cache.get("deny")).toBeUndefined();
  });

  it("a TTL of 0 for one answer stores only the other", () => {
    const noAllow = cacheOf({ allowTtlMs: 0, denyTtlMs: 1000 });
    noAllow.set("a", true);
    noAllow.set("d", false);
    expect(noAllow.get("a")).toBeUndefined();
    expect(noAllow.get("d")).toBe(false);
    const noDeny = cacheOf({ allowTtlMs: 1000, denyTtlMs: 0 });
    noDeny.set("a", true);
    noDeny.set("d", false);
    expect(noDeny.get("a")).toBe(true);
    expect(noDeny.get("d")).toBeUndefined();
  });

  it("setting a key again replaces its answer and restarts its TTL", () => {
    const cache = cacheOf({ allowTtlMs: 1000, denyTtlMs: 100 });
    cache.set("k", true);
    advance(500);
    cache.set("k", false);
    expect(cache.get("k")).toBe(false);
    advance(101);
    expect(cache.get("k")).toBeUndefined();
  });
});

describe("decision cache: TTL never beyond the token's exp", () => {
  it("an exp sooner than the TTL caps it (exp in epoch seconds)", () => {
    const cache = cacheOf({ allowTtlMs: 10_000, denyTtlMs: 10_000 });
    cache.set("allow", true, T0_SEC + 2);
    cache.set("deny", false, T0_SEC + 2);
    advance(1999);
    expect(cache.get("allow")).toBe(true);
    expect(cache.get("deny")).toBe(false);
    advance(2); // 2001 ms: past exp, long before the TTL
    expect(cache.get("allow")).toBeUndefined();
    expect(cache.get("deny")).toBeUndefined();
  });

  it("an exp later than the TTL does not lengthen it", () => {
    const cache = cacheOf({ allowTtlMs: 1000, denyTtlMs: 100 });
    cache.set("allow", true, T0_SEC + 3600);
    cache.set("deny", false, T0_SEC + 3600);
    advance(101);
    expect(cache.get("deny")).toBeUndefined();
    advance(900);
    expect(cache.get("allow")).toBeUndefined();
  });

  it("a fractional exp (a JWT NumericDate may have one) caps the TTL to the millisecond", () => {
    const cache = cacheOf();
    cache.set("k", true, T0_SEC + 0.5);
    advance(499);
    expect(cache.get("k")).toBe(true);
    advance(2);
    expect(cache.get("k")).toBeUndefined();
  });

  it("an exp already past, or exactly now, stores nothing", () => {
    const cache = cacheOf();
    cache.set("past", true, T0_SEC - 1);
    cache.set("now", false, T0_SEC);
    expect(cache.get("past")).toBeUndefined();
    expect(cache.get("now")).toBeUndefined();
    expect(cache.size()).toBe(0);
  });
});

describe("decision cache: bounds", () => {
  it("never holds more than maxEntries; the least recently used go first", () => {
    const cache = cacheOf({ maxEntries: 3 });
    for (let i = 0; i < 10; i++) {
      cache.set(`k${i}`, i % 2 === 0);
      expect(cache.size()).toBeLessThanOrEqual(3);
    }
    expect(cache.size()).toBe(3);
    expect(cache.get("k0")).toBeUndefined();
    expect([cache.get("k7"), cache.get("k8"), cache.get("k9")]).toEqual([false, true, false]);
  });

  it("maxEntries bound holds for any sequence of sets (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 20 }), fc.boolean(), fc.integer({ min: 0, max: 50 })), { maxLength: 60 }),
        (max, ops) => {
          const cache = cacheOf({ maxEntries: max, allowTtlMs: 40, denyTtlMs: 20 });
          for (const [key, allowed, wait] of ops) {
            cache.set(`k${key}`, allowed);
            expect(cache.size()).toBeLessThanOrEqual(max);
            expect(cache.get(`k${key}`)).toBe(allowed);
            advance(wait);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("maxEntries: 0 disables the cache", () => {
    const cache = cacheOf({ maxEntries: 0 });
    cache.set("a", true);
    cache.set("d", false);
    expect(cache.get("a")).toBeUndefined();
    expect(cache.get("d")).toBeUndefined();
    expect(cache.size()).toBe(0);
  });

  it("both TTLs 0 disables the cache", () => {
    const cache = cacheOf({ allowTtlMs: 0, denyTtlMs: 0 });
    cache.set("a", true);
    expect(cache.get("a")).toBeUndefined();
    expect(cache.size()).toBe(0);
  });

  it("purge empties the cache", () => {
    const cache = cacheOf();
    for (let i = 0; i < 5; i++) cache.set(`k${i}`, i % 2 === 0);
    expect(cache.size()).toBe(5);
    cache.purge();
    expect(cache.size()).toBe(0);
    for (let i = 0; i < 5; i++) expect(cache.get(`k${i}`)).toBeUndefined();
    cache.set("k0", false);
    expect(cache.get("k0")).toBe(false);
  });
});
