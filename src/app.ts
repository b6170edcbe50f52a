/**
 * Wires the parts together; holds no logic of its own.
 * config → (embedded PDP) → pool → batcher → cache + coalescing → identity + mapping → decide → listeners.
 */
import { Registry } from "prom-client";
import type { Config } from "./config/schema.js";
import { createChecker, type Checker } from "./decision/checker.js";
import { createDecider, type Decide, type Verdict } from "./decision/decide.js";
import { createDecisionCache } from "./decision/decision-cache.js";
import { startAdminServer, type AdminServer } from "./http/admin-server.js";
import { startForwardAuthServer, type ForwardAuthServer } from "./http/forwardauth-server.js";
import { loadUws } from "./http/uws.js";
import { createIdentityResolver, type IdentityResolver } from "./identity/resolve.js";
import { createLogger, decisionLogger, type Logger } from "./log.js";
import { compileMapper } from "./mapping/mapper.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { createBatcher } from "./pdp/batcher.js";
import { EmbeddedPdp } from "./pdp/embedded.js";
import { startHealthWatch } from "./pdp/health.js";
import { createPool } from "./pdp/pool.js";

export interface App {
  readonly port: number;
  readonly adminPort: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /**
   * Applies a new configuration to new requests (SIGHUP): routes, identity, response headers,
   * path options, `unmatched` and decision logging. Listeners, the PDP connection, the cache and
   * batching keep their start-up settings (a change there is logged and needs a restart).
   * Rejects, leaving the running config in force, when the new one cannot be compiled.
   */
  reload(config: Config): Promise<void>;
  /** Graceful stop: readiness off, stop accepting, let in-flight checks finish, close the PDP. */
  shutdown(): Promise<void>;
}

/** Keys read only at start-up. */
const RESTART_ONLY = ["listen", "admin", "pdp", "batch", "cache"] as const;
/** How long a reload waits for a new identity source (JWKS) before giving up. */
const RELOAD_READY_TIMEOUT_MS = 10_000;

export interface AppOptions {
  readonly logger?: Logger;
  /** A registry of one's own (tests); default: a new one with Node.js process metrics. */
  readonly registry?: Registry;
}

/**
 * decide() as the service runs it for a config: its mapping, the shared checker, and every
 * verdict counted in the metrics and written to the decision log (bench/hit-path.ts runs it too).
 */
export function createServiceDecider(cfg: Config, parts: { identity: IdentityResolver; checker: Checker; metrics: Metrics; logger: Logger }): Decide {
  const { metrics } = parts;
  const logDecision = decisionLogger(parts.logger, cfg.log.decisions);
  const onDecision = (v: Verdict, requestId: string, ms: number) => {
    metrics.request(v.route, v.outcome, ms / 1000);
    logDecision?.(v, requestId, ms);
  };
  return createDecider({ config: cfg, identity: parts.identity, mapper: compileMapper(cfg), checker: parts.checker, onDecision });
}

