/**
 * The configuration schema (SPEC §4): every key, its default and its bounds, in one place.
 * Unknown keys are errors (`strictObject`). Durations are integer milliseconds in keys ending
 * in `Ms`. Templates are parsed here so an unknown variable is reported with its path.
 *
 * A key is added together with the behaviour it configures: a key the service does not act on
 * is rejected, never silently ignored.
 */
import { z } from "zod";
import { parsePathPattern } from "../mapping/routes.js";
import { parseTemplate } from "../mapping/template.js";
import type { AttrValue } from "../model.js";

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}$/, "expected host:port")
  // Only judges a port that is there: a value without one is already reported by the regex.
  .refine((s) => !/:\d+$/.test(s) || Number(s.slice(s.lastIndexOf(":") + 1)) <= 65535, "port must be 0–65535");

const template = z.string().superRefine((s, ctx) => {
  const parsed = parseTemplate(s);
  if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.error });
});

/**
 * Options for cross-field checks. zod skips a plain refinement as soon as any field below it has
 * a problem, which would hide e.g. duplicate route names behind an unrelated typo; with `when`
 * the check runs anyway, so every problem is reported at once. Such a check therefore sees
 * unvalidated input (any field may be missing or of the wrong type) and must guard every read.
 */
const evenWithOtherProblems = { when: (payload: { value: unknown }) => isRecord(payload.value) };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Every `{params.NAME}` in the route's templates must name a parameter of its path (`:NAME`, or
 * `*` for a final wildcard) — anything else would always render "" — so it is an unknown
 * variable, reported here with the template's path together with every other schema problem.
 * The path is read by the route table's own parser (a malformed path is reported by the mapper).
 */
function checkParamVariables(route: Record<string, unknown>, ctx: z.core.$RefinementCtx<unknown>): void {
  const path = typeof route["path"] === "string" ? route["path"] : undefined;
  const pattern = parsePathPattern(path, false);
  if (typeof pattern === "string") return;
  const params = new Set(pattern.params);
  const declared = pattern.params.map((p) => (p === "*" ? "*" : `:${p}`)).join(", ");
  const hint = path === undefined ? "the route has no path" : declared ? `path "${path}" has ${declared}` : `path "${path}" has no parameters`;
  const visit = (value: unknown, at: (string | number)[]): void => {
    if (typeof value === "string") {
      const parsed = parseTemplate(value);
      if (!parsed.ok) return; // reported by the template schema itself
      for (const v of parsed.variables) {
        if (v.startsWith("params.") && !params.has(v.slice("params.".length))) {
          ctx.addIssue({ code: "custom", path: at, message: `unknown template variable "{${v}}" (${hint})` });
        }
      }
    } else if (Array.isArray(value)) {
      value.forEach((item, i) => visit(item, [...at, i]));
    } else if (isRecord(value)) {
      for (const [k, item] of Object.entries(value)) visit(item, [...at, k]);
    }
  };
  const resource = route["resource"];
  if (isRecord(resource)) {
    for (const key of ["kind", "id", "scope", "policyVersion", "attr"]) visit(resource[key], ["resource", key]);
  }
  visit(route["action"], ["action"]);
}

const ms = (def: number, min = 1, max = 600_000) => z.number().int().min(min).max(max).default(def);

const METHOD = /^[A-Z][A-Z0-9!#$%&'*+.^_`|~-]*$/;

const tlsFiles = z.strictObject({
  ca: z.string().optional(),
  cert: z.string().optional(),
  key: z.string().optional(),
  serverName: z.string().optional(),
});

const pdp = z
  .strictObject({
    address: z.string().min(1).optional(),
    embedded: z
      .strictObject({
        policies: z.string().min(1),
        config: z.string().min(1).optional(),
      })
      .optional(),
    tls: z.union([z.literal(false), z.literal(true), tlsFiles]).default(false),
    timeoutMs: ms(250, 1, 60_000),
    /** gRPC connections in the pool, each its own HTTP/2 connection. */
    connections: z.number().int().min(1).max(64).default(2),
    /** Checks waiting or in flight; beyond it new checks answer 503 at once. */
    maxPendingChecks: z.number().int().min(1).max(10_000_000).default(10_000),
    /** Keep equal to the PDP's server.requestLimits.maxResourcesPerRequest. */
    maxResourcesPerRequest: z.number().int().min(1).max(10_000).default(50),
    /** Keep equal to the PDP's server.requestLimits.maxActionsPerResource. */
    maxActionsPerResource: z.number().int().min(1).max(10_000).default(50),
    /** auto: CheckResources for one principal, AuthZEN batches across principals. */
    protocol: z.enum(["auto", "checkresources", "authzen"]).default("auto"),
  })
  .superRefine((p, ctx) => {
    if ((p.address === undefined) === (p.embedded === undefined)) {
      ctx.addIssue({ code: "custom", message: "exactly one of pdp.address and pdp.embedded is required" });
    }
    if (p.embedded !== undefined && p.tls !== undefined && p.tls !== false) {
      ctx.addIssue({ code: "custom", path: ["tls"], message: "tls does not apply to the embedded PDP (unix socket)" });
    }
  }, evenWithOtherProblems);

const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "expected an HTTP header name");

