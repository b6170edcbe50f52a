/**
 * A small node:http backend that records every request reaching it (method, URL, headers) and
 * answers 200 with a short JSON body. Stands for the application behind the gateway.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  method: string;
  url: string;
  /** Lower-case names, as node:http gives them. */
  headers: IncomingHttpHeaders;
  /** Raw header names and values in arrival order (spelling preserved). */
  rawHeaders: string[];
}

export interface RecordingBackend {
  readonly port: number;
  /** Every request received so far, in order. */
  readonly requests: RecordedRequest[];
  /** Forgets what was recorded. */
  clear(): void;
  stop(): Promise<void>;
}

export async function startBackend(): Promise<RecordingBackend> {
  const requests: RecordedRequest[] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, rawHeaders: req.rawHeaders });
    req.resume();
    req.on("end", () => {
      const body = JSON.stringify({ backend: "ok", url: req.url });
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    clear: () => {
      requests.length = 0;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
