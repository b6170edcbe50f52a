#!/usr/bin/env node
/**
 * cerbos-forwardauth [--config FILE] [--check] [--banner FILE]
 * Flags, config path, signals and exit codes; everything else lives in app.ts.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { startApp, type App } from "./app.js";
import { describeConfigProblems, loadConfigFile } from "./config/load.js";
import { limitHeapGrowth } from "./heap-growth.js";
import { compileMapper } from "./mapping/mapper.js";

const USAGE = `usage: cerbos-forwardauth --config FILE [--check] [--banner FILE]

  --config FILE   YAML configuration (or CERBOS_FORWARDAUTH_CONFIG)
  --check         validate the configuration, print every problem, exit 0 or 1
  --banner FILE   print FILE once listening, with {port} and {adminPort} filled in
`;

/** Exit codes: 0 ok, 1 invalid config or failed start, 2 usage. */
async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        config: { type: "string" },
        check: { type: "boolean", default: false },
        banner: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const path = args.config ?? process.env.CERBOS_FORWARDAUTH_CONFIG;
  if (!path) {
    process.stderr.write(`no configuration: pass --config FILE or set CERBOS_FORWARDAUTH_CONFIG\n${USAGE}`);
    return 2;
  }

  let config;
  try {
    config = loadConfigFile(path);
    compileMapper(config);
  } catch (error) {
    process.stderr.write(`${path}: invalid configuration\n${describeConfigProblems(error)}\n`);
    return 1;
  }
  if (args.check) {
    process.stdout.write(`${path}: configuration is valid\n`);
    return 0;
  }

  let app: App;
  try {
    app = await startApp(config);
  } catch (error) {
    process.stderr.write(`cerbos-forwardauth failed to start: ${(error as Error).message}\n`);
    return 1;
  }
  if (args.banner) {
    const text = readFileSync(args.banner, "utf8").replaceAll("{port}", String(app.port)).replaceAll("{adminPort}", String(app.adminPort));
    process.stdout.write(text);
  }

  return await new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        app.logger.warn({ signal }, "second signal: exiting at once");
        resolve(1);
        return;
      }
      signalled = true;
      app.logger.info({ signal }, "shutting down");
      const force = setTimeout(() => {
        app.logger.error("shutdown took longer than 9 s: exiting");
        resolve(1);
      }, 9000);
      force.unref();
      app.shutdown().then(
        () => resolve(0),
        (error: unknown) => {
          app.logger.error({ err: error }, "shutdown failed");
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    process.on("SIGHUP", () => {
      reloadFrom(path, app).catch(() => {});
    });
  });
}

/** SIGHUP: reload the config file atomically; an invalid file is logged and counted, the old config stays. */
let reloading: Promise<void> = Promise.resolve();
function reloadFrom(path: string, app: App): Promise<void> {
  reloading = reloading.then(async () => {
    try {
      await app.reload(loadConfigFile(path));
      app.metrics.configReload(true);
      app.logger.info({ config: path }, "configuration reloaded");
    } catch (error) {
      app.metrics.configReload(false);
      app.logger.error({ config: path, problems: describeConfigProblems(error) }, "configuration reload failed: the previous configuration stays in force");
    }
  });
  return reloading;
}

limitHeapGrowth();
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`cerbos-forwardauth: ${(error as Error)?.stack ?? error}\n`);
    process.exit(1);
  },
);
