/**
 * decide(): one forwarded request in, one verdict out. The stages run in SPEC order —
 * request shape (400/414), identity (401), mapping (403/400), then the PDP — and every
 * failure becomes a Refusal: nothing but an explicit PDP allow (or a shadow route) yields `allow`.
 */
import { normalizeHeaderName, type Config } from "../config/schema.js";
import { Refusal } from "../errors.js";
import { rebuildRequest, type RebuildOptions } from "../request/forwarded.js";
import type { IdentityResolver } from "../identity/resolve.js";
import type { Mapper } from "../mapping/mapper.js";
import type { Check, Outcome } from "../model.js";
import type { PdpClient } from "../pdp/client.js";
import { compileResponseHeaders, type ResponseHeaders } from "./response-headers.js";

export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

export interface Verdict {
  /** HTTP status: 200 only for allow/shadow_deny. */
  readonly status: number;
  readonly outcome: Outcome;
  /** Metric label: route name, "generic", "unmatched", or "-" when refused before mapping. */
  readonly route: string;
  /** Identity headers for the upstream (allow only), every configured header present. */
  readonly headers: HeaderList;
  readonly refusal?: Refusal;
  readonly check?: Check;
  readonly callId?: string;
}

export interface DecisionRecord extends Verdict {
  readonly requestId: string;
  readonly durationMs: number;
}

export interface DeciderDeps {
  readonly config: Config;
  readonly identity: IdentityResolver;
  readonly mapper: Mapper;
  readonly pdp: PdpClient;
  /** Called once per decided request (logs, metrics). Must not throw. */
  readonly onDecision?: (record: DecisionRecord) => void;
}

export type Decide = (headers: HeaderList, requestId: string) => Promise<Verdict>;

const NO_HEADERS: HeaderList = Object.freeze([]);

export function createDecider(deps: DeciderDeps): Decide {
  const { config, identity, mapper, pdp, onDecision } = deps;
  const rebuild: RebuildOptions = {
    paths: config.paths,
    ownHeaderNames: new Set(Object.keys(config.response.headers).map(normalizeHeaderName)),
  };
  const responseHeaders: ResponseHeaders = compileResponseHeaders(config.response.headers);

  const refuse = (refusal: Refusal, route: string, check?: Check): Verdict => ({
    status: refusal.status,
    outcome: refusal.outcome,
    route,
    headers: NO_HEADERS,
    refusal,
    ...(check ? { check } : {}),
  });

  async function run(headers: HeaderList): Promise<Verdict> {
    let route = "-";
    let check: Check | undefined;
    try {
      const req = rebuildRequest(headers, rebuild);
      const pending = identity.resolve(req);
      const who = pending instanceof Promise ? await pending : pending;
      const mapping = mapper.map(req, who);
      route = mapping.route;
      if (mapping.kind === "deny") return refuse(new Refusal("forbidden", "no mapping allows this request"), route);
      check = {
        principal: who.principal,
        resource: mapping.resource,
        action: mapping.action,
        ...(who.forwardedToken ? { token: who.forwardedToken } : {}),
      };
      const decision = await pdp.check(check);
      if (decision.allowed || mapping.shadow) {
        return {
          status: 200,
          outcome: decision.allowed ? "allow" : "shadow_deny",
          route,
          headers: responseHeaders({ req, identity: who, params: {} }),
          check,
          ...(decision.callId ? { callId: decision.callId } : {}),
        };
      }
      return { ...refuse(new Refusal("forbidden", "denied by policy"), route, check), ...(decision.callId ? { callId: decision.callId } : {}) };
    } catch (error) {
      // Fail closed: an unexpected error is "unavailable", never an allow.
      const refusal = error instanceof Refusal ? error : new Refusal("unavailable", `internal error: ${(error as Error)?.message ?? error}`);
      return refuse(refusal, route, check);
    }
  }

  if (!onDecision) return run;
  return async (headers, requestId) => {
    const started = performance.now();
    const verdict = await run(headers);
    onDecision({ ...verdict, requestId, durationMs: performance.now() - started });
    return verdict;
  };
}
