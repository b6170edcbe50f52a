/**
 * Loads uWebSockets.js and refuses to run on its slow JavaScript fallback: the package silently
 * falls back when no native binary matches this Node.js ABI.
 */
import { createRequire } from "node:module";
import type * as Uws from "uWebSockets.js";

/** Request header blocks up to this size are accepted (SPEC §5.1: at least 16 KiB); read by uWS at load. */
export const DEFAULT_MAX_HEADERS_SIZE = 32 * 1024;

let loaded: typeof Uws | undefined;

export function loadUws(): typeof Uws {
  if (loaded) return loaded;
  process.env.UWS_HTTP_MAX_HEADERS_SIZE ??= String(DEFAULT_MAX_HEADERS_SIZE);
  const require = createRequire(import.meta.url);
  const uws = require("uWebSockets.js") as typeof Uws;
  const native = Object.keys(require.cache).some((k) => /uws_[a-z0-9]+_[a-z0-9]+_\d+\.node$/.test(k));
  if (!native || !String(uws.App).includes("[native code]")) {
    throw new Error(
      `uWebSockets.js has no native binary for ${process.platform}-${process.arch} ABI ${process.versions.modules}; ` +
        "refusing to start on the slow JavaScript fallback",
    );
  }
  loaded = uws;
  return uws;
}

export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from "uWebSockets.js";

/** Parses "host:port" (IPv6 in brackets) for uWS.listen. */
export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  let host = listen.slice(0, i);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  return { host, port: Number(listen.slice(i + 1)) };
}

/** Listens and resolves with the socket and the port actually bound (port 0 → a free port). */
export function listen(app: Uws.TemplatedApp, listenAddr: string): Promise<{ socket: Uws.us_listen_socket; port: number }> {
  const uws = loadUws();
  const { host, port } = splitHostPort(listenAddr);
  return new Promise((resolve, reject) => {
    app.listen(host, port, (socket) => {
      if (!socket) reject(new Error(`cannot listen on ${listenAddr}`));
      else resolve({ socket, port: uws.us_socket_local_port(socket) });
    });
  });
}
