/**
 * Identity from a verified JWT (SPEC §4 `identity.jwt`, §5.3 point 1).
 *
 * Token source — exactly one: the `header` (default `Authorization`) or a `cookie`.
 * - Authorization: `Bearer <token>`, the scheme case-insensitive, one or more spaces. Another
 *   scheme (`Basic …`) is not a bearer token: the next identity source applies. `Bearer` with
 *   nothing after it is a presented-but-invalid token (401).
 * - Any other configured header: `Bearer <token>` or the bare token.
 * - Repeated header lines reach us joined with ", " and a JWT never contains a comma, so a comma
 *   in the value means two values (`Bearer a, Bearer b`) → 400.
 * - Cookie: the named cookie; the same name twice → 400; an empty value counts as absent
 *   (logout cookies); surrounding double quotes are removed.
 * - No token → `undefined`: the next identity source (trusted headers, anonymous, else 401).
 *
 * Verification — any failure is 401 `invalid_token` and never falls back to another source:
 * - Before any parsing: over 8 KiB → 401; 5 segments (JWE) → 401; anything but three non-empty
 *   base64url segments → 401 (so `alg: none`'s empty signature is refused here already).
 * - jose `jwtVerify` with the configured `algorithms` allow-list (checked before any key is
 *   looked up), `requiredClaims: ["exp"]`, `iss`, `aud`, `nbf`, `clockToleranceSec`, and `typ`
 *   when configured; an unknown `crit` extension is refused by jose.
 * - The key comes only from our resolver: tokens carrying `jku`, `x5u`, `jwk` or `x5c` header
 *   parameters are refused outright (jose never follows them, but no legitimate token from a
 *   configured issuer needs them, and refusing removes any doubt); HS* uses `hmacSecret` only,
 *   never a key of the key set; asymmetric algorithms use the key set only.
 * - Key set never loaded (JWKS endpoint down since start) → 503 `unavailable`, not 401.
 *
 * Claims → principal:
 * - A claim path is read as nested keys split on dots (`realm_access.roles`), or as one top-level
 *   name (`https://example.com/roles`, Auth0-style). When both readings find a value the token is
 *   ambiguous → 401.
 * - `id` must be a non-empty string → else 401.
 * - `roles`: a string (one role) or a list of strings (empty strings dropped, order kept); a
 *   list holding anything else → 401; no roles → `defaultRoles` when configured, else 401.
 * - `attr`: a list of claim paths (principal.attr key = the path as written) or a map
 *   attr name → claim path; claims that are absent are left out; values are passed as they are.
 *
 * Verified identities are cached by the whole token string (bounded LRU, TTL until `exp`, never
 * beyond; emptied when the key set changes), so a hot token is verified once; concurrent requests
 * with the same uncached token share one verification.
 */
import { readFileSync } from "node:fs";
import { errors, jwtVerify, type CryptoKey, type JWTPayload, type JWTVerifyOptions } from "jose";
import { LRUCache } from "lru-cache";
import { freezePrincipal } from "../canonical-keys.js";
import { JWT_HMAC_ALGORITHMS, type Config } from "../config/schema.js";
import { Refusal } from "../errors.js";
import { claimValue } from "../mapping/template.js";
import type { AttrValue, ForwardedRequest, Identity, Principal } from "../model.js";
import { fileKeySet, httpJwksFetch, KeysUnavailable, RemoteKeySet, type JwksLog, type KeyResolver, type KeySet } from "./jwks.js";

export type JwtConfig = NonNullable<Config["identity"]["jwt"]>;

/** Tokens longer than this (bytes; a valid token is ASCII) are refused before parsing. */
export const MAX_TOKEN_BYTES = 8192;
/** Bound on the memory of the verified-token cache (estimated from token lengths). */
const TOKEN_CACHE_MAX_BYTES = 32 * 1024 * 1024;
const FORBIDDEN_HEADER_PARAMS = ["jku", "x5u", "jwk", "x5c"] as const;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

export interface JwtSource {
  /** The identity, a Refusal (thrown or rejected), or undefined when no token was presented. */
  resolve(req: ForwardedRequest): Identity | Promise<Identity> | undefined;
  ready(): boolean;
  whenReady(): Promise<void>;
  close(): void;
  readonly stats: JwtStats;
}

export interface JwtStats {
  /** Full verifications run (cache misses that reached jose). */
  verifications: number;
  cacheHits: number;
}

export interface JwtSourceOptions {
  readonly log?: JwksLog;
  /** Replaces the key set built from the config (tests). */
  readonly keySet?: KeySet;
  /** Wall clock in epoch milliseconds (tests); default Date.now. */
  readonly now?: () => number;
}

