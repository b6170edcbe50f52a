/**
 * Mapping (SPEC §5.4): forwarded request + identity → the resource and action to ask the PDP
 * about, or a denial that needs no PDP. Everything is compiled when the config loads; `map()`
 * finds the route and renders precompiled templates.
 *
 * Decisions, in the order `map()` applies them:
 * - A route's `actions` map is consulted first: a method it does not name is
 *   `{ kind: "deny", route: name }` before anything is rendered (an unmapped method is a 403
 *   even when the resource id would render empty).
 * - `resource.kind` and `resource.id` that render empty are a 400 (`Refusal("bad_request")`);
 *   so is an `action` template that renders empty.
 * - `resource.attr`: strings are templates at any depth (inside lists and objects too, as the
 *   schema already validates them as templates). A string that renders "" is left out — a key
 *   of an object, or an element of a list — at every depth. Numbers, booleans and null are
 *   passed as they are. Values with no template variable are computed once at load and shared
 *   (frozen); an attr object with no variable at all is one frozen object for every request.
 * - `scope` / `policyVersion` are rendered and omitted when empty.
 * - `{params.NAME}` must name a parameter of the route's own path (":NAME", or "*" for the
 *   final wildcard): anything else would always render "" and is a config error.
 * - `cacheable` is the route's `cache` setting (true by default); the generic mapping is always cacheable.
 * - Generic mapping (`unmatched: generic`): kind "route", id = the canonical path, action = the
 *   method, attr = { method, host, path, scheme, ip, query } always with all six keys (ip ""
 *   when X-Forwarded-For is absent; query = name → string, or list when repeated). Route label
 *   "generic". With `unmatched: deny`: `{ kind: "deny", route: "unmatched" }`.
 */
import { genericResourceKey } from "../canonical-keys.js";
import type { AttrValue, Attributes, ForwardedRequest, Identity, Resource } from "../model.js";
import type { Config, RouteConfig } from "../config/schema.js";
import { ConfigError, Refusal } from "../errors.js";
import { parseTemplate, type TemplateContext } from "./template.js";
import { compileRouteTable, parsePathPattern, type PathPattern, type RouteEntry } from "./routes.js";

export type Mapping =
  | {
      readonly kind: "check";
      /** Metric label: the route name, or "generic". */
      readonly route: string;
      readonly resource: Resource;
      readonly action: string;
      /** Evaluate and record, but always allow. */
      readonly shadow: boolean;
      readonly cacheable: boolean;
      /** resourceKey(resource), when the mapping had it for less (the generic mapping). */
      readonly resourceKey?: string;
    }
  | {
      readonly kind: "deny";
      /** "unmatched" for `unmatched: deny`, or the route name when its actions map lacks the method. */
      readonly route: string;
    };

export interface Mapper {
  /** @throws Refusal bad_request when the resource kind/id or action renders empty. */
  map(req: ForwardedRequest, identity: Identity): Mapping;
}

type Render = (ctx: TemplateContext) => string;

interface CompiledRoute {
  readonly name: string;
  readonly kind: Render;
  readonly id: Render;
  readonly attr: (ctx: TemplateContext) => Attributes;
  readonly scope: Render | null;
  readonly policyVersion: Render | null;
  /** The `actions` map (method → action), or the compiled `action` template. */
  readonly action: ReadonlyMap<string, string> | Render;
  /** What an `actions` map answers for a method it does not name. */
  readonly denied: Mapping;
  readonly shadow: boolean;
  /** The route's `cache` setting. */
  readonly cacheable: boolean;
}

/**
 * Compiles the routes of a validated config.
 * @throws ConfigError listing every problem with its config path (routes[2].path: …).
 */
