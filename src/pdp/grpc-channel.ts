/**
 * A minimal gRPC client for unary calls over node:http2 — all this service asks of gRPC — in
 * place of grpc-js, whose per-call machinery (interceptors, filters, retry buffers, resolving and
 * load-balancing call layers) cost ~150 µs of CPU per PDP call under load. One call on one stream
 * is grpc-stream.ts; this file keeps the connections:
 * - one HTTP/2 connection per address of the target (a dns:/// name may have several), calls sent
 *   round robin over those that are up; a connection is up once the server's SETTINGS arrive;
 * - a call the server never processed — refused by a GOAWAY's last stream id, or sent to a
 *   connection that was already going away — is sent again once on a fresh connection, as
 *   grpc-js's transparent retry does; anything else fails and is never repeated;
 * - reconnect with backoff: 100 ms, ×1.6 per failed attempt up to 3 s, ±20 % jitter; a connection
 *   that served at least 50 ms and is then closed by the server (GOAWAY after its max age) is
 *   replaced at once, and calls wait for the replacement rather than fail.
 * Failures reject with PdpUnavailable carrying the gRPC status name.
 */
import { lookup } from "node:dns/promises";
import { connect as http2Connect, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { isIP, connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type SecureContext } from "node:tls";
import { exchange, framed, NotProcessed, unavailable } from "./grpc-stream.js";

/** Where to connect: resolved once per (re)connection of a channel. */
export type Target = { readonly kind: "unix"; readonly path: string } | { readonly kind: "host"; readonly host: string; readonly port: number };

export interface ChannelOptions {
  readonly target: Target;
  /** TLS: the secure context and the name to verify (and send as SNI / :authority). */
  readonly tls?: { readonly context?: SecureContext; readonly serverName?: string };
  readonly userAgent: string;
}

const BACKOFF_INITIAL_MS = 100;
const BACKOFF_MAX_MS = 3_000;
const BACKOFF_MULTIPLIER = 1.6;
const BACKOFF_JITTER = 0.2;
/** A connection attempt without the server's SETTINGS by then is dropped and tried again. */
const CONNECT_TIMEOUT_MS = 5_000;
/** Addresses are looked up again after a failed connection attempt, at most this often. */
const RESOLVE_INTERVAL_MS = 1_000;
/**
 * A connection that served at least this long and is then closed by the server (a GOAWAY after
 * its max age) is replaced at once; one closed sooner counts as a failed attempt and backs off,
 * so a server that sends GOAWAY to every new connection cannot draw a reconnect storm.
 */
const MIN_SERVING_MS = 50;

/** Parses `pdp.address`: host:port, dns:///host:port (or dns:host:port), unix:/path (or unix:///path). */
export function parseTarget(address: string): Target {
  if (address.startsWith("unix:")) {
    const rest = address.slice("unix:".length);
    return { kind: "unix", path: rest.startsWith("//") ? rest.slice(2) : rest };
  }
  let hostPort = address;
  if (address.startsWith("dns:")) {
    hostPort = address.slice("dns:".length);
    if (hostPort.startsWith("//")) hostPort = hostPort.slice(hostPort.indexOf("/", 2) + 1); // dns://[authority]/host:port
  }
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort);
  if (bracketed) return { kind: "host", host: bracketed[1]!, port: Number(bracketed[2] ?? 443) };
  const colon = hostPort.lastIndexOf(":");
  if (colon === -1 || isIP(hostPort) === 6) return { kind: "host", host: hostPort, port: 443 };
  return { kind: "host", host: hostPort.slice(0, colon), port: Number(hostPort.slice(colon + 1)) };
}

/** One HTTP/2 connection to one address, reconnecting with backoff. */
class Connection {
  #session: ClientHttp2Session | undefined;
  /** When the server's SETTINGS arrived on the current session; undefined until then. */
  #readyAt: number | undefined;
  #backoffMs = BACKOFF_INITIAL_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  /** The retry timer replaces a connection that served (calls wait for it rather than fail). */
  #replacing = false;
  #closed = false;
  #waiters: Array<() => void> = [];

  constructor(
    readonly address: string,
    private readonly open: () => Socket,
    private readonly authority: string,
    /** Called when an attempt to connect failed (the channel may look its addresses up again). */
    private readonly onFailure: () => void,
  ) {
    this.#connect();
  }

