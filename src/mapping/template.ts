/**
 * Templates such as "{params.id}" or "orders/{headers.x-tenant}/{method}": parsed and validated
 * when the config loads (an unknown variable is a config error), compiled to a closure so the
 * request path only concatenates strings.
 *
 * Syntax: text with `{variable}` slots; `{{` and `}}` are a literal brace.
 */
import type { ForwardedRequest, Identity } from "../model.js";

export interface TemplateContext {
  readonly req: ForwardedRequest;
  /** Path parameters of the matched route (`:name` → value, `*` → rest). */
  readonly params: Readonly<Record<string, string>>;
  readonly identity: Identity;
}

type Getter = (ctx: TemplateContext) => string;
type Part = string | Getter;

export type ParseResult = { ok: true; render: (ctx: TemplateContext) => string; variables: string[] } | { ok: false; error: string };

const SIMPLE: Record<string, Getter> = {
  method: (c) => c.req.method,
  host: (c) => c.req.host,
  path: (c) => c.req.path,
  scheme: (c) => c.req.scheme,
  ip: (c) => c.req.ip,
  "principal.id": (c) => c.identity.principal.id,
  "principal.roles": (c) => c.identity.principal.roles.join(","),
};

const NAME = /^[A-Za-z0-9_.\-]+$/;

function variableGetter(name: string): Getter | string {
  const simple = SIMPLE[name];
  if (simple) return simple;
  const dot = name.indexOf(".");
  const ns = dot > 0 ? name.slice(0, dot) : "";
  const rest = dot > 0 ? name.slice(dot + 1) : "";
  // "{params.*}" is the value of a path's final wildcard (find-my-way names it "*").
  if (rest === "" || !(NAME.test(rest) || (ns === "params" && rest === "*"))) return `unknown template variable "{${name}}"`;
  switch (ns) {
    case "params":
      return (c) => c.params[rest] ?? "";
    case "query":
      return (c) => {
        const v = c.req.query[rest];
        return v === undefined ? "" : typeof v === "string" ? v : v.join(",");
      };
    case "headers": {
      if (rest !== rest.toLowerCase()) return `header names in templates are lower-case: "{${name}}"`;
      return (c) => c.req.headers.get(rest) ?? "";
    }
    case "claims": {
      const path = rest.split(".");
      return (c) => claimString(c.identity.claims, path);
    }
    default:
      return `unknown template variable "{${name}}"`;
  }
}

/** Reads a dotted claim path; arrays are comma-joined, objects and missing values render "". */
export function claimValue(claims: Readonly<Record<string, unknown>> | undefined, path: readonly string[]): unknown {
  let v: unknown = claims;
  for (const key of path) {
    if (v === null || typeof v !== "object" || Array.isArray(v) || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

function claimString(claims: Readonly<Record<string, unknown>> | undefined, path: readonly string[]): string {
  const v = claimValue(claims, path);
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return v.filter((x) => typeof x === "string" || typeof x === "number").join(",");
  return "";
}

/** Parses and compiles a template; never throws. */
export function parseTemplate(src: string): ParseResult {
  const parts: Part[] = [];
  const variables: string[] = [];
  let text = "";
  for (let i = 0; i < src.length; i++) {
    const ch = src[i];
    if (ch === "{" && src[i + 1] === "{") {
      text += "{";
      i++;
    } else if (ch === "}" && src[i + 1] === "}") {
      text += "}";
      i++;
    } else if (ch === "{") {
      const end = src.indexOf("}", i + 1);
      if (end < 0) return { ok: false, error: `unclosed "{" at offset ${i}` };
      const name = src.slice(i + 1, end).trim();
      const getter = variableGetter(name);
      if (typeof getter === "string") return { ok: false, error: getter };
      if (text) parts.push(text);
      text = "";
      parts.push(getter);
      variables.push(name);
      i = end;
    } else if (ch === "}") {
      return { ok: false, error: `unmatched "}" at offset ${i} (write "}}" for a literal brace)` };
    } else {
      text += ch;
    }
  }
  if (text) parts.push(text);
  return { ok: true, render: compile(parts), variables };
}

function compile(parts: readonly Part[]): (ctx: TemplateContext) => string {
  if (parts.length === 0) return () => "";
  if (parts.length === 1) {
    const only = parts[0]!;
    return typeof only === "string" ? () => only : only;
  }
  return (ctx) => {
    let out = "";
    for (const p of parts) out += typeof p === "string" ? p : p(ctx);
    return out;
  };
}
