/**
 * The configuration schema (SPEC §4): every key, its default and its bounds, in one place.
 * Unknown keys are errors (`strictObject`). Durations are integer milliseconds in keys ending
 * in `Ms`. Templates are parsed here so an unknown variable is reported with its path.
 *
 * Keys of later features (cache, batch, identity.jwt, pdp.connections …) are added with the
 * feature: until then they are rejected rather than silently ignored.
 */
import { z } from "zod";
import { parseTemplate } from "../mapping/template.js";

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}$/, "expected host:port")
  .refine((s) => Number(s.slice(s.lastIndexOf(":") + 1)) <= 65535, "port must be 0–65535");

const template = z.string().superRefine((s, ctx) => {
  const parsed = parseTemplate(s);
  if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.error });
});

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
    if (p.embedded && p.tls !== false) {
      ctx.addIssue({ code: "custom", path: ["tls"], message: "tls does not apply to the embedded PDP (unix socket)" });
    }
  });

const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "expected an HTTP header name");

const attrValue: z.ZodType = z.lazy(() =>
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
  });

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
    pdp,
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
      .default({ headers: {} }),
    log: z
      .strictObject({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
        decisions: z.enum(["none", "deny", "all"]).default("deny"),
      })
      .default({ level: "info", decisions: "deny" }),
  })
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.routes.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: "custom", path: ["routes", i, "name"], message: `duplicate route name "${r.name}"` });
      seen.add(r.name);
    });
    const own = new Set<string>();
    for (const name of Object.keys(c.response.headers)) {
      const norm = normalizeHeaderName(name);
      if (own.has(norm)) ctx.addIssue({ code: "custom", path: ["response", "headers", name], message: "two response headers with the same name" });
      own.add(norm);
    }
  });

/** Lower-case with `_` and `.` read as `-`: the spelling-insensitive form used to refuse planted identity headers. */
export function normalizeHeaderName(name: string): string {
  return name.toLowerCase().replace(/[_.]/g, "-");
}

export type Config = z.output<typeof configSchema>;
export type RouteConfig = Config["routes"][number];
export type TlsConfig = Config["pdp"]["tls"];
