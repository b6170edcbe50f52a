/**
 * The packaged Cerbos binary: where it is, the server config we give it, and a tiny HTTP client
 * for its unix-socket HTTP listener (health, metrics).
 *
 * The binary comes from the optional dependency `@cerbos/cerbos-<platform>-<arch>` and is run
 * directly — never through the `cerbos` wrapper package, whose wrapper process orphans the
 * server when it is killed.
 */
import { accessSync, constants, existsSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { parse, stringify } from "yaml";

/** Longest unix socket path Linux accepts (sun_path is 108 bytes, NUL-terminated). */
const MAX_SOCKET_PATH_BYTES = 107;

/**
 * Absolute path of the Cerbos executable.
 *
 * `CERBOS_BINARY` (read from `env`, default `process.env`) overrides the packaged binary.
 * Otherwise the binary of `@cerbos/cerbos-${platform}-${arch}` (x64 or arm64) is used, found next
 * to that package's package.json. Throws an Error saying what to install when it is missing.
 */
export function cerbosBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  const override = env.CERBOS_BINARY;
  if (override !== undefined && override !== "") {
    const path = resolve(override);
    assertExecutable(path, `CERBOS_BINARY=${override}`);
    return path;
  }
  const arch = process.arch === "x64" || process.arch === "arm64" ? process.arch : undefined;
  if (arch === undefined) {
    throw new Error(
      `no packaged Cerbos binary exists for ${process.platform}-${process.arch}; set CERBOS_BINARY to a cerbos executable`,
    );
  }
  const name = `cerbos-${process.platform}-${arch}`;
  const pkg = `@cerbos/${name}`;
  let packageJson: string;
  try {
    packageJson = createRequire(import.meta.url).resolve(`${pkg}/package.json`);
  } catch {
    throw new Error(
      `the Cerbos binary package ${pkg} is not installed: it is an optional dependency, so install ` +
        `without --omit=optional (npm ci), or set CERBOS_BINARY to a cerbos executable`,
    );
  }
  const path = join(dirname(packageJson), name);
  assertExecutable(path, `package ${pkg}`);
  return path;
}

function assertExecutable(path: string, origin: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`the Cerbos binary ${path} (from ${origin}) is missing or not executable`);
  }
}

export interface CerbosConfigOptions {
  /** Policy directory served by the disk store. */
  policiesDir: string;
  /** `storage.disk.watchForChanges`: reload policies when files in policiesDir change. */
  watch: boolean;
  /**
   * A Cerbos config file (YAML) deep-merged over our defaults: mappings merge key by key, any
   * other value (lists included) replaces ours. `server.grpcListenAddr` and
   * `server.httpListenAddr` always stay ours: the service only talks to these sockets.
   */
  extraConfigFile?: string;
}

export interface CerbosConfigFiles {
  /** The written config (`cerbos server --config=…`). */
  configPath: string;
  /** Absolute path of the gRPC unix socket; the gRPC target is `unix:` + this. */
  grpcSocket: string;
  /** Absolute path of the HTTP unix socket (`/_cerbos/health`, `/_cerbos/metrics`). */
  httpSocket: string;
}

type Mapping = Record<string, unknown>;

function isMapping(v: unknown): v is Mapping {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepMerge(base: Mapping, over: Mapping): Mapping {
  const out: Mapping = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key];
    out[key] = isMapping(prev) && isMapping(value) ? deepMerge(prev, value) : value;
  }
  return out;
}

/**
 * Writes `cerbos.yaml` into `dir` (which should be private: mode 0700) for a server listening on
 * `unix:<dir>/grpc.sock` and `unix:<dir>/http.sock`, serving `policiesDir` from the disk store,
 * with audit logs and telemetry off. Throws when the extra config cannot be read or is not a
 * YAML mapping, or when `dir` is too long for a unix socket path.
 */
export function writeCerbosConfig(dir: string, opts: CerbosConfigOptions): CerbosConfigFiles {
  const absDir = resolve(dir);
  const grpcSocket = join(absDir, "grpc.sock");
  const httpSocket = join(absDir, "http.sock");
  for (const socket of [grpcSocket, httpSocket]) {
    if (Buffer.byteLength(socket) > MAX_SOCKET_PATH_BYTES) {
      throw new Error(`unix socket path too long (${Buffer.byteLength(socket)} > ${MAX_SOCKET_PATH_BYTES} bytes): ${socket}; use a shorter TMPDIR`);
    }
  }

  let config: Mapping = {
    server: { grpcListenAddr: `unix:${grpcSocket}`, httpListenAddr: `unix:${httpSocket}` },
    storage: { driver: "disk", disk: { directory: resolve(opts.policiesDir), watchForChanges: opts.watch } },
    audit: { enabled: false },
    telemetry: { disabled: true },
  };

  if (opts.extraConfigFile !== undefined) {
    const file = resolve(opts.extraConfigFile);
    let extra: unknown;
    try {
      extra = parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new Error(`cannot read the extra Cerbos config ${file}: ${(err as Error).message}`);
    }
    if (extra !== null && extra !== undefined) {
      if (!isMapping(extra)) throw new Error(`the extra Cerbos config ${file} must be a YAML mapping`);
      config = deepMerge(config, extra);
      const server = isMapping(config.server) ? config.server : {};
      if (server.tls !== undefined) {
        // The embedded PDP listens only on private unix sockets, and our clients speak plain text to it.
        throw new Error(`the extra Cerbos config ${file} sets server.tls, which does not apply to the embedded PDP`);
      }
      config.server = { ...server, grpcListenAddr: `unix:${grpcSocket}`, httpListenAddr: `unix:${httpSocket}` };
    }
  }

  const configPath = join(absDir, "cerbos.yaml");
  writeFileSync(configPath, stringify(config), { mode: 0o600 });
  return { configPath, grpcSocket, httpSocket };
}

/**
 * `GET path` on the Cerbos HTTP listener at the unix socket `httpSocket`. Resolves with the
 * status and body; rejects on a connection error or after `timeoutMs` (default 2000 ms).
 */
export function cerbosHttpGet(httpSocket: string, path: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ socketPath: httpSocket, path, method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
      // A response cut off by the peer (e.g. a TLS listener answering plain HTTP) may end
      // without 'end': settle anyway, or a caller awaiting this would wait on an empty loop.
      res.on("close", () => reject(new Error(`GET ${path} on ${httpSocket}: connection closed before the response ended`)));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} on ${httpSocket} timed out after ${timeoutMs} ms`)));
    req.on("error", reject);
    req.on("close", () => reject(new Error(`GET ${path} on ${httpSocket}: connection closed`)));
    req.end();
  });
}

/** True when the socket exists and `GET /_cerbos/health` answers 200 within `timeoutMs`. */
export async function cerbosHealthy(httpSocket: string, timeoutMs = 1000): Promise<boolean> {
  if (!existsSync(httpSocket)) return false;
  try {
    return (await cerbosHttpGet(httpSocket, "/_cerbos/health", timeoutMs)).status === 200;
  } catch {
    return false;
  }
}
