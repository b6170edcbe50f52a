/**
 * A JWKS endpoint on a loopback port in the test process, counting the requests it receives.
 *
 *   const jwks = await startJwksServer({ keys: [publicJwk] });
 *   jwks.url; jwks.requests;            // GET count so far
 *   jwks.mode = "error";                // answer 500 | "hang": never answer | "ok"
 *   jwks.setKeys([a, b]);               // rotation
 *   await jwks.stop(); await jwks.start();   // connection refused, then back on the same port
 *
 * With `tls: { key, cert }` it serves https. GET /redirect answers 302 to the key set's path.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { JSONWebKeySet, JWK } from "jose";

export type JwksMode = "ok" | "error" | "hang";

export interface JwksServer {
  readonly url: string;
  readonly port: number;
  /** Requests received (every path, every mode). */
  readonly requests: number;
  mode: JwksMode;
  /** Served body: the key set, or any raw text via setBody. */
  setKeys(keys: JWK[]): void;
  setBody(body: string): void;
  /** Resolves once `requests` reached n. */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  /** Stops listening and drops open connections: clients get connection refused. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startJwksServer(jwks: JSONWebKeySet, opts: { tls?: { key: string; cert: string }; path?: string } = {}): Promise<JwksServer> {
  let body = JSON.stringify(jwks);
  let requests = 0;
  let mode: JwksMode = "ok";
  const waiters: Array<{ n: number; wake: () => void }> = [];
  const sockets = new Set<Socket>();
  const hanging = new Set<ServerResponse>();
  const path = opts.path ?? "/.well-known/jwks.json";

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    requests++;
    for (const w of waiters.filter((w) => requests >= w.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.wake();
    }
    if (mode === "hang") {
      hanging.add(res);
      return;
    }
    if (mode === "ok" && req.url === "/redirect") {
      res.writeHead(302, { location: path }).end();
      return;
    }
    if (mode === "error" || req.url !== path) {
      res.writeHead(mode === "error" ? 500 : 404, { "content-type": "text/plain" }).end("no");
      return;
    }
    res.writeHead(200, { "content-type": "application/jwk-set+json" }).end(body);
  };
  const server: Server = opts.tls ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) : createHttpServer(handler);
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
  await listen(0);
  const port = (server.address() as AddressInfo).port;
  let listening = true;

  const stop = async () => {
    if (!listening) return;
    listening = false;
    for (const res of hanging) res.destroy();
    hanging.clear();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };

  return {
    url: `${opts.tls ? "https" : "http"}://127.0.0.1:${port}${path}`,
    port,
    get requests() {
      return requests;
    },
    get mode() {
      return mode;
    },
    set mode(m: JwksMode) {
      mode = m;
      if (m !== "hang") {
        for (const res of hanging) res.destroy();
        hanging.clear();
      }
    },
    setKeys(keys) {
      body = JSON.stringify({ keys });
    },
    setBody(text) {
      body = text;
    },
    waitForRequests(n, timeoutMs = 10_000) {
      if (requests >= n) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`JWKS server: ${requests} requests, waited for ${n}`)), timeoutMs);
        waiters.push({
          n,
          wake: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
    stop,
    async start() {
      if (listening) return;
      await listen(port);
      listening = true;
    },
    close: stop,
  };
}

// ── token helpers for tests ───────────────────────────────────────────────────────────────

/** base64url of a string, a JSON value or bytes. */
export function b64url(value: unknown): string {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64url");
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value), "utf8").toString("base64url");
}

/** A compact token from raw parts: header and payload JSON-encoded (strings taken as they are). */
export function compact(header: unknown, payload: unknown, signature = "c2ln"): string {
  return `${b64url(header)}.${b64url(payload)}.${signature}`;
}

/** Polls `fn` until truthy (no dependency on the service harness, so unit tests stay light). */
export async function waitUntil(fn: () => unknown, opts: { timeoutMs?: number; what?: string } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? "condition"}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
