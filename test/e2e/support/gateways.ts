/**
 * Real gateways (Debian `caddy` and `nginx`) run from the example configurations in
 * examples/caddy and examples/nginx, on loopback, in a private temp folder (TESTING.md).
 *
 *   const gw = await startCaddy({ authPort, backendPort });   // or startNginx(...)
 *   await fetch(`http://127.0.0.1:${gw.port}/api/items`);
 *   afterAll(() => gw.stop());                                // by PID, SIGTERM then SIGKILL
 *
 * Gateways cannot listen on port 0, so a free port is picked first; when another process takes
 * it in between, the start is retried on a new port.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const CADDYFILE = fileURLToPath(new URL("../../../examples/caddy/Caddyfile", import.meta.url));
export const NGINX_CONF = fileURLToPath(new URL("../../../examples/nginx/nginx.conf", import.meta.url));

export interface Gateway {
  readonly name: "caddy" | "nginx";
  /** The port clients use (127.0.0.1). */
  readonly port: number;
  readonly pid: number;
  /** The gateway's own output so far (stderr, stdout and its log files), for failure messages. */
  output(): string;
  /** Stops the process by PID (SIGTERM, SIGKILL after 5 s) and removes its temp folder. Idempotent. */
  stop(): Promise<void>;
}

export interface GatewayTargets {
  /** Port of the ForwardAuth listener on 127.0.0.1. */
  authPort: number;
  /** Port of the application on 127.0.0.1. */
  backendPort: number;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

interface Launched {
  child: ChildProcess;
  exited: Promise<void>;
  output(): string;
}

function launch(cmd: string, args: string[], env: NodeJS.ProcessEnv, extraOutput: () => string): Launched {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
    child.once("error", (error) => {
      out += `\nspawn ${cmd}: ${error.message}`;
      resolve();
    });
  });
  return { child, exited, output: () => out + extraOutput() };
}

/** Polls until the port accepts a connection; false when the process exits first or 10 s pass. */
async function waitUntilListening(port: number, launched: Launched): Promise<boolean> {
  let gone = false;
  void launched.exited.then(() => (gone = true));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (gone) return false;
    if (await canConnect(port)) return !gone;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

async function stopProcess(launched: Launched): Promise<void> {
  const { child } = launched;
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  process.kill(child.pid, "SIGTERM");
  const killer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL");
  }, 5000);
  await launched.exited;
  clearTimeout(killer);
}

/**
 * Starts on a fresh free port, up to `attempts` times: a port taken by someone else between
 * freePort() and the gateway's bind shows as an early exit.
 */
async function startOnFreePort(
  name: Gateway["name"],
  start: (port: number, dir: string) => Launched,
  attempts = 4,
): Promise<Gateway> {
  let lastOutput = "";
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), `${name}-e2e-`));
    // nginx workers run as an unprivileged user when the master is root: let them reach the folder.
    chmodSync(dir, 0o755);
    const port = await freePort();
    const launched = start(port, dir);
    if (await waitUntilListening(port, launched)) {
      let stopped: Promise<void> | undefined;
      return {
        name,
        port,
        pid: launched.child.pid!,
        output: launched.output,
        stop: () =>
          (stopped ??= stopProcess(launched).finally(() => rmSync(dir, { recursive: true, force: true }))),
      };
    }
    lastOutput = launched.output();
    await stopProcess(launched);
    rmSync(dir, { recursive: true, force: true });
  }
  throw new Error(`${name} did not start listening after ${attempts} attempts:\n${lastOutput}`);
}

/** Caddy with examples/caddy/Caddyfile (or another file), ports from its {$…} environment placeholders. */
export function startCaddy(targets: GatewayTargets, caddyfile = CADDYFILE): Promise<Gateway> {
  return startOnFreePort("caddy", (port, dir) =>
    launch(
      "caddy",
      ["run", "--config", caddyfile, "--adapter", "caddyfile"],
      {
        PATH: process.env.PATH,
        HOME: dir,
        XDG_DATA_HOME: join(dir, "data"),
        XDG_CONFIG_HOME: join(dir, "config"),
        LISTEN_PORT: String(port),
        AUTH_PORT: String(targets.authPort),
        BACKEND_PORT: String(targets.backendPort),
        BIND: "127.0.0.1",
      },
      () => "",
    ),
  );
}

/** Fills the __NAME__ placeholders of examples/nginx/nginx.conf; throws if one is left. */
export function renderNginxConf(ports: { listenPort: number; authPort: number; backendPort: number }): string {
  const text = readFileSync(NGINX_CONF, "utf8")
    .replaceAll("__LISTEN_PORT__", String(ports.listenPort))
    .replaceAll("__AUTH_PORT__", String(ports.authPort))
    .replaceAll("__BACKEND_PORT__", String(ports.backendPort));
  const left = /__[A-Z_]+__/.exec(text);
  if (left) throw new Error(`nginx.conf: placeholder ${left[0]} not filled`);
  return text;
}

/** nginx with examples/nginx/nginx.conf, its pid, logs and temp folders in a private prefix. */
export function startNginx(targets: GatewayTargets): Promise<Gateway> {
  return startOnFreePort("nginx", (port, dir) => {
    const conf = join(dir, "nginx.conf");
    writeFileSync(conf, renderNginxConf({ listenPort: port, ...targets }));
    const readLog = (file: string) => {
      try {
        return `\n--- ${file}\n` + readFileSync(join(dir, file), "utf8");
      } catch {
        return "";
      }
    };
    return launch(
      "nginx",
      ["-p", dir, "-c", conf, "-e", join(dir, "startup-error.log"), "-g", "daemon off;"],
      { PATH: process.env.PATH },
      () => readLog("startup-error.log") + readLog("error.log"),
    );
  });
}
