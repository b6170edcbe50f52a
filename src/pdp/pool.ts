/**
 * The gRPC pool (SPEC §6): `pdp.connections` channels (grpc-channel.ts), each with its own HTTP/2
 * connection (one per address of a dns:/// name), calls spread by least in-flight, every call with
 * a deadline, reconnect backoff capped so a returning PDP is used again within ~5 s.
 *
 * Every call is a raw unary call with our own protobuf codecs (checkresources-codec.ts for
 * CheckResources and the health check, authzen-codec.ts for AuthZEN batches): the Cerbos SDK is
 * not loaded at all, which saves its memory and its conversions on every call.
 *
 * This is the border of gRPC: callers get plain results or a PdpUnavailable.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { decodeBatchResponse, encodeBatchRequest, type Evaluation } from "./authzen-codec.js";
import {
  CHECK_RESOURCES_METHOD,
  decodeCheckResourcesResponse,
  decodeHealthCheckResponse,
  encodeCheckResourcesRequest,
  encodeHealthCheckRequest,
  HEALTH_CHECK_METHOD,
  SERVING,
} from "./checkresources-codec.js";
import { GrpcChannel, parseTarget, type ChannelOptions } from "./grpc-channel.js";
import { UnencodableValue } from "./protobuf-wire.js";
import type { TlsConfig } from "../config/schema.js";
import { PdpUnavailable } from "../errors.js";

// The CheckResources call's shapes live beside their encoding, as AuthZEN's Evaluation does.
import type { ResourcesRequest, ResourcesResponse } from "./checkresources-codec.js";
export type { ResourceEntry, ResourceResult, ResourcesRequest, ResourcesResponse } from "./checkresources-codec.js";

export interface PdpPool {
  /** Rejects only with PdpUnavailable (its grpcCode names the gRPC status). */
  checkResources(req: ResourcesRequest): Promise<ResourcesResponse>;
  /**
   * One AuthZEN AccessEvaluationBatch call on the same connections: decisions in request order
   * (`true` only for an explicit `decision: true`). Rejects only with PdpUnavailable.
   */
  evaluateBatch(evaluations: readonly Evaluation[]): Promise<Array<boolean | undefined>>;
  /** Whether the PDP serves AuthZEN batches (false on UNIMPLEMENTED; undefined when it could not tell). */
  probeAuthzen(): Promise<boolean | undefined>;
  /** True when the PDP's gRPC health service answers SERVING within the deadline. */
  healthy(): Promise<boolean>;
  /** Calls in flight per connection (for tests and gauges). */
  inFlight(): readonly number[];
  close(): void;
}

export interface PoolOptions {
  /** host:port, dns:///host:port (round-robin over its addresses) or unix:/path. */
  readonly target: string;
  readonly tls: TlsConfig;
  readonly connections: number;
  /** Deadline of one call, in milliseconds. */
  readonly timeoutMs: number;
  /** Observes every call: gRPC status name and duration in seconds. */
  readonly onCall?: (code: string, seconds: number) => void;
}

/** TLS settings of the channels: the secure context built once from the configured files. */
function tlsOptions(tls: TlsConfig): ChannelOptions["tls"] {
  if (tls === false) return undefined;
  if (tls === true) return {};
  return {
    context: createSecureContext({
      ...(tls.ca ? { ca: readFileSync(tls.ca) } : {}),
      ...(tls.cert ? { cert: readFileSync(tls.cert) } : {}),
      ...(tls.key ? { key: readFileSync(tls.key) } : {}),
    }),
    ...(tls.serverName ? { serverName: tls.serverName } : {}),
  };
}

const EVALUATION_BATCH = "/authzen.authorization.v1.AuthorizationService/AccessEvaluationBatch";
/** What the SDK's checkHealth() asked for. */
const HEALTH_REQUEST = encodeHealthCheckRequest("cerbos.svc.v1.CerbosService");