export function createJwtSource(cfg: JwtConfig, opts: JwtSourceOptions = {}): JwtSource {
  const extract = tokenExtractor(cfg);
  const now = opts.now ?? Date.now;
  const stats: JwtStats = { verifications: 0, cacheHits: 0 };

  const cache =
    cfg.tokenCacheEntries > 0
      ? new LRUCache<string, Identity>({
          max: cfg.tokenCacheEntries,
          maxSize: TOKEN_CACHE_MAX_BYTES,
          sizeCalculation: (_v, token) => token.length + 512,
        })
      : undefined;

  const keySet = opts.keySet ?? buildKeySet(cfg, opts.log, () => cache?.clear());
  const hmacAlgs = new Set<string>(JWT_HMAC_ALGORITHMS);
  const hmacKey = cfg.hmacSecret !== undefined ? new TextEncoder().encode(cfg.hmacSecret) : undefined;

  const getKey = async (header: Parameters<KeyResolver>[0], token: Parameters<KeyResolver>[1]): Promise<CryptoKey | Uint8Array> => {
    for (const p of FORBIDDEN_HEADER_PARAMS) {
      if (Object.hasOwn(header, p)) throw new TokenRefused(`"${p}" header parameter is not accepted`);
    }
    // jose has already checked alg against the allow-list.
    if (hmacAlgs.has(header.alg ?? "")) {
      if (!hmacKey) throw new TokenRefused("no HMAC secret");
      return hmacKey;
    }
    if (!keySet) throw new TokenRefused("no key set");
    return keySet.getKey(header, token);
  };

  const verifyOptions: JWTVerifyOptions = {
    algorithms: [...cfg.algorithms],
    requiredClaims: ["exp"],
    clockTolerance: cfg.clockToleranceSec,
    ...(cfg.typ !== undefined ? { typ: cfg.typ } : {}),
    ...(cfg.issuer !== undefined ? { issuer: typeof cfg.issuer === "string" ? cfg.issuer : [...cfg.issuer] } : {}),
    ...(cfg.audience !== undefined ? { audience: typeof cfg.audience === "string" ? cfg.audience : [...cfg.audience] } : {}),
  };
  const toIdentity = claimsMapper(cfg);
  const verifying = new Map<string, Promise<Identity>>();

  async function verify(token: string): Promise<Identity> {
    stats.verifications++;
    let payload: JWTPayload;
    try {
      const options = opts.now ? { ...verifyOptions, currentDate: new Date(now()) } : verifyOptions;
      ({ payload } = await jwtVerify(token, getKey, options));
    } catch (error) {
      if (error instanceof KeysUnavailable) throw new Refusal("unavailable", "JWT key set not loaded yet");
      throw new Refusal("invalid_token", `invalid token: ${describe(error)}`);
    }
    const identity = toIdentity(deepFreeze(payload), token);
    if (cache) {
      const ttl = (payload.exp as number) * 1000 - now();
      if (ttl >= 1) cache.set(token, identity, { ttl: Math.floor(ttl) });
    }
    return identity;
  }

  return {
    stats,
    resolve(req) {
      const token = extract(req);
      if (token === undefined) return undefined;
      if (token.length > MAX_TOKEN_BYTES) throw new Refusal("invalid_token", `token over ${MAX_TOKEN_BYTES} bytes`);
      const hit = cache?.get(token);
      if (hit && hit.expiresAt! * 1000 > now()) {
        stats.cacheHits++;
        return hit;
      }
      if (!COMPACT_JWS.test(token)) {
        const segments = token.split(".").length;
        throw new Refusal("invalid_token", segments === 5 ? "JWE tokens are not accepted" : "malformed token (expected three base64url segments)");
      }
      // Concurrent requests with the same not-yet-cached token share one verification.
      let pending = verifying.get(token);
      if (!pending) {
        pending = verify(token).finally(() => verifying.delete(token));
        verifying.set(token, pending);
      }
      return pending;
    },
    ready: () => keySet?.ready() ?? true,
    whenReady: () => keySet?.whenReady() ?? Promise.resolve(),
    close() {
      keySet?.close();
      cache?.clear();
    },
  };
}

/** Refused by our own checks inside the key resolver (jose passes the error through). */
class TokenRefused extends Error {
  override name = "TokenRefused";
}

function describe(error: unknown): string {
  if (error instanceof errors.JOSEError) return `${error.code}: ${error.message}`;
  if (error instanceof TokenRefused) return error.message;
  return `${(error as Error)?.name ?? "Error"}: ${(error as Error)?.message ?? String(error)}`;
}

function buildKeySet(cfg: JwtConfig, log: JwksLog | undefined, onChange: () => void): KeySet | undefined {
  if (cfg.jwksFile !== undefined) return fileKeySet(cfg.jwksFile);
  if (cfg.jwksUrl === undefined) return undefined;
  let ca: string | undefined;
  if (cfg.jwksCa !== undefined) {
    try {
      ca = readFileSync(cfg.jwksCa, "utf8");
    } catch (error) {
      throw new Error(`cannot read jwksCa ${JSON.stringify(cfg.jwksCa)}: ${(error as Error).message}`);
    }
  }
  const http = httpJwksFetch(cfg.jwksUrl, { timeoutMs: cfg.jwksTimeoutMs, ...(ca !== undefined ? { ca } : {}) });
  return new RemoteKeySet({
    url: cfg.jwksUrl,
    fetch: http.fetch,
    abort: http.abort,
    refreshIntervalMs: cfg.jwksRefreshIntervalMs,
    onChange,
    ...(log ? { log } : {}),
  });
}

