/**
 * Who is calling (SPEC §5.3): the first source that applies —
 *   1. a JWT, when `identity.jwt` is configured and the request presents a token (a presented but
 *      invalid token is 401 and never falls through to the next source);
 *   2. trusted headers, when configured;
 *   3. the anonymous principal, when configured;
 *   otherwise 401 with `WWW-Authenticate: Bearer`.
 */
import { freezePrincipal } from "../canonical-keys.js";
import type { Config } from "../config/schema.js";
import { Refusal } from "../errors.js";
import type { ForwardedRequest, Identity } from "../model.js";
import type { JwksLog } from "./jwks.js";
import { createJwtSource, type JwtSourceOptions } from "./jwt.js";
import { trustedHeadersSource } from "./trusted-headers.js";

export interface IdentityResolver {
  /** The caller's identity; throws (or rejects with) a Refusal (400/401/503). */
  resolve(req: ForwardedRequest): Identity | Promise<Identity>;
  /** False while a configured identity source cannot work yet (e.g. no key set ever loaded). */
  ready(): boolean;
  /**
   * Resolves once ready() is true (e.g. to hold a config reload until the new key set loaded).
   * Optional so that test doubles need not implement it.
   */
  whenReady?(): Promise<void>;
  close(): void;
}

/** A pino-style logger (only the methods used). */
interface LoggerLike {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface IdentityOptions {
  /** Receives key-set events (loaded, changed, fetch failures), tagged component "jwks". */
  readonly logger?: LoggerLike;
  /** Test hooks for the JWT source. */
  readonly jwt?: Omit<JwtSourceOptions, "log">;
}

/**
 * Builds the resolver. Throws an Error when a configured file cannot be used (jwksFile, jwksCa);
 * a JWKS URL that does not answer is not an error here (the resolver starts not ready).
 */
export function createIdentityResolver(cfg: Config["identity"], opts: IdentityOptions = {}): IdentityResolver {
  const log: JwksLog | undefined = opts.logger ? (level, msg, fields) => opts.logger![level]({ component: "jwks", ...fields }, msg) : undefined;
  const jwt = cfg.jwt ? createJwtSource(cfg.jwt, { ...opts.jwt, ...(log ? { log } : {}) }) : undefined;
  const trusted = cfg.trustedHeaders ? trustedHeadersSource(cfg.trustedHeaders) : undefined;
  const anonymous: Identity | undefined = cfg.anonymous
    ? Object.freeze({ principal: freezePrincipal({ id: cfg.anonymous.id, roles: cfg.anonymous.roles, attr: cfg.anonymous.attr }) })
    : undefined;
  return {
    resolve(req) {
      if (jwt) {
        const fromToken = jwt.resolve(req);
        if (fromToken !== undefined) return fromToken;
      }
      const fromHeaders = trusted?.(req);
      if (fromHeaders) return fromHeaders;
      if (anonymous) return anonymous;
      throw new Refusal("unauthenticated", "no credentials");
    },
    ready: () => jwt?.ready() ?? true,
    whenReady: () => jwt?.whenReady() ?? Promise.resolve(),
    close() {
      jwt?.close();
    },
  };
}
