/**
 * The PDP client: one `CheckResources` call per check over `@cerbos/grpc`, with a deadline.
 * This is the border of gRPC: callers see a `Decision` or a `PdpUnavailable`, never a
 * grpc-js status object or a Cerbos SDK error.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { NotOK, ServiceStatus, Status } from "@cerbos/core";
import { GRPC, type ChannelOptions } from "@cerbos/grpc";
import type { TlsConfig } from "../config/schema.js";
import { PdpUnavailable } from "../errors.js";
import type { Check, Decision } from "../model.js";

export interface PdpClient {
  /** Resolves with the PDP's decision; rejects only with PdpUnavailable. */
  check(check: Check): Promise<Decision>;
  /** True when the PDP's gRPC health service answers SERVING within the deadline. */
  healthy(): Promise<boolean>;
  close(): void;
}

export interface GrpcPdpOptions {
  /** host:port, dns:///host:port or unix:/path. */
  readonly target: string;
  readonly tls: TlsConfig;
  /** Deadline of one call, in milliseconds. */
  readonly timeoutMs: number;
}

/** Reconnect backoff is capped so a PDP that comes back is used again within ~5 s (grpc-js default: 120 s). */
const CHANNEL_OPTIONS: ChannelOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 3000,
  "grpc.enable_retries": 0,
};

export function createGrpcPdp(opts: GrpcPdpOptions): PdpClient {
  const channelOptions: ChannelOptions = { ...CHANNEL_OPTIONS };
  let tls: boolean | ReturnType<typeof createSecureContext> = false;
  if (opts.tls === true) tls = true;
  else if (opts.tls !== false) {
    const files = opts.tls;
    tls = createSecureContext({
      ...(files.ca ? { ca: readFileSync(files.ca) } : {}),
      ...(files.cert ? { cert: readFileSync(files.cert) } : {}),
      ...(files.key ? { key: readFileSync(files.key) } : {}),
    });
    if (files.serverName) {
      channelOptions["grpc.ssl_target_name_override"] = files.serverName;
      channelOptions["grpc.default_authority"] = files.serverName;
    }
  }
  const client = new GRPC(opts.target, { tls, channelOptions });

  return {
    async check(check) {
      try {
        const response = await client.checkResources(
          {
            principal: {
              id: check.principal.id,
              roles: [...check.principal.roles],
              attr: check.principal.attr as Record<string, never>,
              ...(check.principal.scope ? { scope: check.principal.scope } : {}),
              ...(check.principal.policyVersion ? { policyVersion: check.principal.policyVersion } : {}),
            },
            resources: [
              {
                resource: {
                  kind: check.resource.kind,
                  id: check.resource.id,
                  attr: check.resource.attr as Record<string, never>,
                  ...(check.resource.scope ? { scope: check.resource.scope } : {}),
                  ...(check.resource.policyVersion ? { policyVersion: check.resource.policyVersion } : {}),
                },
                actions: [check.action],
              },
            ],
            ...(check.token ? { auxData: { jwt: { token: check.token } } } : {}),
          },
          { signal: AbortSignal.timeout(opts.timeoutMs) },
        );
        const result = response.results[0];
        // Match the result to what was sent; anything unexpected is not an allow.
        const matches =
          response.results.length === 1 && result !== undefined && result.resource.kind === check.resource.kind && result.resource.id === check.resource.id;
        return { allowed: matches && result.isAllowed(check.action) === true, callId: response.cerbosCallId };
      } catch (error) {
        throw toUnavailable(error);
      }
    },

    async healthy() {
      try {
        const { status } = await client.checkHealth({}, { signal: AbortSignal.timeout(Math.max(opts.timeoutMs, 1000)) });
        return status === ServiceStatus.SERVING;
      } catch {
        return false;
      }
    },

    close() {
      client.close();
    },
  };
}

/** Maps any failure of a call to PdpUnavailable with the gRPC status name as its metric code. */
export function toUnavailable(error: unknown): PdpUnavailable {
  if (error instanceof NotOK) return new PdpUnavailable(`PDP call failed: ${Status[error.code] ?? error.code}`, Status[error.code] ?? "UNKNOWN");
  if (error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")) {
    return new PdpUnavailable("PDP call passed its deadline", "DEADLINE_EXCEEDED");
  }
  return new PdpUnavailable(`PDP call failed: ${error instanceof Error ? error.name : "unknown error"}`, "UNKNOWN");
}
