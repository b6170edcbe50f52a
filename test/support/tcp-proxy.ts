/**
 * A small TCP proxy for tests: listens on 127.0.0.1, port 0, and pipes each accepted connection
 * to an upstream (a unix socket path, e.g. the test PDP's grpc.sock, or a TCP port). It counts
 * the connections it accepted — how a test sees how many distinct HTTP/2 connections a gRPC pool
 * really opens — and can hold traffic: while held, bytes from clients are buffered instead of
 * forwarded (the PDP sees nothing, every call waits), and release() forwards them in order.
 *
 *   const proxy = await startTcpProxy(pdp.grpcTarget.slice("unix:".length));
 *   createPool({ target: proxy.target, ... });
 *   proxy.hold(); …; proxy.release();
 *   afterAll(() => proxy.close());
 */
import { connect, createServer, type Socket } from "node:net";

export interface TcpProxy {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** `127.0.0.1:PORT`: a gRPC target for the pool. */
  readonly target: string;
  /** Connections accepted since start. */
  accepted(): number;
  /** Connections currently open. */
  open(): number;
  /** From now on, buffer client → upstream bytes instead of forwarding them. */
  hold(): void;
  /** Forward everything buffered (in order) and pass traffic through again. */
  release(): void;
  /** Stops listening and destroys every connection. */
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  readonly held: Buffer[];
}

/** `upstream`: a unix socket path, or a TCP port on 127.0.0.1. */
export async function startTcpProxy(upstream: string | number): Promise<TcpProxy> {
  let accepted = 0;
  let holding = false;
  const pairs = new Set<Pair>();

  const server = createServer((client) => {
    accepted++;
    const up = typeof upstream === "number" ? connect(upstream, "127.0.0.1") : connect({ path: upstream });
    const pair: Pair = { client, upstream: up, held: [] };
    pairs.add(pair);
    client.on("data", (chunk) => {
      if (holding) pair.held.push(chunk);
      else up.write(chunk);
    });
    up.on("data", (chunk) => client.write(chunk));
    // TESTING.md: destroy(), never resetAndDestroy() on a socket whose peer may be gone.
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      up.destroy();
    };
    client.on("close", end);
    up.on("close", end);
    client.on("error", () => {});
    up.on("error", () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;

  return {
    port,
    target: `127.0.0.1:${port}`,
    accepted: () => accepted,
    open: () => pairs.size,
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      for (const pair of pairs) {
        for (const chunk of pair.held.splice(0)) pair.upstream.write(chunk);
      }
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      await closed;
    },
  };
}