// ── token extraction ───────────────────────────────────────────────────────────────────────

/** The token presented by the request per the config; undefined when none. Throws 400/401 Refusals. */
export function tokenExtractor(cfg: Pick<JwtConfig, "header" | "cookie">): (req: ForwardedRequest) => string | undefined {
  if (cfg.cookie !== undefined) {
    const name = cfg.cookie;
    return (req) => cookieToken(req.headers.get("cookie"), name);
  }
  const header = (cfg.header ?? "Authorization").toLowerCase();
  const schemeRequired = header === "authorization";
  return (req) => headerToken(req.headers.get(header), schemeRequired);
}

/** `Bearer <token>` (scheme required for Authorization, optional elsewhere). */
export function headerToken(value: string | undefined, schemeRequired: boolean): string | undefined {
  if (value === undefined || value === "") return undefined;
  if (value.includes(",")) throw new Refusal("bad_request", "more than one bearer credential");
  let token = value;
  const space = value.indexOf(" ");
  const scheme = space < 0 ? value : value.slice(0, space);
  if (scheme.toLowerCase() === "bearer") {
    token = space < 0 ? "" : value.slice(space + 1).replace(/^ +/, "");
  } else if (schemeRequired) {
    return undefined; // another scheme (Basic …): not a bearer token, the next source applies
  }
  if (token === "") throw new Refusal("invalid_token", "empty bearer token");
  if (/\s/.test(token)) throw new Refusal("invalid_token", "malformed bearer credential");
  return token;
}

/** The value of cookie `name` in a Cookie header (lines joined with "; "). */
export function cookieToken(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header === "") return undefined;
  let found: string | undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    if (found !== undefined) throw new Refusal("bad_request", `cookie ${name} sent more than once`);
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    found = value;
  }
  return found === "" ? undefined : found;
}

// ── claims → principal ─────────────────────────────────────────────────────────────────────

type Claims = Readonly<Record<string, unknown>>;

/** Reads a claim path: nested on dots, or the whole path as one top-level name; both → ambiguous. */
export function claimReader(path: string): (claims: Claims) => unknown {
  if (!path.includes(".")) return (claims) => (Object.hasOwn(claims, path) ? claims[path] : undefined);
  const segments = path.split(".");
  return (claims) => {
    const nested = claimValue(claims, segments);
    const literal = Object.hasOwn(claims, path) ? claims[path] : undefined;
    if (nested !== undefined && literal !== undefined) throw new Refusal("invalid_token", `claim path "${path}" is ambiguous in this token`);
    return nested !== undefined ? nested : literal;
  };
}

export function claimsMapper(cfg: Pick<JwtConfig, "principal" | "forwardToken">): (claims: Claims, token: string) => Identity {
  const p = cfg.principal;
  const readId = claimReader(p.id);
  const readRoles = claimReader(p.roles);
  const attrs: Array<readonly [string, (c: Claims) => unknown]> = Array.isArray(p.attr)
    ? (p.attr as readonly string[]).map((path) => [path, claimReader(path)] as const)
    : Object.entries(p.attr as Readonly<Record<string, string>>).map(([name, path]) => [name, claimReader(path)] as const);
  const defaultRoles = p.defaultRoles ? Object.freeze([...p.defaultRoles]) : undefined;

  return (claims, token) => {
    const id = readId(claims);
    if (typeof id !== "string" || id === "") throw new Refusal("invalid_token", `token has no usable "${p.id}" claim for the principal id`);
    let roles = rolesOf(readRoles(claims), p.roles);
    if (roles.length === 0) {
      if (!defaultRoles) throw new Refusal("invalid_token", `token carries no roles in "${p.roles}"`);
      roles = defaultRoles;
    }
    const attr: Record<string, AttrValue> = {};
    for (const [name, read] of attrs) {
      const v = read(claims);
      if (v !== undefined) attr[name] = v as AttrValue;
    }
    const principal: Principal = freezePrincipal({ id, roles, attr });
    return Object.freeze({
      principal,
      claims,
      expiresAt: claims["exp"] as number,
      ...(cfg.forwardToken ? { forwardedToken: token } : {}),
    });
  };
}

function rolesOf(v: unknown, path: string): readonly string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return v === "" ? [] : [v];
  if (Array.isArray(v)) {
    if (!v.every((r) => typeof r === "string")) throw new Refusal("invalid_token", `roles claim "${path}" holds a non-string`);
    return v.filter((r: string) => r !== "");
  }
  throw new Refusal("invalid_token", `roles claim "${path}" is neither a string nor a list of strings`);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
