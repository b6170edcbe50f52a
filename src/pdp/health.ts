/**
 * Periodic gRPC health check of the PDP (SPEC §7: at least every 2 s). Drives /readyz.
 */
import type { PdpPool } from "./pool.js";

export interface HealthWatch {
  up(): boolean;
  stop(): void;
}

export function startHealthWatch(pdp: Pick<PdpPool, "healthy">, opts: { intervalMs?: number; onChange?: (up: boolean) => void } = {}): HealthWatch {
  const intervalMs = opts.intervalMs ?? 1000;
  let up = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const probe = async () => {
    const now = await pdp.healthy();
    if (stopped) return;
    if (now !== up) {
      up = now;
      opts.onChange?.(now);
    }
    timer = setTimeout(probe, intervalMs);
    timer.unref();
  };
  void probe();
  return {
    up: () => up,
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
