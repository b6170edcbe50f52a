/**
 * A TCP fault proxy for tests (issue 8): listens on 127.0.0.1, port 0, and pipes each accepted
 * connection to an upstream unix socket (the test PDP's grpc.sock) or a TCP port. Faults are
 * switched at runtime:
 *
 *   pass        bytes flow both ways;
 *   delay(ms)   bytes from the PDP reach the service `ms` later (order kept): a slow PDP;
 *   blackhole   nothing is delivered either way and new connections are accepted but not connected
 *               upstream: a network partition. Healing (any other mode) delivers what was held, in
 *               order, like TCP retransmission after the partition;
 *   dead        like blackhole, but the connections open when it starts stay silent for ever,
 *               even after healing (the peer lost their state and sends no reset); connections
 *               opened later behave as in blackhole;
 *   reset       open connections and every new one are reset (RST);
 *   refuse      open connections are closed and the port refuses new connections (ECONNREFUSED);
 *               the proxy listens again on the same port when it leaves this mode.
 *
 *   const proxy = await startFaultProxy(pdp.grpcTarget.slice("unix:".length));
 *   await proxy.setMode({ kind: "delay", ms: 400 });
 *   proxy.accepted(); proxy.open();
 *   proxy.closeGracefully();   // FIN on every open connection, in both directions
 *   afterAll(() => proxy.stop());
 *
 * TESTING.md: resetAndDestroy() only on a socket whose peer is still there; destroy() otherwise
 * (Node 20 can spin at 100 % CPU after resetAndDestroy() on a socket whose peer just closed).
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export type FaultMode =
  | { kind: "pass" }
  | { kind: "delay"; ms: number }
  | { kind: "blackhole" }
  | { kind: "dead" }
  | { kind: "reset" }
  | { kind: "refuse" };

export interface FaultProxy {
  readonly port: number;
  /** `127.0.0.1:PORT`, a gRPC target for the service. */
  readonly target: string;
  mode(): FaultMode;
  /** Switches the fault; resolves once it is in force (refuse: the port is closed; back from refuse: listening again). */
  setMode(mode: FaultMode): Promise<void>;
  /** Connections accepted since start (also those reset at once). */
  accepted(): number;
  /** Connections currently open. */
  open(): number;
  /** Chunks delivered to the upstream since start. */
  chunksUp(): number;
  /** Ends every open connection gracefully (FIN both ways), e.g. to recycle the service's connections. */
  closeGracefully(): void;
  /** Stops listening and destroys every connection. Idempotent. */
  stop(): Promise<void>;
}

/** Bytes of one direction, delivered in order, each no earlier than its due time. */
class Lane {
  readonly #queue: Array<{ at: number; chunk: Buffer }> = [];
  #timer: NodeJS.Timeout | undefined;
  #lastAt = 0;
  /** Held until release() (blackhole). */
  #held = false;
  #dead = false;

  constructor(
    private readonly write: (chunk: Buffer) => void,
    private readonly onDeliver: () => void = () => {},
  ) {}

