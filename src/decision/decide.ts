/**
 * decide(): one forwarded request in, one verdict out. The stages run in SPEC order —
 * request shape (400/414), identity (401), mapping (403/400), then the decision (cache →
 * coalescing → PDP) — and every failure becomes a Refusal: nothing but an explicit PDP allow
 * (or a shadow route) yields `allow`. When every stage is synchronous (a cache hit) the verdict
 * is returned directly, without a promise.
 */
import { normalizeHeaderName, type Config } from "../config/schema.js";
import { Refusal } from "../errors.js";
import type { IdentityResolver } from "../identity/resolve.js";
import type { Mapper } from "../mapping/mapper.js";
import type { Check, Decision, ForwardedRequest, Identity, Outcome } from "../model.js";
import { rebuildRequest, type RebuildOptions } from "../request/forwarded.js";
import type { Checker } from "./checker.js";
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

export interface DeciderDeps {
  readonly config: Config;
  readonly identity: IdentityResolver;
  readonly mapper: Mapper;
  readonly checker: Checker;
  /** Called once per decided request (logs, metrics). Must not throw. */
  readonly onDecision?: (verdict: Verdict, requestId: string, durationMs: number) => void;
}

/** `started` is performance.now() when the request arrived. */
export type Decide = (headers: HeaderList, requestId: string, started: number) => Verdict | Promise<Verdict>;

const NO_HEADERS: HeaderList = Object.freeze([]);

function refuse(error: unknown, route: string, check?: Check): Verdict {
  // Fail closed: an unexpected error is "unavailable", never an allow.
  const refusal = error instanceof Refusal ? error : new Refusal("unavailable", `internal error: ${(error as Error)?.message ?? String(error)}`);
  return { status: refusal.status, outcome: refusal.outcome, route, headers: NO_HEADERS, refusal, ...(check ? { check } : {}) };
}

const FORBIDDEN_BY_ROUTE = new Refusal("forbidden", "no mapping allows this request");
const FORBIDDEN_BY_POLICY = new Refusal("forbidden", "denied by policy");

export function createDecider(deps: DeciderDeps): Decide {
  const { config, identity, mapper, checker, onDecision } = deps;
  const rebuild: RebuildOptions = {
    paths: config.paths,
    ownHeaderNames: new Set(Object.keys(config.response.headers).map(normalizeHeaderName)),
  };
  const responseHeaders: ResponseHeaders = compileResponseHeaders(config.response.headers);

  function verdictOf(req: ForwardedRequest, who: Identity, route: string, shadow: boolean, check: Check, decision: Decision): Verdict {
    const { callId } = decision;
    if (decision.allowed || shadow) {
      return {
        status: 200,
        outcome: decision.allowed ? "allow" : "shadow_deny",
        route,
        headers: responseHeaders({ req, identity: who, params: {} }),
        check,
        callId,
      };
    }
    return { ...refuse(FORBIDDEN_BY_POLICY, route, check), callId };
  }

  /** `done` sees every verdict once (decision log, metrics) and returns it. */
  type Done = (verdict: Verdict) => Verdict;

  function afterIdentity(req: ForwardedRequest, who: Identity, done: Done): Verdict | Promise<Verdict> {
    let route = "-";
    try {
      const mapping = mapper.map(req, who);
      route = mapping.route;
      if (mapping.kind === "deny") return done(refuse(FORBIDDEN_BY_ROUTE, route));
      const check: Check = {
        principal: who.principal,
        resource: mapping.resource,
        action: mapping.action,
        token: who.forwardedToken || undefined,
      };
      const decided = checker(check, { cacheable: mapping.cacheable, expiresAt: who.expiresAt, resourceKey: mapping.resourceKey });
      const { shadow } = mapping;
      const r = route;
      if (decided instanceof Promise) {
        return decided.then(
          (d) => done(verdictOf(req, who, r, shadow, check, d)),
          (e: unknown) => done(refuse(e, r, check)),
        );
      }
      return done(verdictOf(req, who, route, shadow, check, decided));
    } catch (error) {
      return done(refuse(error, route));
    }
  }

  function run(headers: HeaderList, done: Done): Verdict | Promise<Verdict> {
    try {
      const req = rebuildRequest(headers, rebuild);
      const who = identity.resolve(req);
      if (who instanceof Promise) {
        return who.then(
          (w) => afterIdentity(req, w, done),
          (e: unknown) => done(refuse(e, "-")),
        );
      }
      return afterIdentity(req, who, done);
    } catch (error) {
      return done(refuse(error, "-"));
    }
  }

  if (!onDecision) {
    const same: Done = (v) => v;
    return (headers) => run(headers, same);
  }
  return (headers, requestId, started) =>
    run(headers, (verdict) => {
      onDecision(verdict, requestId, performance.now() - started);
      return verdict;
    });
}
