/**
 * In-flight coalescing (SPEC §6): a check identical to one already in flight waits for that one.
 * The entry is removed when the leader settles — success or failure — so a failed leader can
 * never poison later checks.
 */
export interface Coalescer<T> {
  /** Runs `start` unless a call with the same key is in flight; then shares its promise. */
  run(key: string, start: () => Promise<T>): { promise: Promise<T>; shared: boolean };
  size(): number;
}

export function createCoalescer<T>(): Coalescer<T> {
  const inFlight = new Map<string, Promise<T>>();
  return {
    run(key, start) {
      const existing = inFlight.get(key);
      if (existing) return { promise: existing, shared: true };
      // then(ok, fail) rather than finally(): one promise per call instead of three.
      const promise = start().then(
        (value) => {
          inFlight.delete(key);
          return value;
        },
        (error: unknown) => {
          inFlight.delete(key);
          throw error;
        },
      );
      inFlight.set(key, promise);
      return { promise, shared: false };
    },
    size: () => inFlight.size,
  };
}
