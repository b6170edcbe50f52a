/**
 * Every way a request can be refused, each with a stable code, its HTTP status and the outcome
 * label used by metrics and logs. Nothing outside this table turns into a response status.
 * Messages are for logs only: response bodies carry the code, never a message.
 */
import type { Outcome } from "./model.js";

export const REFUSALS = {
  bad_request: { status: 400, outcome: "bad_request" },
  uri_too_long: { status: 414, outcome: "bad_request" },
  header_too_large: { status: 431, outcome: "bad_request" },
  unauthenticated: { status: 401, outcome: "unauthenticated" },
  invalid_token: { status: 401, outcome: "unauthenticated" },
  forbidden: { status: 403, outcome: "deny" },
  unavailable: { status: 503, outcome: "unavailable" },
} as const satisfies Record<string, { status: number; outcome: Outcome }>;

export type RefusalCode = keyof typeof REFUSALS;

/** A request refused before (or instead of) a PDP decision. Thrown, never returned as a 2xx. */
export class Refusal extends Error {
  readonly status: number;
  readonly outcome: Outcome;
  constructor(
    readonly code: RefusalCode,
    /** Log-only detail; never sent to the client. */
    detail: string,
  ) {
    super(detail);
    this.name = "Refusal";
    this.status = REFUSALS[code].status;
    this.outcome = REFUSALS[code].outcome;
  }
}

/** The PDP could not answer (down, deadline, overload, protocol error): 503 + Retry-After. */
export class PdpUnavailable extends Refusal {
  constructor(
    detail: string,
    /** gRPC status name (UNAVAILABLE, DEADLINE_EXCEEDED, …) for metrics. */
    readonly grpcCode: string = "UNKNOWN",
  ) {
    super("unavailable", detail);
    this.name = "PdpUnavailable";
  }
}

/** A configuration problem list, reported all at once with paths. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}
