/**
 * Misbehaving gRPC servers for tests of src/pdp/grpc-channel.ts: a real HTTP/2 server (node:http2)
 * on a free loopback port or a unix socket in a temp dir, whose every stream is handed to the
 * test to answer (or not) as it likes, and a plain TCP server that is not HTTP/2 at all. They
 * fake faults on the wire only: no PDP decision is ever faked with them.
 *
 *   const server = await startFakeGrpcServer((call) => reply(call.stream, grpcFrame(Buffer.from("hi"))));
 *   const channel = new GrpcChannel({ target: parseTarget(server.target), userAgent: "test" });
 *   server.accepted(); server.calls[0].headers; await server.calls[0].request;
 *   afterEach(() => server.close());
 */
import { mkdtempSync, rmSync } from "node:fs";
import {
  createServer as createH2Server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from "node:http2";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** One stream the fake server received. */
export interface ServerCall {
  /** 1-based, in order of arrival over the server's life. */
  readonly n: number;
  readonly stream: ServerHttp2Stream;
  readonly session: ServerHttp2Session;
  readonly headers: IncomingHttpHeaders;
  /** The request body, once the client ended its side. */
  readonly request: Promise<Buffer>;
  /** Whether the stream has closed, and with which RST_STREAM code (0: ended cleanly). */
  closed: boolean;
  rstCode: number | undefined;
}

export type CallHandler = (call: ServerCall) => void;

export interface FakeGrpcServer {
  /** `127.0.0.1:PORT`, or `unix:/path` when started on a unix socket. */
  readonly target: string;
  /** The socket path when on a unix socket. */
  readonly path: string | undefined;
  /** Every stream received, in order. */
  readonly calls: readonly ServerCall[];
  /** Streams received on this `:path`. */
  callsTo(path: string): ServerCall[];
  /** Connections accepted since start. */
  accepted(): number;
  /** Destroys every session and stops listening. Idempotent. */
  close(): Promise<void>;
}

/** A gRPC length-prefixed message; `compressed` sets the flag byte, `declaredLength` lies about the length. */
export function grpcFrame(message: Buffer, opts: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame[0] = opts.compressed ? 1 : 0;
  frame.writeUInt32BE(opts.declaredLength ?? message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** Answers a stream as a gRPC server does: headers, `body`, then `trailers` (grpc-status 0 unless given). */
export function reply(
  stream: ServerHttp2Stream,
  body: Buffer,
  trailers: OutgoingHttpHeaders = { "grpc-status": "0" },
  headers: OutgoingHttpHeaders = { ":status": 200, "content-type": "application/grpc" },
): void {
  stream.respond(headers, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers(trailers));
  stream.end(body);
}

export async function startFakeGrpcServer(handler: CallHandler, opts: { unix?: boolean } = {}): Promise<FakeGrpcServer> {
  const calls: ServerCall[] = [];
  const sessions = new Set<ServerHttp2Session>();
  let accepted = 0;
  const server = createH2Server();
  server.on("connection", () => accepted++);
  server.on("session", (session) => {
    sessions.add(session);
    session.on("error", () => {});
    session.once("close", () => sessions.delete(session));
  });
  server.on("sessionError", () => {});
  server.on("stream", (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {}); // a client that cancels: the outcome is read from rstCode
    const call: ServerCall = {
      n: calls.length + 1,
      stream,
      session: stream.session as ServerHttp2Session,
      headers,
      request: new Promise<Buffer>((resolve) => stream.once("end", () => resolve(Buffer.concat(chunks)))),
      closed: false,
      rstCode: undefined,
    };
    stream.once("close", () => {
      call.closed = true;
      call.rstCode = stream.rstCode;
    });
    calls.push(call);
    handler(call);
  });

  const dir = opts.unix ? mkdtempSync(join(tmpdir(), "cfa-h2-")) : undefined;
  const path = dir ? join(dir, "grpc.sock") : undefined;
  await listen(server, path);
  const target = path ? `unix:${path}` : `127.0.0.1:${(server.address() as { port: number }).port}`;

  return {
    target,
    path,
    calls,
    callsTo: (p) => calls.filter((c) => c.headers[":path"] === p),
    accepted: () => accepted,
    close: closer(server, sessions, () => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }),
  };
}

/**
 * A TCP server that is not HTTP/2: it answers every connection with an HTTP/1.1 error
 * ("garbage"), closes it at once ("close"), or accepts it and never says a word ("silent").
 */
export interface NotHttp2Server {
  readonly target: string;
  /** Connections accepted since start. */
  accepted(): number;
  /** performance.now() of each accepted connection. */
  acceptedAt(): readonly number[];
  close(): Promise<void>;
}

export async function startNotHttp2Server(mode: "garbage" | "close" | "silent"): Promise<NotHttp2Server> {
  const times: number[] = [];
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    times.push(performance.now());
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => sockets.delete(socket));
    socket.on("data", () => {}); // read what the client sends (its preface) and ignore it
    if (mode === "garbage") socket.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
    else if (mode === "close") socket.end();
  });
  await listen(server, undefined);
  return {
    target: `127.0.0.1:${(server.address() as { port: number }).port}`,
    accepted: () => times.length,
    acceptedAt: () => times,
    close: closer(server, sockets),
  };
}

/**
 * close() for a server, once however often it is called: stops listening, destroys what is still
 * open (TESTING.md: destroy(), never resetAndDestroy(), on a peer that may be gone), waits for
 * the server to close, then runs `after`.
 */
function closer(server: Server, open: Iterable<{ destroy(): void }>, after?: () => void): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of open) s.destroy();
      await closed;
      after?.();
    })();
    return closing;
  };
}

function listen(server: Server, path: string | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (path) server.listen(path, () => resolve());
    else server.listen(0, "127.0.0.1", () => resolve());
  });
}
