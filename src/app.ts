/**
 * Wires the parts together; holds no logic of its own.
 * config → (embedded PDP) → PDP client → identity + mapping → decide → listeners.
 */
import type { Config } from "./config/schema.js";
import { createDecider } from "./decision/decide.js";
import { startAdminServer, type AdminServer } from "./http/admin-server.js";
import { startForwardAuthServer, type ForwardAuthServer } from "./http/forwardauth-server.js";
import { loadUws } from "./http/uws.js";
import { createIdentityResolver } from "./identity/resolve.js";
import { createLogger, decisionLogger, type Logger } from "./log.js";
import { compileMapper } from "./mapping/mapper.js";
import { createGrpcPdp, type PdpClient } from "./pdp/client.js";
import { EmbeddedPdp } from "./pdp/embedded.js";
import { startHealthWatch, type HealthWatch } from "./pdp/health.js";

export interface App {
  readonly port: number;
  readonly adminPort: number;
  readonly logger: Logger;
  /** Graceful stop: readiness off, stop accepting, let in-flight checks finish, close the PDP. */
  shutdown(): Promise<void>;
}

export interface AppOptions {
  readonly logger?: Logger;
}

export async function startApp(config: Config, opts: AppOptions = {}): Promise<App> {
  loadUws(); // refuse the JS fallback before anything else starts
  const logger = opts.logger ?? createLogger(config.log.level);
  const mapper = compileMapper(config);
  const identity = createIdentityResolver(config.identity);

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
  const pdp: PdpClient = createGrpcPdp({ target, tls: config.pdp.tls, timeoutMs: config.pdp.timeoutMs });

  let shuttingDown = false;
  const health: HealthWatch = startHealthWatch(pdp, {
    onChange: (up) => logger[up ? "info" : "warn"]({ pdp: target }, up ? "PDP is healthy" : "PDP health check failing"),
  });

  const onDecision = decisionLogger(logger, config.log.decisions);
  const decide = createDecider({ config, identity, mapper, pdp, ...(onDecision ? { onDecision } : {}) });

  let forwardAuth: ForwardAuthServer | undefined;
  let admin: AdminServer | undefined;
  try {
    forwardAuth = await startForwardAuthServer({ listen: config.listen, decide });
    admin = await startAdminServer({
      listen: config.admin.listen,
      handlers: { ready: () => !shuttingDown && health.up() && identity.ready() },
    });
  } catch (error) {
    forwardAuth?.close();
    health.stop();
    pdp.close();
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
    shutdown() {
      stopping ??= (async () => {
        shuttingDown = true;
        fa.stopAccepting();
        await fa.drained();
        fa.close();
        ad.close();
        health.stop();
        identity.close();
        pdp.close();
        await embedded?.stop();
        logger.info("stopped");
        logger.flush?.();
      })();
      return stopping;
    },
  };
}
