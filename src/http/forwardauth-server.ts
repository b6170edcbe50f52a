/**
 * The ForwardAuth listener: any method, any path (SPEC §5.1). Headers are copied out of the
 * uWS request synchronously (it is invalid after the handler returns); the body is never read.
 */
import { randomBytes } from "node:crypto";
import type { Decide } from "../decision/decide.js";
import { writeUnavailable, writeVerdict } from "./responses.js";
import { listen, loadUws, type us_listen_socket } from "./uws.js";

export interface ForwardAuthServer {
  readonly port: number;
  /** Requests received and not yet answered. */
  inFlight(): number;
  /** Stops accepting connections; requests on kept-alive connections get 503 + Connection: close. */
  stopAccepting(): void;
  /** Resolves when no request is in flight (after stopAccepting). */
  drained(): Promise<void>;
  /** Closes the listener. */
  close(): void;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/**
 * Generated request ids: a random prefix per process and a counter — unique, and far cheaper
 * per request than a random UUID (ids need not be secret: they only tie log lines together).
 */
function requestIds(): () => string {
  const prefix = randomBytes(9).toString("base64url");
  let n = 0;
  return () => `${prefix}.${(n++).toString(36)}`;
}

export async function startForwardAuthServer(opts: { listen: string; decide: Decide }): Promise<ForwardAuthServer> {
  const uws = loadUws();
  const app = uws.App();
  let inFlight = 0;
  let draining = false;
  let onDrained: (() => void) | undefined;
  let socket: us_listen_socket | undefined;
  const nextRequestId = requestIds();

  const settle = () => {
    inFlight--;
    if (draining && inFlight === 0) onDrained?.();
  };

  app.any("/*", (res, req) => {
    const started = performance.now();
    const headers: Array<readonly [string, string]> = [];
    let incomingId: string | undefined;
    let idCount = 0;
    req.forEach((name, value) => {
      headers.push([name, value]);
      if (name === "x-request-id") {
        incomingId = value;
        idCount++;
      }
    });
    const requestId = idCount === 1 && REQUEST_ID.test(incomingId!) ? incomingId! : nextRequestId();
    if (draining) {
      writeUnavailable(res, requestId, true);
      return;
    }
    const decided = opts.decide(headers, requestId, started);
    if (!(decided instanceof Promise)) {
      // Answered synchronously (cache hit or early refusal): still corked, no abort handler needed.
      writeVerdict(res, decided, requestId);
      return;
    }
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    inFlight++;
    decided.then(
      (verdict) => {
        if (!aborted) res.cork(() => writeVerdict(res, verdict, requestId, draining));
        settle();
      },
      () => {
        // decide() never rejects; if it ever does, fail closed.
        if (!aborted) res.cork(() => writeUnavailable(res, requestId, draining));
        settle();
      },
    );
  });

  const bound = await listen(app, opts.listen);
  socket = bound.socket;

  return {
    port: bound.port,
    inFlight: () => inFlight,
    stopAccepting() {
      draining = true;
      if (socket) uws.us_listen_socket_close(socket);
      socket = undefined;
    },
    drained() {
      if (inFlight === 0) return Promise.resolve();
      return new Promise((resolve) => {
        const previous = onDrained;
        onDrained = () => {
          previous?.();
          resolve();
        };
      });
    },
    close() {
      draining = true;
      if (socket) uws.us_listen_socket_close(socket);
      socket = undefined;
    },
  };
}