const attrValue: z.ZodType<AttrValue> = z.lazy(() =>
  z.union([template, z.number(), z.boolean(), z.null(), z.array(attrValue), z.record(z.string(), attrValue)]),
);

const route = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "1–64 characters of [A-Za-z0-9_.:-]"),
    hosts: z
      .array(
        z
          .string()
          .regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/, "expected a lower-case host name, optionally starting with *."),
      )
      .min(1)
      .optional(),
    path: z
      .string()
      .startsWith("/", "must start with /")
      .optional(),
    methods: z.array(z.string().regex(METHOD, "expected an upper-case method token")).min(1).optional(),
    resource: z.strictObject({
      kind: template,
      id: template,
      attr: z.record(z.string(), attrValue).default({}),
      scope: template.optional(),
      policyVersion: template.optional(),
    }),
    action: template.optional(),
    actions: z.record(z.string().regex(METHOD, "expected an upper-case method token"), z.string().min(1)).optional(),
    shadow: z.boolean().default(false),
    /** false: never cache this route's decisions. */
    cache: z.boolean().default(true),
  })
  .superRefine((r, ctx) => {
    if ((r.action === undefined) === (r.actions === undefined)) {
      ctx.addIssue({ code: "custom", message: "exactly one of action and actions is required" });
    }
    checkParamVariables(r, ctx);
  }, evenWithOtherProblems);

const trustedHeaders = z.strictObject({
  id: headerName,
  roles: headerName.optional(),
  attr: z.record(z.string(), headerName).default({}),
});

const anonymous = z.strictObject({
  id: z.string().min(1),
  roles: z.array(z.string().min(1)).min(1),
  attr: z.record(z.string(), attrValue).default({}),
});

/**
 * identity.jwt (SPEC §4, §5.3 point 1). Cross-field rules are checked in `checkJwt`.
 * Algorithms: asymmetric ones verify against the key set (jwksUrl or jwksFile); HS* only against
 * `hmacSecret`, never against a key from the key set. "none" is never accepted.
 */
export const JWT_ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"] as const;
export const JWT_HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"] as const;
const JWT_ALGORITHMS: readonly string[] = [...JWT_ASYMMETRIC_ALGORITHMS, ...JWT_HMAC_ALGORITHMS];
export type JwtAlgorithm = (typeof JWT_ASYMMETRIC_ALGORITHMS)[number] | (typeof JWT_HMAC_ALGORITHMS)[number];

const jwtAlgorithm = z.string().superRefine((alg, ctx) => {
  if (alg.toLowerCase() === "none") ctx.addIssue({ code: "custom", message: `"none" is never accepted` });
  else if (!JWT_ALGORITHMS.includes(alg)) ctx.addIssue({ code: "custom", message: `unsupported algorithm ${JSON.stringify(alg)} (one of ${JWT_ALGORITHMS.join(", ")})` });
}).transform((alg) => alg as JwtAlgorithm);

/** A claim path: dots for nesting (realm_access.roles), or a whole top-level name (https://example.com/roles). */
const claimPath = z.string().min(1).max(256);
const stringOrList = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

