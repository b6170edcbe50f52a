/**
 * The configuration schema (SPEC §4): every key, its default and its bounds, in one place.
 * Unknown keys are errors (`strictObject`). Durations are integer milliseconds in keys ending
 * in `Ms`. Templates are parsed here so an unknown variable is reported with its path.
 *
 * Keys of later features (cache, batch, identity.jwt, pdp.connections …) are added with the
 * feature: until then they are rejected rather than silently ignored.
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

export const configSchema = z
  .strictObject({
    listen: hostPort.default("127.0.0.1:8080"),
    admin: z.strictObject({ listen: hostPort.default("127.0.0.1:9090") }).default({ listen: "127.0.0.1:9090" }),
    // Missing `pdp` is reported by its own check ("exactly one of pdp.address and pdp.embedded").
    pdp: pdp.prefault({}),
    identity: z
      .strictObject({
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

/** Lower-case with `_` and `.` read as `-`: the spelling-insensitive form used to refuse planted identity headers. */
export function normalizeHeaderName(name: string): string {
  return name.toLowerCase().replace(/[_.]/g, "-");
}

export type Config = z.output<typeof configSchema>;
export type RouteConfig = Config["routes"][number];
export type TlsConfig = Config["pdp"]["tls"];