export function compileMapper(config: Config): Mapper {
  const problems: string[] = [];
  const entries: RouteEntry<CompiledRoute>[] = [];
  config.routes.forEach((r, i) => {
    const where = `routes[${i}]`;
    const pattern = parsePathPattern(r.path, config.paths.caseInsensitive);
    if (typeof pattern === "string") {
      problems.push(`${where}.path: ${pattern}`);
      return;
    }
    const compiled = compileRoute(r, where, pattern, problems);
    if (compiled) entries.push({ where, hosts: r.hosts, pattern, methods: r.methods, value: compiled });
  });
  const table = compileRouteTable(entries, problems);
  if (problems.length > 0) throw new ConfigError(problems);

  const generic = config.unmatched === "generic";
  return {
    map(req, identity) {
      const found = table.match(req.method, req.host, req.path);
      if (found === null) return generic ? genericMapping(req) : UNMATCHED;
      const route = found.value;
      const ctx: TemplateContext = { req, params: found.params, identity };
      let action: string | undefined;
      if (typeof route.action === "function") {
        action = route.action(ctx);
        if (action === "") throw new Refusal("bad_request", `route ${route.name}: action renders empty`);
      } else {
        action = route.action.get(req.method);
        if (action === undefined) return route.denied;
      }
      const kind = route.kind(ctx);
      if (kind === "") throw new Refusal("bad_request", `route ${route.name}: resource kind renders empty`);
      const id = route.id(ctx);
      if (id === "") throw new Refusal("bad_request", `route ${route.name}: resource id renders empty`);
      const resource: { kind: string; id: string; attr: Attributes; scope?: string; policyVersion?: string } = {
        kind,
        id,
        attr: route.attr(ctx),
      };
      if (route.scope !== null) {
        const scope = route.scope(ctx);
        if (scope !== "") resource.scope = scope;
      }
      if (route.policyVersion !== null) {
        const pv = route.policyVersion(ctx);
        if (pv !== "") resource.policyVersion = pv;
      }
      return { kind: "check", route: route.name, resource, action, shadow: route.shadow, cacheable: route.cacheable };
    },
  };
}

const UNMATCHED: Mapping = Object.freeze({ kind: "deny", route: "unmatched" });

function genericMapping(req: ForwardedRequest): Mapping {
  return {
    kind: "check",
    route: "generic",
    resource: {
      kind: "route",
      id: req.path,
      // In key order: the cache key then needs no sort (canonical-keys.ts).
      attr: { host: req.host, ip: req.ip, method: req.method, path: req.path, query: req.query, scheme: req.scheme },
    },
    action: req.method,
    shadow: false,
    cacheable: true,
    resourceKey: genericResourceKey(req),
  };
}

interface CompiledTemplate {
  readonly render: Render;
  /** True when the template has no variable: its value is known at load. */
  readonly constant: boolean;
}
type TemplateCompiler = (src: string, at: string) => CompiledTemplate;

function compileRoute(r: RouteConfig, where: string, pattern: PathPattern, problems: string[]): CompiledRoute | null {
  const before = problems.length;
  const template: TemplateCompiler = (src, at) => {
    const parsed = parseTemplate(src);
    if (!parsed.ok) {
      problems.push(`${where}.${at}: ${parsed.error}`);
      return { render: () => "", constant: true };
    }
    for (const v of parsed.variables) {
      if (v.startsWith("params.") && !pattern.params.includes(v.slice("params.".length))) {
        const declared = pattern.params.map((p) => (p === "*" ? "*" : `:${p}`)).join(", ") || "none";
        const of = r.path === undefined ? "this route (it has no path)" : `path "${r.path}"`;
        problems.push(`${where}.${at}: {${v}} is not a parameter of ${of} (parameters: ${declared})`);
      }
    }
    return { render: parsed.render, constant: parsed.variables.length === 0 };
  };

  const kind = template(r.resource.kind, "resource.kind").render;
  const id = template(r.resource.id, "resource.id").render;
  const attr = compileAttributes(r.resource.attr as Record<string, unknown>, (src, at) => template(src, `resource.attr${at}`));
  const scope = r.resource.scope === undefined ? null : template(r.resource.scope, "resource.scope").render;
  const policyVersion = r.resource.policyVersion === undefined ? null : template(r.resource.policyVersion, "resource.policyVersion").render;
  // The schema guarantees exactly one of action / actions.
  const action = r.actions !== undefined ? new Map(Object.entries(r.actions)) : template(r.action ?? "", "action").render;
  if (problems.length > before) return null;
  const denied: Mapping = Object.freeze({ kind: "deny", route: r.name });
  return { name: r.name, kind, id, attr, scope, policyVersion, action, denied, shadow: r.shadow, cacheable: r.cache };
}

