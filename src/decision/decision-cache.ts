/**
 * The decision cache (SPEC §6): an LRU of allow/deny by canonical check key, bounded by
 * `cache.maxEntries`, with separate allow and deny TTLs, never beyond the token's `exp`.
 * Only PDP answers are stored — never errors. `maxEntries: 0` disables it.
 */
import { LRUCache } from "lru-cache";
import type { Config } from "../config/schema.js";

export interface DecisionCache {
  /** The cached answer, or undefined on a miss (or when disabled). */
  get(key: string): boolean | undefined;
  /** Stores a PDP answer; `expiresAt` (epoch seconds) caps the TTL. */
  set(key: string, allowed: boolean, expiresAt?: number): void;
  size(): number;
  purge(): void;
}

const DISABLED: DecisionCache = { get: () => undefined, set() {}, size: () => 0, purge() {} };

export function createDecisionCache(cfg: Config["cache"], now: () => number = Date.now): DecisionCache {
  if (cfg.maxEntries === 0 || (cfg.allowTtlMs === 0 && cfg.denyTtlMs === 0)) return DISABLED;
  const lru = new LRUCache<string, boolean>({
    max: cfg.maxEntries,
    ttl: Math.max(cfg.allowTtlMs, cfg.denyTtlMs),
    ttlAutopurge: false,
    // Expired entries are treated as missing on read; the LRU bound keeps memory fixed.
    allowStale: false,
    updateAgeOnGet: false,
    perf: { now },
    // Read the clock on every check (the default reuses one reading for 1 ms).
    ttlResolution: 0,
  });
  return {
    get: (key) => lru.get(key),
    set(key, allowed, expiresAt) {
      let ttl = allowed ? cfg.allowTtlMs : cfg.denyTtlMs;
      if (expiresAt !== undefined) ttl = Math.min(ttl, expiresAt * 1000 - now());
      if (ttl <= 0) return;
      lru.set(key, allowed, { ttl });
    },
    size: () => lru.size,
    purge: () => lru.clear(),
  };
}