  push(chunk: Buffer, delayMs: number): void {
    if (this.#dead) return;
    const at = Math.max(Date.now() + delayMs, this.#lastAt);
    this.#lastAt = at;
    this.#queue.push({ at, chunk });
    this.#pump();
  }

  hold(): void {
    this.#held = true;
  }

  release(): void {
    this.#held = false;
    this.#pump();
  }

  /** Drops what is queued and everything from now on. */
  kill(): void {
    this.#dead = true;
    this.#queue.length = 0;
    this.stop();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #pump(): void {
    if (this.#held || this.#dead || this.#timer) return;
    while (this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const wait = head.at - Date.now();
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, wait);
        return;
      }
      this.#queue.shift();
      this.write(head.chunk);
      this.onDeliver();
    }
  }
}

interface Pair {
  readonly client: Socket;
  upstream: Socket | undefined;
  readonly toUpstream: Lane;
  readonly toClient: Lane;
  /** Opened during a blackhole: connects upstream on healing. */
  pendingConnect: boolean;
  /** Silent for ever (dead mode). */
  dead: boolean;
}

/** `upstream`: a unix socket path, or a TCP port on 127.0.0.1. */
export async function startFaultProxy(upstream: string | number): Promise<FaultProxy> {
  let mode: FaultMode = { kind: "pass" };
  let accepted = 0;
  let chunksUp = 0;
  let stopped = false;
  const pairs = new Set<Pair>();

  const delayOf = () => (mode.kind === "delay" ? mode.ms : 0);
  const silent = () => mode.kind === "blackhole" || mode.kind === "dead";

  function reset(socket: Socket): void {
    // Only while the peer is still there (see the file comment).
    if (!socket.destroyed && !socket.readableEnded && typeof socket.resetAndDestroy === "function") socket.resetAndDestroy();
    else socket.destroy();
  }

  function connectUpstream(pair: Pair): void {
    pair.pendingConnect = false;
    const up = typeof upstream === "number" ? connect(upstream, "127.0.0.1") : connect({ path: upstream });
    pair.upstream = up;
    up.on("data", (chunk: Buffer) => pair.toClient.push(chunk, delayOf()));
    up.on("error", () => {});
    up.on("close", () => end(pair));
    if (silent()) {
      pair.toClient.hold();
      pair.toUpstream.hold();
    }
  }

  function end(pair: Pair): void {
    if (!pairs.delete(pair)) return;
    pair.toClient.stop();
    pair.toUpstream.stop();
    pair.client.destroy();
    pair.upstream?.destroy();
  }

  const onConnection = (client: Socket) => {
    accepted++;
    client.on("error", () => {});
    if (mode.kind === "reset") {
      reset(client);
      return;
    }
    const pair: Pair = {
      client,
      upstream: undefined,
      toUpstream: new Lane(
        (c) => pair.upstream?.write(c),
        () => chunksUp++,
      ),
      toClient: new Lane((c) => {
        if (!client.destroyed) client.write(c);
      }),
      pendingConnect: false,
      dead: false,
    };
    pairs.add(pair);
    client.on("data", (chunk: Buffer) => pair.toUpstream.push(chunk, 0));
    client.on("close", () => end(pair));
    if (silent()) {
      pair.toUpstream.hold();
      pair.toClient.hold();
      pair.pendingConnect = true; // connected (and its bytes delivered) on healing
      return;
    }
    connectUpstream(pair);
  };

  let server: Server = createServer(onConnection);
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
  const closeServer = () => new Promise<void>((resolve) => server.close(() => resolve()));
  await listen(0);
  const port = (server.address() as { port: number }).port;
  let listening = true;

  return {
    port,
    target: `127.0.0.1:${port}`,
    mode: () => mode,
    async setMode(next) {
      if (stopped) throw new Error("fault proxy stopped");
      const previous = mode;
      mode = next;
      switch (next.kind) {
        case "blackhole":
          for (const p of pairs) {
            p.toUpstream.hold();
            p.toClient.hold();
          }
          break;
        case "dead":
          for (const p of pairs) {
            p.dead = true;
            p.toUpstream.kill();
            p.toClient.kill();
          }
          break;
        case "reset":
          for (const p of [...pairs]) {
            pairs.delete(p);
            p.toClient.stop();
            p.toUpstream.stop();
            reset(p.client);
            p.upstream?.destroy();
          }
          break;
        case "refuse":
          if (listening) {
            listening = false;
            const closed = closeServer();
            for (const p of [...pairs]) end(p);
            await closed;
          }
          break;
        case "pass":
        case "delay":
          if (previous.kind === "blackhole" || previous.kind === "dead") {
            for (const p of pairs) {
              if (p.dead) continue;
              if (p.pendingConnect) connectUpstream(p);
              p.toUpstream.release();
              p.toClient.release();
            }
          }
          break;
      }
      if (next.kind !== "refuse" && !listening) {
        server = createServer(onConnection);
        await listen(port); // EADDRINUSE if someone took the port meanwhile: the test fails loudly
        listening = true;
      }
    },
    accepted: () => accepted,
    open: () => pairs.size,
    chunksUp: () => chunksUp,
    closeGracefully() {
      for (const p of pairs) {
        p.client.end();
        p.upstream?.end();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = listening ? closeServer() : Promise.resolve();
      listening = false;
      for (const p of [...pairs]) end(p);
      await closed;
    },
  };
}
