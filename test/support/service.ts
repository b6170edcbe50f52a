/**
 * Starts the service in-process on free loopback ports against a given PDP target, with its
 * log lines captured for assertions.
 */
import { Writable } from "node:stream";
import { startApp, type App } from "../../src/app.js";
import { configSchema, type Config } from "../../src/config/schema.js";
import { createLogger } from "../../src/log.js";

export interface TestService {
  app: App;
  port: number;
  adminPort: number;
  /** Parsed JSON log records written so far. */
  logs: Array<Record<string, unknown>>;
  /** Decision records only. */
  decisions(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startService(pdpTarget: string, overrides: Record<string, unknown> = {}): Promise<TestService> {
  const raw = {
    listen: "127.0.0.1:0",
    admin: { listen: "127.0.0.1:0" },
    ...overrides,
    pdp: { address: pdpTarget, ...((overrides.pdp as object | undefined) ?? {}) },
    log: { level: "info", decisions: "all", ...((overrides.log as object | undefined) ?? {}) },
  };
  const config: Config = configSchema.parse(raw);
  const logs: Array<Record<string, unknown>> = [];
  let partial = "";
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      partial += chunk.toString("utf8");
      let nl;
      while ((nl = partial.indexOf("\n")) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  const app = await startApp(config, { logger: createLogger(config.log.level, sink) });
  return {
    app,
    port: app.port,
    adminPort: app.adminPort,
    logs,
    decisions: () => logs.filter((l) => l.decision === true),
    stop: () => app.shutdown(),
  };
}

/** Polls `fn` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  fn: () => Promise<T> | T,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? "condition"}: ${String(last)}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}