  /** A session that accepts new streams, or undefined. */
  get session(): ClientHttp2Session | undefined {
    const s = this.#session;
    return this.#readyAt !== undefined && s !== undefined && !s.closed && !s.destroyed ? s : undefined;
  }

  /** Whether a connection attempt is under way (a call may wait for it). */
  get connecting(): boolean {
    return (this.#session !== undefined && this.#readyAt === undefined) || this.#replacing;
  }

  /** Resolves when this connection becomes ready or its attempt fails. */
  settled(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Stops reconnecting; `graceful`: calls under way finish first (their deadlines bound the wait). */
  close(graceful = false): void {
    this.#closed = true;
    this.#replacing = false;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    if (graceful) this.#session?.close();
    else this.#session?.destroy();
    this.#session = undefined;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #connect(): void {
    this.#retryTimer = undefined;
    this.#replacing = false;
    if (this.#closed) return;
    const session = http2Connect(this.authority, { createConnection: this.open });
    this.#session = session;
    this.#readyAt = undefined;
    // Ready once the server's SETTINGS arrive: a socket that connects to something that is not
    // an HTTP/2 server (plain text to a TLS port, a black hole) never becomes ready, and backs off.
    session.once("remoteSettings", () => {
      if (this.#session !== session) return;
      clearTimeout(connectTimer);
      this.#readyAt = performance.now();
      this.#wake();
    });
    const connectTimer = setTimeout(() => session.destroy(), CONNECT_TIMEOUT_MS);
    connectTimer.unref();
    session.once("close", () => clearTimeout(connectTimer));
    // Errors end in 'close'; without a listener an error event would throw.
    session.on("error", () => {});
    // No new streams after a GOAWAY (the streams it let through still finish on this session).
    session.once("goaway", () => this.#lost(session));
    session.once("close", () => this.#lost(session));
  }

  #lost(session: ClientHttp2Session): void {
    if (this.#session !== session) return;
    const readyAt = this.#readyAt;
    this.#session = undefined;
    this.#readyAt = undefined;
    if (!session.closed && !session.destroyed) session.close(); // after a GOAWAY: let its open streams finish
    this.#wake();
    if (this.#closed) return;
    if (readyAt !== undefined && performance.now() - readyAt >= MIN_SERVING_MS) {
      this.#backoffMs = BACKOFF_INITIAL_MS;
      this.#connect();
      return;
    }
    this.#replacing = readyAt !== undefined;
    if (!this.#replacing) this.onFailure();
    const jitter = 1 + BACKOFF_JITTER * (2 * Math.random() - 1);
    this.#retryTimer = setTimeout(() => this.#connect(), this.#backoffMs * jitter);
    this.#retryTimer.unref();
    this.#backoffMs = Math.min(this.#backoffMs * BACKOFF_MULTIPLIER, BACKOFF_MAX_MS);
  }
}

export class GrpcChannel {
  #connections: Connection[] = [];
  #next = 0;
  #resolving: Promise<void> | undefined;
  #resolvedAt = 0;
  #closed = false;

  constructor(private readonly opts: ChannelOptions) {
    void this.#resolve();
  }

  /**
   * One unary call: `request` is the encoded message; the response message is passed to
   * `decode`. Rejects with PdpUnavailable (DEADLINE_EXCEEDED past `timeoutMs`, INTERNAL when
   * `decode` throws, the server's status otherwise).
   */
  async call<T>(method: string, request: Buffer, decode: (b: Buffer) => T, timeoutMs: number): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    const frame = framed(request);
    let message: Buffer;
    try {
      message = await this.#send(method, frame, deadline);
    } catch (error) {
      if (!(error instanceof NotProcessed)) throw error;
      // Never reached the server: once more, on whatever connection is ready now.
      try {
        message = await this.#send(method, frame, deadline);
      } catch (again) {
        // Refused again: fail as any call does, with a PdpUnavailable (never the internal NotProcessed).
        throw again instanceof NotProcessed ? unavailable("UNAVAILABLE", "refused twice, never processed") : again;
      }
    }
    try {
      return decode(message);
    } catch (error) {
      throw unavailable("INTERNAL", `response not decodable: ${(error as Error).message}`);
    }
  }

  close(): void {
    this.#closed = true;
    for (const c of this.#connections) c.close();
    this.#connections = [];
  }

  /**
   * Looks the target's addresses up and reconciles the connections with them: a connection to an
   * address still listed is kept, one to an address gone is closed, a new address gets one.
   */
  #resolve(): Promise<void> {
    this.#resolving ??= (async () => {
      const { target } = this.opts;
      this.#resolvedAt = performance.now();
      const addresses =
        target.kind === "unix"
          ? [target.path]
          : isIP(target.host)
            ? [target.host]
            : (await lookup(target.host, { all: true, verbatim: true }).catch(() => [])).map((a) => a.address);
      if (this.#closed) return;
      const kept = new Map(this.#connections.map((c) => [c.address, c]));
      this.#connections = addresses.map((address) => {
        const existing = kept.get(address);
        kept.delete(address);
        return existing ?? new Connection(address, () => this.#socketTo(address), this.#authority(), () => this.#connectFailed());
      });
      for (const gone of kept.values()) gone.close(true);
    })().finally(() => {
      this.#resolving = undefined;
    });
    return this.#resolving;
  }

  /** A PDP fleet behind one name changes: after a failed attempt, look again (rate-limited). */
  #connectFailed(): void {
    if (this.opts.target.kind === "host" && !isIP(this.opts.target.host) && performance.now() - this.#resolvedAt >= RESOLVE_INTERVAL_MS) {
      void this.#resolve();
    }
  }

  #socketTo(address: string): Socket {
    const { target, tls } = this.opts;
    if (!tls) return target.kind === "unix" ? netConnect(address) : netConnect({ host: address, port: target.port });
    const name = tls.serverName ?? (target.kind === "host" ? target.host : "localhost");
    return tlsConnect({
      ...(target.kind === "unix" ? { path: address } : { host: address, port: target.port }),
      ALPNProtocols: ["h2"],
      ...(tls.context ? { secureContext: tls.context } : {}),
      // SNI takes names only; the certificate is checked against the name or the address.
      ...(isIP(name) ? {} : { servername: name }),
    });
  }

  #authority(): string {
    const { target, tls } = this.opts;
    const scheme = tls ? "https" : "http";
    if (tls?.serverName) return `${scheme}://${tls.serverName}`;
    if (target.kind === "unix") return `${scheme}://localhost`;
    const host = isIP(target.host) === 6 ? `[${target.host}]` : target.host;
    return `${scheme}://${host}:${target.port}`;
  }

  /** The next ready session (round robin), waiting for a connection attempt under way until `deadline`. */
  async #session(deadline: number): Promise<ClientHttp2Session> {
    for (;;) {
      if (this.#closed) throw unavailable("UNAVAILABLE", "channel closed");
      const connections = this.#connections;
      for (let k = 0; k < connections.length; k++) {
        const c = connections[(this.#next + k) % connections.length]!;
        const session = c.session;
        if (session) {
          this.#next = (this.#next + k + 1) % connections.length;
          return session;
        }
      }
      if (this.#resolving) {
        await this.#resolving;
        continue;
      }
      if (connections.length === 0) {
        // The name did not resolve: look again, but not for every call.
        if (performance.now() - this.#resolvedAt >= RESOLVE_INTERVAL_MS) void this.#resolve();
        throw unavailable("UNAVAILABLE", "no address");
      }
      const attempts = connections.filter((c) => c.connecting);
      // Every connection is waiting out its backoff: fail now (grpc-js's TRANSIENT_FAILURE).
      if (attempts.length === 0) throw unavailable("UNAVAILABLE", "not connected");
      const left = deadline - performance.now();
      if (left <= 0) throw unavailable("DEADLINE_EXCEEDED", "");
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), left);
      });
      const expired = await Promise.race([timedOut, Promise.race(attempts.map((c) => c.settled())).then(() => false)]);
      clearTimeout(timer);
      if (expired) throw unavailable("DEADLINE_EXCEEDED", "");
    }
  }

  async #send(method: string, frame: Buffer, deadline: number): Promise<Buffer> {
    const session = await this.#session(deadline);
    const left = Math.max(1, Math.ceil(deadline - performance.now()));
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(
        {
          ":method": "POST",
          ":path": method,
          "content-type": "application/grpc",
          te: "trailers",
          "grpc-timeout": `${left}m`,
          "user-agent": this.opts.userAgent,
        },
        { endStream: false },
      );
    } catch {
      // The session started going away between the pick and the request.
      throw new NotProcessed();
    }
    return exchange(stream, frame, left);
  }
}