export function createPool(opts: PoolOptions): PdpPool {
  const tls = tlsOptions(opts.tls);
  const channelOptions: ChannelOptions = { target: parseTarget(opts.target), userAgent: "cerbos-forwardauth", ...(tls ? { tls } : {}) };
  const connect = (): GrpcChannel => new GrpcChannel(channelOptions);
  const clients: GrpcChannel[] = Array.from({ length: opts.connections }, connect);
  let closed = false;
  const inFlight = clients.map(() => 0);
  const onCall = opts.onCall;

  /** Least in-flight; ties go to the lowest index, so an idle pool keeps using warm connections. */
  function pick(): number {
    let best = 0;
    for (let i = 1; i < inFlight.length; i++) if (inFlight[i]! < inFlight[best]!) best = i;
    return best;
  }

  /**
   * Consecutive deadline failures per connection. A connection whose peer vanished without a
   * reset (half-open) never errors by itself: after this many deadlines in a row with no success
   * it is replaced by a fresh one. (HTTP/2 keepalive pings would also find it, but the PDP sends
   * GOAWAY to clients that ping more often than every 5 minutes.)
   */
  const deadlinesInARow = clients.map(() => 0);
  const REPLACE_AFTER_DEADLINES = 3;

  /** Runs one call on the least busy connection: counts it in flight, maps failures, reports code and duration. */
  async function onLeastBusy<T>(call: (c: GrpcChannel) => Promise<T>): Promise<T> {
    const i = pick();
    const connection = clients[i]!;
    inFlight[i]!++;
    const started = performance.now();
    let code = "OK";
    try {
      const result = await call(connection);
      deadlinesInARow[i] = 0;
      return result;
    } catch (error) {
      const unavailable = toUnavailable(error);
      code = unavailable.grpcCode;
      if (code === "DEADLINE_EXCEEDED" && ++deadlinesInARow[i]! >= REPLACE_AFTER_DEADLINES && clients[i] === connection && !closed) {
        deadlinesInARow[i] = 0;
        clients[i] = connect();
        connection.close();
      }
      throw unavailable;
    } finally {
      inFlight[i]!--;
      onCall?.(code, (performance.now() - started) / 1000);
    }
  }

  return {
    // Encoding may throw UnencodableValue (→ INVALID_ARGUMENT) before anything is sent.
    checkResources: (req) =>
      onLeastBusy((c) => c.call(CHECK_RESOURCES_METHOD, encodeCheckResourcesRequest(req), decodeCheckResourcesResponse, opts.timeoutMs)),

    evaluateBatch: (evaluations) => onLeastBusy((c) => rawBatch(c, evaluations, opts.timeoutMs)),

    async probeAuthzen() {
      try {
        await rawBatch(clients[0]!, [PROBE], Math.max(opts.timeoutMs, 1000));
        return true;
      } catch (error) {
        return error instanceof PdpUnavailable && error.grpcCode === "UNIMPLEMENTED" ? false : undefined;
      }
    },

    async healthy() {
      try {
        const status = await clients[0]!.call(HEALTH_CHECK_METHOD, HEALTH_REQUEST, decodeHealthCheckResponse, Math.max(opts.timeoutMs, 1000));
        return status === SERVING;
      } catch {
        return false;
      }
    },

    inFlight: () => inFlight,

    close() {
      closed = true;
      for (const c of clients) c.close();
    },
  };
}

/** A harmless evaluation to learn whether the PDP serves AuthZEN. */
const PROBE: Evaluation = {
  subject: { type: "probe", id: "cerbos-forwardauth-probe", properties: { "cerbos.roles": ["cerbos-forwardauth-probe"] } },
  resource: { type: "cerbos-forwardauth-probe", id: "probe", properties: {} },
  action: "probe",
};

async function rawBatch(channel: GrpcChannel, evaluations: readonly Evaluation[], timeoutMs: number): Promise<Array<boolean | undefined>> {
  const response = await channel.call(EVALUATION_BATCH, encodeBatchRequest(evaluations), decodeBatchResponse, timeoutMs);
  if (response.length !== evaluations.length) throw new PdpUnavailable("AuthZEN response does not match the request", "INTERNAL");
  return response;
}

/** Maps any failure of a call to PdpUnavailable with the gRPC status name as its metric code. */
export function toUnavailable(error: unknown): PdpUnavailable {
  if (error instanceof PdpUnavailable) return error;
  // A value our encoder cannot send as it is: the call fails, and the batcher retries item by item.
  if (error instanceof UnencodableValue) return new PdpUnavailable(`PDP request refused by the client: ${error.message}`, "INVALID_ARGUMENT");
  return new PdpUnavailable(`PDP call failed: ${error instanceof Error ? error.name : "unknown error"}`, "UNKNOWN");
}
