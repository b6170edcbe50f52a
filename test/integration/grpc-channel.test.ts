/**
 * The gRPC channel's own rules (src/pdp/grpc-channel.ts), which only a misbehaving server can
 * show: a fake HTTP/2 server on the wire (test/support/fake-grpc-server.ts) answers each stream
 * as the test says — odd statuses, broken framing, refused streams, GOAWAY, silence — and a plain
 * TCP server plays a peer that is not HTTP/2 at all. No PDP decision is faked here: the real PDP's
 * behaviour (GOAWAY recycling, deadlines, resets, TLS, dns:///) is covered by pool.test.ts,
 * faults.test.ts, pdp-outage.test.ts, pdp-tls.test.ts and dns-target.test.ts.
 */
import { constants, createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { PdpUnavailable } from "../../src/errors.js";
import { GrpcChannel, parseTarget } from "../../src/pdp/grpc-channel.js";
import {
  grpcFrame,
  reply,
  startFakeGrpcServer,
  startNotHttp2Server,
  type CallHandler,
  type FakeGrpcServer,
  type NotHttp2Server,
} from "../support/fake-grpc-server.js";
import { waitFor } from "../support/service.js";

/** Answers "echo:" + the request message. */
const ECHO = "/test.Fake/Echo";
/** Never answered. */
const HANG = "/test.Fake/Hang";
const MiB = 1024 * 1024;
/** Slack for a noisy machine: an upper bound only, never a speed threshold. */
const SLACK_MS = 1000;

const text = (b: Buffer) => b.toString("utf8");

function echo(call: Parameters<CallHandler>[0]): void {
  void call.request.then((req) => reply(call.stream, grpcFrame(Buffer.concat([Buffer.from("echo:"), req.subarray(5)]))));
}

/** The rejection of `p`, which must be a PdpUnavailable. */
async function failure(p: Promise<unknown>): Promise<PdpUnavailable> {
  const outcome = await p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  if (outcome.ok) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.value)}`);
  expect(outcome.error).toBeInstanceOf(PdpUnavailable);
  return outcome.error as PdpUnavailable;
}

let servers: Array<FakeGrpcServer | NotHttp2Server> = [];
let channels: GrpcChannel[] = [];
afterEach(async () => {
  for (const c of channels) c.close();
  channels = [];
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

async function fake(handler: CallHandler, opts: { unix?: boolean } = {}): Promise<FakeGrpcServer> {
  const server = await startFakeGrpcServer(handler, opts);
  servers.push(server);
  return server;
}

async function notHttp2(mode: "garbage" | "close" | "silent"): Promise<NotHttp2Server> {
  const server = await startNotHttp2Server(mode);
  servers.push(server);
  return server;
}

function channelTo(address: string): GrpcChannel {
  const channel = new GrpcChannel({ target: parseTarget(address), userAgent: "grpc-channel-test" });
  channels.push(channel);
  return channel;
}

describe("parseTarget", () => {
  it.each([
    ["127.0.0.1:3593", { kind: "host", host: "127.0.0.1", port: 3593 }],
    ["pdp.internal:3593", { kind: "host", host: "pdp.internal", port: 3593 }],
    ["dns:///pdp.internal:3593", { kind: "host", host: "pdp.internal", port: 3593 }],
    ["dns:pdp.internal:3593", { kind: "host", host: "pdp.internal", port: 3593 }],
    ["dns://8.8.8.8:53/pdp.internal:3593", { kind: "host", host: "pdp.internal", port: 3593 }],
    ["dns://resolver.example/pdp.internal:3593", { kind: "host", host: "pdp.internal", port: 3593 }],
    ["[::1]:3593", { kind: "host", host: "::1", port: 3593 }],
    ["dns:///[::1]:3593", { kind: "host", host: "::1", port: 3593 }],
    ["[::1]", { kind: "host", host: "::1", port: 443 }],
    ["::1", { kind: "host", host: "::1", port: 443 }],
    ["unix:/run/cerbos/grpc.sock", { kind: "unix", path: "/run/cerbos/grpc.sock" }],
    ["unix:///run/cerbos/grpc.sock", { kind: "unix", path: "/run/cerbos/grpc.sock" }],
    ["pdp.internal", { kind: "host", host: "pdp.internal", port: 443 }],
    ["dns:///pdp.internal", { kind: "host", host: "pdp.internal", port: 443 }],
  ])("%s", (address, expected) => {
    expect(parseTarget(address)).toEqual(expected);
  });
});

describe("a unary call on the wire", () => {
  it.each([
    ["a short message", Buffer.from("hello")],
    ["an empty message", Buffer.alloc(0)],
    ["a message over several DATA frames", Buffer.alloc(100_000, "x")],
  ])("%s: POST to the path, gRPC headers, grpc-timeout in ms, one length-prefixed message; decode gets the message alone", async (_, message) => {
    const server = await fake(echo);
    const channel = channelTo(server.target);
    const decoded: Buffer[] = [];
    const result = await channel.call(ECHO, message, (b) => (decoded.push(Buffer.from(b)), text(b)), 2_000);

    expect(result).toBe(`echo:${text(message)}`);
    expect(decoded).toEqual([Buffer.concat([Buffer.from("echo:"), message])]);
    expect(server.calls).toHaveLength(1);
    const { headers, request } = server.calls[0]!;
    expect(headers[":method"]).toBe("POST");
    expect(headers[":path"]).toBe(ECHO);
    expect(headers["content-type"]).toBe("application/grpc");
    expect(headers.te).toBe("trailers");
    expect(headers["user-agent"]).toBe("grpc-channel-test");
    expect(headers["grpc-encoding"]).toBeUndefined();
    const timeout = /^(\d{1,8})m$/.exec(String(headers["grpc-timeout"]));
    expect(timeout, `grpc-timeout ${String(headers["grpc-timeout"])}`).not.toBeNull();
    expect(Number(timeout![1])).toBeGreaterThan(0);
    expect(Number(timeout![1])).toBeLessThanOrEqual(2_000);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(message.length, 1);
    expect((await request).equals(Buffer.concat([prefix, message]))).toBe(true);
  });

  it.each(["unix:", "unix://"])("over a unix socket (%s/abs/path)", async (scheme) => {
    const server = await fake(echo, { unix: true });
    const channel = channelTo(`${scheme}${server.path!}`);
    expect(await channel.call(ECHO, Buffer.from("over unix"), text, 2_000)).toBe("echo:over unix");
    expect(server.accepted()).toBe(1);
  });

  it("calls share one connection while it lives", async () => {
    const server = await fake(echo);
    const channel = channelTo(server.target);
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => channel.call(ECHO, Buffer.from(String(i)), text, 2_000)));
    expect(answers).toEqual(Array.from({ length: 20 }, (_, i) => `echo:${i}`));
    expect(server.accepted()).toBe(1);
  });
});

describe("status", () => {
  it.each([
    [1, "CANCELLED"],
    [3, "INVALID_ARGUMENT"],
    [7, "PERMISSION_DENIED"],
    [12, "UNIMPLEMENTED"],
    [14, "UNAVAILABLE"],
    [16, "UNAUTHENTICATED"],
    [17, "UNKNOWN"],
  ])("grpc-status %i in the trailers → %s (decode never called)", async (code, name) => {
    const server = await fake((call) => reply(call.stream, grpcFrame(Buffer.from("ignored")), { "grpc-status": String(code), "grpc-message": "no" }));
    const channel = channelTo(server.target);
    let decodes = 0;
    const error = await failure(channel.call(ECHO, Buffer.from("x"), (b) => (decodes++, b), 2_000));
    expect(error.grpcCode).toBe(name);
    expect(decodes).toBe(0);
  });

  it.each([
    [3, "INVALID_ARGUMENT"],
    [12, "UNIMPLEMENTED"],
    [14, "UNAVAILABLE"],
  ])("trailers-only response with grpc-status %i → %s", async (code, name) => {
    const server = await fake((call) =>
      call.stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(code) }, { endStream: true }),
    );
    const channel = channelTo(server.target);
    const error = await failure(channel.call(ECHO, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe(name);
  });

  it.each([
    [400, "INTERNAL"],
    [401, "UNAUTHENTICATED"],
    [403, "PERMISSION_DENIED"],
    [404, "UNIMPLEMENTED"],
    [429, "UNAVAILABLE"],
    [502, "UNAVAILABLE"],
    [503, "UNAVAILABLE"],
    [504, "UNAVAILABLE"],
    [500, "UNKNOWN"],
  ])("HTTP %i without grpc-status → %s", async (status, name) => {
    const server = await fake((call) => {
      call.stream.respond({ ":status": status, "content-type": "text/plain" });
      call.stream.end("not gRPC");
    });
    const channel = channelTo(server.target);
    const error = await failure(channel.call(ECHO, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe(name);
  });

  it("HTTP 200 and a message but no grpc-status at all → INTERNAL", async () => {
    const server = await fake((call) => {
      call.stream.respond({ ":status": 200, "content-type": "application/grpc" });
      call.stream.end(grpcFrame(Buffer.from("hi")));
    });
    const error = await failure(channelTo(server.target).call(ECHO, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe("INTERNAL");
  });

  it("grpc-status 0 with a content-type that is not gRPC → UNKNOWN", async () => {
    const server = await fake((call) => reply(call.stream, grpcFrame(Buffer.from("hi")), { "grpc-status": "0" }, { ":status": 200, "content-type": "text/html" }));
    const error = await failure(channelTo(server.target).call(ECHO, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe("UNKNOWN");
  });
});

describe("response framing and size", () => {
  it("a message of exactly 4 MiB is accepted", async () => {
    const server = await fake((call) => reply(call.stream, grpcFrame(Buffer.alloc(4 * MiB, 7))));
    const length = await channelTo(server.target).call(ECHO, Buffer.from("x"), (b) => b.length, 10_000);
    expect(length).toBe(4 * MiB);
  });

  it("a response over 4 MiB → RESOURCE_EXHAUSTED, the stream is cancelled, and the channel goes on", async () => {
    const server = await fake((call) => {
      if (call.headers[":path"] === ECHO) echo(call);
      else reply(call.stream, grpcFrame(Buffer.alloc(6 * MiB, 7)));
    });
    const channel = channelTo(server.target);
    let decodes = 0;
    const error = await failure(channel.call("/test.Fake/Huge", Buffer.from("x"), (b) => (decodes++, b), 10_000));
    expect(error.grpcCode).toBe("RESOURCE_EXHAUSTED");
    expect(decodes).toBe(0);
    // The client stopped reading: the server never got to send the whole 6 MiB.
    const huge = server.calls[0]!;
    await waitFor(() => huge.closed, { what: "the server to see the huge stream closed" });
    expect(huge.rstCode).toBe(constants.NGHTTP2_CANCEL);
    expect(await channel.call(ECHO, Buffer.from("after"), text, 2_000)).toBe("echo:after");
    expect(server.accepted()).toBe(1);
  });

  it.each([
    ["the compressed flag set", grpcFrame(Buffer.from("hi"), { compressed: true })],
    ["a length prefix longer than the body", grpcFrame(Buffer.from("hi"), { declaredLength: 3 })],
    ["a length prefix shorter than the body", grpcFrame(Buffer.from("hi"), { declaredLength: 1 })],
    ["two messages", Buffer.concat([grpcFrame(Buffer.from("one")), grpcFrame(Buffer.from("two"))])],
    ["a body shorter than a prefix", Buffer.from([0, 0, 0])],
    ["no message at all", Buffer.alloc(0)],
  ])("%s → INTERNAL", async (_, body) => {
    const server = await fake((call) => reply(call.stream, body));
    let decodes = 0;
    const error = await failure(channelTo(server.target).call(ECHO, Buffer.from("x"), (b) => (decodes++, b), 2_000));
    expect(error.grpcCode).toBe("INTERNAL");
    expect(decodes).toBe(0);
  });

  it("decode throwing → INTERNAL", async () => {
    const server = await fake(echo);
    const error = await failure(
      channelTo(server.target).call(ECHO, Buffer.from("x"), () => {
        throw new RangeError("truncated varint");
      }, 2_000),
    );
    expect(error.grpcCode).toBe("INTERNAL");
    expect(error.message).toContain("truncated varint");
  });
});

describe("deadline", () => {
  it("a server that never answers → DEADLINE_EXCEEDED near the timeout, and the server sees the stream cancelled", async () => {
    const server = await fake((call) => {
      if (call.headers[":path"] === ECHO) echo(call);
    });
    const channel = channelTo(server.target);
    expect(await channel.call(ECHO, Buffer.from("warm"), text, 2_000)).toBe("echo:warm");

    const TIMEOUT = 300;
    const started = performance.now();
    const error = await failure(channel.call(HANG, Buffer.from("x"), text, TIMEOUT));
    const elapsed = performance.now() - started;
    expect(error.grpcCode).toBe("DEADLINE_EXCEEDED");
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT - 5);
    expect(elapsed).toBeLessThan(TIMEOUT + SLACK_MS);

    const hung = server.callsTo(HANG)[0]!;
    expect(Number(/^(\d+)m$/.exec(String(hung.headers["grpc-timeout"]))?.[1])).toBeLessThanOrEqual(TIMEOUT);
    await waitFor(() => hung.closed, { what: "the server to see the hung stream closed" });
    expect(hung.rstCode).toBe(constants.NGHTTP2_CANCEL);
    // Only the stream was given up: the connection carries the next call.
    expect(await channel.call(ECHO, Buffer.from("again"), text, 2_000)).toBe("echo:again");
    expect(server.accepted()).toBe(1);
  });

  it("a connection that never becomes HTTP/2 → DEADLINE_EXCEEDED at the call's deadline, not the connect timeout", async () => {
    const server = await notHttp2("silent");
    const channel = channelTo(server.target);
    const TIMEOUT = 300;
    const started = performance.now();
    const error = await failure(channel.call(ECHO, Buffer.from("x"), text, TIMEOUT));
    expect(error.grpcCode).toBe("DEADLINE_EXCEEDED");
    expect(performance.now() - started).toBeLessThan(TIMEOUT + SLACK_MS);
  });
});

describe("refused streams", () => {
  it("REFUSED_STREAM before any response is sent once more, and succeeds when the second attempt is answered", async () => {
    let attempts = 0;
    const server = await fake((call) => {
      if (++attempts === 1) call.stream.close(constants.NGHTTP2_REFUSED_STREAM);
      else echo(call);
    });
    const channel = channelTo(server.target);
    expect(await channel.call(ECHO, Buffer.from("retried"), text, 2_000)).toBe("echo:retried");
    expect(attempts).toBe(2);
    // The same request, both times.
    expect(server.calls.map((c) => c.headers[":path"])).toEqual([ECHO, ECHO]);
    expect((await server.calls[1]!.request).subarray(5).toString()).toBe("retried");
  });

  it("refused twice → fails with UNAVAILABLE, after exactly two attempts", async () => {
    const REFUSE = "/test.Fake/Refuse";
    const server = await fake((call) => {
      if (call.headers[":path"] === REFUSE) call.stream.close(constants.NGHTTP2_REFUSED_STREAM);
      else echo(call);
    });
    const channel = channelTo(server.target);
    const error = await failure(channel.call(REFUSE, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe("UNAVAILABLE");
    expect(server.callsTo(REFUSE)).toHaveLength(2);
    // A later call on the same connection arrives after anything the refused call could still have sent.
    expect(await channel.call(ECHO, Buffer.from("next"), text, 2_000)).toBe("echo:next");
    expect(server.callsTo(REFUSE)).toHaveLength(2);
  });

  it.each([
    ["CANCEL", constants.NGHTTP2_CANCEL],
    ["INTERNAL_ERROR", constants.NGHTTP2_INTERNAL_ERROR],
    ["ENHANCE_YOUR_CALM", constants.NGHTTP2_ENHANCE_YOUR_CALM],
  ])("a stream reset with %s is not sent again: UNAVAILABLE after one attempt", async (_, code) => {
    const server = await fake((call) => call.stream.close(code));
    const error = await failure(channelTo(server.target).call(ECHO, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe("UNAVAILABLE");
    expect(server.calls).toHaveLength(1);
  });

  it("REFUSED_STREAM after the response headers is not a refusal (the server saw the call): one attempt, UNAVAILABLE", async () => {
    const server = await fake((call) => {
      call.stream.respond({ ":status": 200, "content-type": "application/grpc" });
      // close() while a write is still pending: node sends RST_STREAM at once. (close() on an idle
      // stream ends it cleanly first, and the client would see END_STREAM, not the reset.)
      call.stream.write(grpcFrame(Buffer.from("half")));
      call.stream.close(constants.NGHTTP2_REFUSED_STREAM);
    });
    const error = await failure(channelTo(server.target).call(ECHO, Buffer.from("x"), text, 2_000));
    expect(error.grpcCode).toBe("UNAVAILABLE");
    expect(server.calls).toHaveLength(1);
  });
});

describe("a server that is not HTTP/2", () => {
  it.each(["garbage", "close"] as const)(
    "%s: every call fails with PdpUnavailable within its deadline, and reconnects back off (100 ms ×1.6)",
    async (mode) => {
      const server = await notHttp2(mode);
      const channel = channelTo(server.target);
      const TIMEOUT = 300;
      const outcomes: Array<{ code: string; ms: number }> = [];
      // One call per poll until the channel has made 7 attempts (≥ 2.1 s of backoff at -20 % jitter).
      await waitFor(
        async () => {
          const started = performance.now();
          const error = await failure(channel.call(ECHO, Buffer.from("x"), text, TIMEOUT));
          outcomes.push({ code: error.grpcCode, ms: performance.now() - started });
          return server.accepted() >= 7;
        },
        { timeoutMs: 15_000, what: "7 connection attempts" },
      );
      expect(outcomes.length).toBeGreaterThan(1);
      for (const o of outcomes) {
        expect(["UNAVAILABLE", "DEADLINE_EXCEEDED"]).toContain(o.code);
        expect(o.ms).toBeLessThan(TIMEOUT + SLACK_MS);
      }
      // Calls never hurry a reconnect: attempt i+1 comes no sooner than 100 ms × 1.6^i − 20 %.
      const at = server.acceptedAt();
      for (let i = 0; i + 1 < 6; i++) {
        const minGap = 0.8 * 100 * 1.6 ** i - 5;
        expect(at[i + 1]! - at[i]!, `gap after attempt ${i + 1}`).toBeGreaterThanOrEqual(minGap);
      }
      // So the first 1.5 s see at most 6 attempts (0, ≥80, ≥208, ≥413, ≥741, ≥1265 ms).
      expect(at.filter((t) => t - at[0]! < 1_500).length).toBeLessThanOrEqual(6);
    },
  );
});

describe("GOAWAY", () => {
  it("a GOAWAY after the answer: the next call succeeds on a new connection, no call is sent twice", async () => {
    const server = await fake((call) => {
      const session = call.session;
      call.stream.once("close", () => {
        if (!session.closed && !session.destroyed) session.goaway();
      });
      echo(call);
    });
    const channel = channelTo(server.target);
    expect(await channel.call(ECHO, Buffer.from("1"), text, 2_000)).toBe("echo:1");
    // A ready connection that goes away is replaced at once, without waiting for a call.
    await waitFor(() => server.accepted() === 2, { what: "a second connection" });
    expect(await channel.call(ECHO, Buffer.from("2"), text, 2_000)).toBe("echo:2");
    expect(server.calls[1]!.session).not.toBe(server.calls[0]!.session);
    // At once after an answer whose GOAWAY may still be on its way: still answered, exactly once.
    expect(await channel.call(ECHO, Buffer.from("3"), text, 2_000)).toBe("echo:3");
    expect(server.calls.map((c) => c.headers[":path"])).toEqual([ECHO, ECHO, ECHO]);
    // Whichever connection carried it, the one that answered "2" went away and was replaced.
    await waitFor(() => server.accepted() >= 3, { what: "a third connection" });
  });

  it("a GOAWAY that lets the call in flight through: it completes on the closing connection, the next call opens a new one", async () => {
    const server = await fake((call) => {
      if (call.n === 1) call.session.goaway(constants.NGHTTP2_NO_ERROR, call.stream.id!);
      echo(call);
    });
    const channel = channelTo(server.target);
    expect(await channel.call(ECHO, Buffer.from("1"), text, 2_000)).toBe("echo:1");
    expect(await channel.call(ECHO, Buffer.from("2"), text, 2_000)).toBe("echo:2");
    expect(server.calls).toHaveLength(2);
    expect(server.calls[1]!.session).not.toBe(server.calls[0]!.session);
    expect(server.accepted()).toBe(2);
  });
  it("a server that sends GOAWAY to every new connection draws reconnects with backoff, not a storm", async () => {
    // A connection closed within 50 ms of becoming ready counts as a failed attempt (100 ms ×1.6 …).
    const server = createServer();
    const accepted: number[] = [];
    server.on("session", (session) => {
      accepted.push(performance.now());
      session.goaway();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const channel = new GrpcChannel({ target: parseTarget(`127.0.0.1:${(server.address() as AddressInfo).port}`), userAgent: "test" });
    try {
      await waitFor(() => accepted.length >= 5, { timeoutMs: 10_000, what: "five connections" });
      // Without the backoff this loop reconnected thousands of times a second.
      expect(accepted[4]! - accepted[0]!).toBeGreaterThanOrEqual(0.8 * (100 + 160 + 256 + 409.6) - 20);
    } finally {
      channel.close();
      server.close();
    }
  });
});

describe("close()", () => {
  it("settled calls stay settled, a call in flight fails with UNAVAILABLE at once, a call after close() fails with UNAVAILABLE", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const server = await fake((call) => {
        if (call.headers[":path"] === ECHO) echo(call);
      });
      const channel = channelTo(server.target);
      const done = channel.call(ECHO, Buffer.from("before"), text, 2_000);
      expect(await done).toBe("echo:before");
      const inFlight = channel.call(HANG, Buffer.from("x"), text, 10_000);
      await waitFor(() => server.callsTo(HANG).length === 1, { what: "the hanging call at the server" });

      const started = performance.now();
      channel.close();
      channel.close(); // idempotent
      const error = await failure(inFlight);
      expect(error.grpcCode).toBe("UNAVAILABLE");
      expect(performance.now() - started).toBeLessThan(SLACK_MS);
      expect(await done).toBe("echo:before");

      const after = await failure(channel.call(ECHO, Buffer.from("after"), text, 2_000));
      expect(after.grpcCode).toBe("UNAVAILABLE");
      expect(server.callsTo(ECHO)).toHaveLength(1);
      await waitFor(() => server.callsTo(HANG)[0]!.closed, { what: "the server to see the stream closed" });
      expect(server.accepted()).toBe(1);
      // Let any stray rejection surface before judging.
      await new Promise((r) => setImmediate(r));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("a call waiting for a connection fails with UNAVAILABLE as soon as the channel closes", async () => {
    const server = await notHttp2("silent");
    const channel = channelTo(server.target);
    const waiting = channel.call(ECHO, Buffer.from("x"), text, 10_000);
    await waitFor(() => server.accepted() === 1, { what: "the connection attempt" });
    const started = performance.now();
    channel.close();
    const error = await failure(waiting);
    expect(error.grpcCode).toBe("UNAVAILABLE");
    expect(performance.now() - started).toBeLessThan(SLACK_MS);
  });
});
