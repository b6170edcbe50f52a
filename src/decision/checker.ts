/**
 * From a check to a decision: decision cache → in-flight coalescing → the PDP (batcher + pool).
 * A cache hit is answered synchronously; only PDP answers are cached, never errors.
 */
import type { Check, Decision } from "../model.js";
import type { PdpChecker } from "../pdp/batcher.js";
import { checkKeyOf, principalKey, resourceKey } from "../canonical-keys.js";
import { createCoalescer } from "./coalesce.js";
import type { DecisionCache } from "./decision-cache.js";

export interface CheckOptions {
  /** False for routes with `cache: false`. */
  readonly cacheable: boolean;
  /** Epoch seconds (token exp): no cached answer outlives it. */
  readonly expiresAt?: number;
  /** resourceKey(check.resource), when the mapping already has it. */
  readonly resourceKey?: string;
}

export interface CheckerEvents {
  cacheHit?(): void;
  cacheMiss?(): void;
  coalesced?(): void;
}

export type Checker = (check: Check, opts: CheckOptions) => Decision | Promise<Decision>;

const CACHED_ALLOW: Decision = Object.freeze({ allowed: true, cached: true });
const CACHED_DENY: Decision = Object.freeze({ allowed: false, cached: true });

export function createChecker(cache: DecisionCache, pdp: PdpChecker, events: CheckerEvents = {}): Checker {
  const coalescer = createCoalescer<Decision>();
  return (check, opts) => {
    const pKey = principalKey(check.principal);
    const rKey = opts.resourceKey ?? resourceKey(check.resource);
    const key = checkKeyOf(pKey, rKey, check.action, check.token);
    if (opts.cacheable) {
      const hit = cache.get(key);
      if (hit !== undefined) {
        events.cacheHit?.();
        return hit ? CACHED_ALLOW : CACHED_DENY;
      }
      events.cacheMiss?.();
    }
    const { promise, shared } = coalescer.run(key, () =>
      // The batcher groups by the same parts: handed over, not computed again.
      pdp.check(check, { principal: pKey, resource: rKey }).then((decision) => {
        if (opts.cacheable) cache.set(key, decision.allowed, opts.expiresAt);
        return decision;
      }),
    );
    if (shared) events.coalesced?.();
    return promise;
  };
}