export async function startApp(config: Config, opts: AppOptions = {}): Promise<App> {
  loadUws(); // refuse the JS fallback before anything else starts
  const logger = opts.logger ?? createLogger(config.log.level);
  const metrics = createMetrics(opts.registry ?? new Registry());
  let identity = createIdentityResolver(config.identity, { logger });

  let embedded: EmbeddedPdp | undefined;
  if (config.pdp.embedded) {
    embedded = new EmbeddedPdp({
      policiesDir: config.pdp.embedded.policies,
      ...(config.pdp.embedded.config ? { extraConfigFile: config.pdp.embedded.config } : {}),
      log: (level, msg, fields) => logger[level]({ ...fields, component: "embedded-pdp" }, msg),
    });
    await embedded.start();
  }
  const target = embedded ? embedded.grpcTarget : config.pdp.address!;
  const pool = createPool({
    target,
    tls: config.pdp.tls,
    connections: config.pdp.connections,
    timeoutMs: config.pdp.timeoutMs,
    onCall: (code, seconds) => metrics.pdpCall(code, seconds),
  });
  const batcher = createBatcher(pool, {
    maxResourcesPerRequest: config.pdp.maxResourcesPerRequest,
    maxActionsPerResource: config.pdp.maxActionsPerResource,
    maxDelayMs: config.batch.maxDelayMs,
    maxCallsInFlight: config.batch.maxCallsInFlight,
    maxPendingChecks: config.pdp.maxPendingChecks,
    protocol: config.pdp.protocol,
    onAuthzenUnavailable: () => logger.warn("the PDP does not serve AuthZEN: using CheckResources only"),
    onBatch: (n) => metrics.batchSize(n),
    onPending: (n) => metrics.setPendingChecks(n),
  });
  const cache = createDecisionCache(config.cache);
  const checker = createChecker(cache, batcher, metrics);

  let shuttingDown = false;
  /** AuthZEN support is learned from the PDP at start-up and again each time it comes back. */
  const probeAuthzen = async () => {
    if (config.pdp.protocol === "checkresources") return;
    const served = await pool.probeAuthzen();
    if (served === undefined) {
      // No clear answer (deadline, PDP busy): ask again shortly while the PDP is up.
      if (health.up() && !shuttingDown) setTimeout(() => void probeAuthzen(), 2000).unref();
      return;
    }
    batcher.setAuthzenAvailable(served);
    logger.info({ authzen: served, protocol: config.pdp.protocol }, served ? "the PDP serves AuthZEN batches" : "the PDP does not serve AuthZEN");
  };
  const health = startHealthWatch(pool, {
    onChange: (up) => {
      metrics.setPdpUp(up);
      if (up) void probeAuthzen();
      logger[up ? "info" : "warn"]({ pdp: target }, up ? "PDP is healthy" : "PDP health check failing");
    },
  });

  /** The decision function for a config; swapped whole on reload. */
  const deciderFor = (cfg: Config, ident: IdentityResolver): Decide => createServiceDecider(cfg, { identity: ident, checker, metrics, logger });
  let current = config;
  let decide = deciderFor(config, identity);

  let forwardAuth: ForwardAuthServer | undefined;
  let admin: AdminServer | undefined;
  try {
    forwardAuth = await startForwardAuthServer({ listen: config.listen, decide: (h, id, t) => decide(h, id, t) });
    admin = await startAdminServer({
      listen: config.admin.listen,
      handlers: {
        ready: () => !shuttingDown && health.up() && identity.ready(),
        metrics: async () => {
          metrics.setCacheEntries(cache.size());
          return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
        },
        purgeCache: () => {
          cache.purge();
          logger.info("decision cache purged");
        },
      },
    });
  } catch (error) {
    forwardAuth?.close();
    health.stop();
    identity.close();
    pool.close();
    await embedded?.stop();
    throw error;
  }
  logger.info({ listen: config.listen, port: forwardAuth.port, admin: admin.port, pdp: target }, "cerbos-forwardauth listening");

  let stopping: Promise<void> | undefined;
  const fa = forwardAuth;
  const ad = admin;
  return {
    port: fa.port,
    adminPort: ad.port,
    logger,
    metrics,
    async reload(next) {
      const nextIdentity = createIdentityResolver(next.identity, { logger });
      let nextDecide: Decide;
      try {
        nextDecide = deciderFor(next, nextIdentity);
        if (nextIdentity.whenReady) await withTimeout(nextIdentity.whenReady(), RELOAD_READY_TIMEOUT_MS, "the new identity source did not become ready");
      } catch (error) {
        nextIdentity.close();
        throw error;
      }
      const ignored = RESTART_ONLY.filter((k) => JSON.stringify(current[k]) !== JSON.stringify(next[k]));
      if (ignored.length > 0) logger.warn({ keys: ignored }, "changed settings that apply only after a restart");
      const previous = identity;
      identity = nextIdentity;
      decide = nextDecide;
      current = next;
      previous.close();
    },
    shutdown() {
      stopping ??= (async () => {
        shuttingDown = true;
        fa.stopAccepting();
        await fa.drained();
        fa.close();
        ad.close();
        health.stop();
        identity.close();
        pool.close();
        await embedded?.stop();
        logger.info("stopped");
      })();
      return stopping;
    },
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
