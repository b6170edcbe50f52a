/**
 * The decision cache (SPEC §6): an LRU of allow/deny by canonical check key, bounded by
 * `cache.maxEntries`, with separate allow and deny TTLs, never beyond the token's `exp`.
 * Only PDP answers are stored — never errors. `maxEntries: 0` disables it.
 *
 * Each entry is one number: its expiry time in ms, positive for allow and negative for deny.
 * Expiry is checked on read (an expired entry is a miss and is dropped); the LRU bound keeps
 * memory fixed. This keeps lru-cache's own TTL bookkeeping off the hot path.
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
  const lru = new LRUCache<string, number>({ max: cfg.maxEntries });
  return {
    get(key) {
      const entry = lru.get(key);
      if (entry === undefined) return undefined;
      const allowed = entry > 0;
      if ((allowed ? entry : -entry) < now()) {
        lru.delete(key);
        return undefined;
      }
      return allowed;
    },
    set(key, allowed, expiresAt) {
      const t = now();
      let until = t + (allowed ? cfg.allowTtlMs : cfg.denyTtlMs);
      if (expiresAt !== undefined) until = Math.min(until, expiresAt * 1000);
      if (until <= t) return;
      lru.set(key, allowed ? until : -until);
    },
    size: () => lru.size,
    purge: () => lru.clear(),
  };
}