const jwt = z
  .strictObject({
    header: headerName.optional(),
    cookie: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "expected a cookie name").optional(),
    jwksUrl: z.string().optional(),
    jwksFile: z.string().min(1).optional(),
    jwksCa: z.string().min(1).optional(),
    hmacSecret: z.string().min(32, "must have at least 32 characters").optional(),
    issuer: stringOrList.optional(),
    audience: stringOrList.optional(),
    algorithms: z.array(jwtAlgorithm).min(1),
    clockToleranceSec: z.number().int().min(0).max(300).default(30),
    /** Expected "typ" header (e.g. "at+jwt" for RFC 9068 access tokens); not checked when absent. */
    typ: z.string().min(1).optional(),
    principal: z
      .strictObject({
        id: claimPath.default("sub"),
        roles: claimPath.default("roles"),
        /** Used when the token carries no roles; without it such a token is refused (401). */
        defaultRoles: z.array(z.string().min(1)).min(1).optional(),
        /** A list of claim paths (principal.attr key = the path as written) or a map attr name → claim path. */
        attr: z.union([z.array(claimPath), z.record(z.string().min(1), claimPath)]).default([]),
      })
      .prefault({}),
    forwardToken: z.boolean().default(false),
    jwksTimeoutMs: ms(2000, 1, 30_000),
    jwksRefreshIntervalMs: ms(300_000, 30_000, 86_400_000),
    /** Verified tokens kept (keyed by the whole token, never beyond exp); 0 disables. */
    tokenCacheEntries: z.number().int().min(0).max(1_000_000).default(10_000),
  })
  .superRefine(checkJwt, evenWithOtherProblems);

function checkJwt(j: Record<string, unknown>, ctx: z.core.$RefinementCtx<unknown>): void {
  // Guarded reads: this runs even when other fields have problems (see evenWithOtherProblems).
  if (j["header"] !== undefined && j["cookie"] !== undefined) {
    ctx.addIssue({ code: "custom", message: "at most one of header and cookie (the default is the Authorization header)" });
  }
  const algs = Array.isArray(j["algorithms"]) ? j["algorithms"].filter((a): a is string => typeof a === "string") : [];
  const hmac = algs.filter((a) => (JWT_HMAC_ALGORITHMS as readonly string[]).includes(a));
  const asymmetric = algs.filter((a) => (JWT_ASYMMETRIC_ALGORITHMS as readonly string[]).includes(a));
  // "What is not listed" is only judged on a list without its own problems.
  const listIsValid = algs.length > 0 && algs.every((a) => JWT_ALGORITHMS.includes(a));
  const url = j["jwksUrl"];
  const file = j["jwksFile"];
  if (url !== undefined && file !== undefined) ctx.addIssue({ code: "custom", message: "at most one of jwksUrl and jwksFile" });
  if (asymmetric.length > 0 && url === undefined && file === undefined) {
    ctx.addIssue({ code: "custom", message: `algorithms ${asymmetric.join(", ")} need a key set: jwksUrl or jwksFile` });
  }
  if (asymmetric.length === 0 && listIsValid) {
    if (url !== undefined) ctx.addIssue({ code: "custom", path: ["jwksUrl"], message: "no asymmetric algorithm is listed, so the key set would never be used" });
    if (file !== undefined) ctx.addIssue({ code: "custom", path: ["jwksFile"], message: "no asymmetric algorithm is listed, so the key set would never be used" });
  }
  if (hmac.length > 0 && j["hmacSecret"] === undefined) {
    ctx.addIssue({ code: "custom", path: ["hmacSecret"], message: `algorithms ${hmac.join(", ")} need an explicit hmacSecret` });
  }
  if (hmac.length === 0 && j["hmacSecret"] !== undefined && listIsValid) {
    ctx.addIssue({ code: "custom", path: ["hmacSecret"], message: "hmacSecret is set but no HS* algorithm is listed" });
  }
  if (typeof url === "string") {
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      ctx.addIssue({ code: "custom", path: ["jwksUrl"], message: "expected an http:// or https:// URL" });
    }
    if (parsed) {
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") ctx.addIssue({ code: "custom", path: ["jwksUrl"], message: "expected an http:// or https:// URL" });
      if (parsed.username !== "" || parsed.password !== "") ctx.addIssue({ code: "custom", path: ["jwksUrl"], message: "credentials in the URL are not supported" });
      if (parsed.hash !== "") ctx.addIssue({ code: "custom", path: ["jwksUrl"], message: "a URL fragment is not allowed" });
      if (j["jwksCa"] !== undefined && parsed.protocol !== "https:") ctx.addIssue({ code: "custom", path: ["jwksCa"], message: "jwksCa needs an https:// jwksUrl" });
    }
  } else if (j["jwksCa"] !== undefined) {
    ctx.addIssue({ code: "custom", path: ["jwksCa"], message: "jwksCa needs an https:// jwksUrl" });
  }
  const algList = Array.isArray(j["algorithms"]) ? j["algorithms"] : [];
  if (new Set(algList).size !== algList.length) ctx.addIssue({ code: "custom", path: ["algorithms"], message: "an algorithm is listed twice" });
}