// ---------------------------------------------------------------------------------------------
// Attributes

/** A compiled attr value: a constant, or a function returning the value or OMIT. */
type AttrRender =
  | { readonly constant: AttrValue | typeof OMIT }
  | { readonly render: (ctx: TemplateContext) => AttrValue | typeof OMIT };

/** Marks a value that rendered "" and is left out. */
const OMIT: unique symbol = Symbol("omit");

/** Stands in for the context when rendering a template without variables (it is never read). */
const NO_CTX = undefined as unknown as TemplateContext;

const EMPTY_ATTR: Attributes = Object.freeze({});

function compileAttributes(attr: Record<string, unknown>, template: TemplateCompiler): (ctx: TemplateContext) => Attributes {
  const compiled = compileObject(attr, "", template);
  if ("constant" in compiled) {
    const value = compiled.constant === OMIT ? EMPTY_ATTR : (compiled.constant as Attributes);
    return () => value;
  }
  return compiled.render as (ctx: TemplateContext) => Attributes;
}

function compileValue(v: unknown, at: string, template: TemplateCompiler): AttrRender {
  if (typeof v === "string") {
    const t = template(v, at);
    if (t.constant) {
      const s = t.render(NO_CTX);
      return { constant: s === "" ? OMIT : s };
    }
    const render = t.render;
    return {
      render: (ctx) => {
        const s = render(ctx);
        return s === "" ? OMIT : s;
      },
    };
  }
  if (v === null || typeof v === "number" || typeof v === "boolean") return { constant: v };
  if (Array.isArray(v)) return compileList(v, at, template);
  return compileObject(v as Record<string, unknown>, at, template);
}

function compileList(list: readonly unknown[], at: string, template: TemplateCompiler): AttrRender {
  const items = list.map((x, i) => compileValue(x, `${at}[${i}]`, template));
  if (items.every(isConstant)) {
    return { constant: Object.freeze(items.map((x) => x.constant).filter(notOmitted)) };
  }
  return {
    render: (ctx) => {
      const out: AttrValue[] = [];
      for (const item of items) {
        const v = "constant" in item ? item.constant : item.render(ctx);
        if (v !== OMIT) out.push(v);
      }
      return out;
    },
  };
}

function compileObject(obj: Record<string, unknown>, at: string, template: TemplateCompiler): AttrRender {
  const members = Object.entries(obj).map(([k, v]) => ({ key: k, value: compileValue(v, `${at}.${k}`, template) }));
  const build = (ctx: TemplateContext): Record<string, AttrValue> => {
    const out: Record<string, AttrValue> = {};
    for (const { key, value: m } of members) {
      const v = "constant" in m ? m.constant : m.render(ctx);
      if (v !== OMIT) setMember(out, key, v);
    }
    return out;
  };
  if (members.every((m) => isConstant(m.value))) return { constant: Object.freeze(build(NO_CTX)) };
  return { render: build };
}

function isConstant(r: AttrRender): r is { readonly constant: AttrValue | typeof OMIT } {
  return "constant" in r;
}

function notOmitted(v: AttrValue | typeof OMIT): v is AttrValue {
  return v !== OMIT;
}

/** Plain assignment, except for "__proto__", which must become an own property, not the prototype. */
function setMember(out: Record<string, AttrValue>, key: string, value: AttrValue): void {
  if (key === "__proto__") Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  else out[key] = value;
}