export const configSchema = z
  .strictObject({
    listen: hostPort.default("127.0.0.1:8080"),
    admin: z.strictObject({ listen: hostPort.default("127.0.0.1:9090") }).default({ listen: "127.0.0.1:9090" }),
    // Missing `pdp` is reported by its own check ("exactly one of pdp.address and pdp.embedded").
    pdp: pdp.prefault({}),
    identity: z
      .strictObject({
        jwt: jwt.optional(),
        trustedHeaders: trustedHeaders.optional(),
        anonymous: anonymous.optional(),
      })
      .default({}),
    routes: z.array(route).default([]),
    unmatched: z.enum(["generic", "deny"]).default("generic"),
    paths: z
      .strictObject({
        mergeSlashes: z.boolean().default(false),
        stripMatrixParams: z.boolean().default(false),
        caseInsensitive: z.boolean().default(false),
      })
      .default({ mergeSlashes: false, stripMatrixParams: false, caseInsensitive: false }),
    response: z
      .strictObject({
        headers: z.record(headerName, template).default({}),
      })
      // prefault, not default: zod shallow-copies a default, so a nested `{}` would be one object
      // shared by every parsed (and deep-frozen) config.
      .prefault({}),
    batch: z
      .strictObject({
        /** 0: flush at the end of the current event-loop turn; otherwise wait up to this long for more checks. */
        maxDelayMs: z.number().int().min(0).max(1000).default(0),
        /**
         * PDP calls in flight before a partial batch waits for one to settle (0: no limit).
         * Full calls (maxResourcesPerRequest checks) never wait, and nothing waits more than 5 ms. 2 measured best on the 2-core
         * benchmark machine (about 10 % more misses/s than 4, batches of ~15 instead of ~12).
         */
        maxCallsInFlight: z.number().int().min(0).max(10_000).default(2),
      })
      .prefault({}),
    cache: z
      .strictObject({
        /** Decisions kept; 0 disables the cache. */
        maxEntries: z.number().int().min(0).max(10_000_000).default(100_000),
        allowTtlMs: z.number().int().min(0).max(86_400_000).default(10_000),
        denyTtlMs: z.number().int().min(0).max(86_400_000).default(2_000),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
        decisions: z.enum(["none", "deny", "all"]).default("deny"),
      })
      .default({ level: "info", decisions: "deny" }),
  })
  .superRefine((c, ctx) => {
    // Guarded reads: this runs even when other fields have problems (see evenWithOtherProblems).
    const seen = new Set<string>();
    const routes: unknown = c.routes;
    if (Array.isArray(routes)) {
      routes.forEach((r: unknown, i) => {
        const name = isRecord(r) ? r["name"] : undefined;
        if (typeof name !== "string") return;
        if (seen.has(name)) ctx.addIssue({ code: "custom", path: ["routes", i, "name"], message: `duplicate route name "${name}"` });
        seen.add(name);
      });
    }
    const own = new Set<string>();
    const response: unknown = c.response;
    const headers = isRecord(response) ? response["headers"] : undefined;
    for (const name of isRecord(headers) ? Object.keys(headers) : []) {
      const norm = normalizeHeaderName(name);
      if (own.has(norm)) ctx.addIssue({ code: "custom", path: ["response", "headers", name], message: "two response headers with the same name" });
      own.add(norm);
    }
  }, evenWithOtherProblems);

/**
 * Lower-case with every character other than a letter or digit read as `-`: the spelling-insensitive
 * form used to refuse planted identity headers (`X_Auth_Principal`, `X.Auth.Principal`,
 * `X~Auth~Principal` … all name `x-auth-principal` for a backend that maps headers to variables).
 */
export function normalizeHeaderName(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]/g, "-");
}

export type Config = z.output<typeof configSchema>;
export type RouteConfig = Config["routes"][number];
export type TlsConfig = Config["pdp"]["tls"];
