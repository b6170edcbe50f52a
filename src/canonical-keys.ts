/**
 * Canonical keys, shared by the decision cache (checkKey) and the batcher's grouping
 * (principalKey, resourceKey). The collision-free key of a check (SPEC §6): principal (id, roles as a sorted set,
 * attr, scope, policyVersion), resource (kind, id, attr, scope, policyVersion), action, and the
 * token when it is forwarded to the PDP.
 *
 * Every string is written as `<length>:<text>` and every value carries a type tag, so no field
 * can borrow characters from its neighbour ("ab"+"c" ≠ "a"+"bc"), a number never equals a
 * string, and object keys are sorted so attribute order does not matter.
 *
 * Speed and memory (this runs on every request):
 * - the parts are concatenated, and the check key is then joined once from its three pieces:
 *   `join` returns one flat string. A key left as a tree of `+` pieces costs about 1.5 KB per
 *   cached decision instead of about 0.25 KB, and is slower to hash on every lookup;
 * - a principal from an identity source (one caller, one object, for as long as the source
 *   remembers it) carries its key inside it (freezePrincipal), computed once.
 */
import type { AttrValue, Attributes, Check, ForwardedRequest, Principal, Resource } from "./model.js";

function str(s: string): string {
  return `${s.length}:${s}`;
}

function value(v: AttrValue | undefined): string {
  if (v === null || v === undefined) return "z";
  switch (typeof v) {
    case "string":
      return `s${v.length}:${v}`;
    case "number":
      return "n" + str(Object.is(v, -0) ? "0" : String(v));
    case "boolean":
      return v ? "T" : "F";
  }
  if (Array.isArray(v)) {
    let out = `a${v.length}[`;
    for (const item of v) out += value(item as AttrValue);
    return out + "]";
  }
  return attributes(v as Attributes);
}

function sortedKeys(attr: Attributes): string[] {
  const keys = Object.keys(attr);
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) return keys.sort();
  }
  return keys;
}

function attributes(attr: Attributes): string {
  const keys = sortedKeys(attr);
  let out = `o${keys.length}{`;
  for (const k of keys) out += `${k.length}:${k}` + value(attr[k]);
  return out + "}";
}

function buildPrincipalKey(p: Principal): string {
  const roles = p.roles.length === 1 ? p.roles : [...new Set(p.roles)].sort();
  let out = "P" + str(p.id) + `r${roles.length}[`;
  for (const r of roles) out += str(r);
  return [out, "]", attributes(p.attr), str(p.scope ?? ""), str(p.policyVersion ?? "")].join("");
}

/** Where freezePrincipal() keeps a principal's key (a non-enumerable symbol: copies do not carry it). */
const PRINCIPAL_KEY = Symbol("principalKey");

/**
 * Freezes a principal (and its roles and attr; nested attribute values must already be frozen)
 * and stores its key inside it. Identity sources give one caller one principal object for as long
 * as they remember it, so its key is computed once, not on every request.
 */
export function freezePrincipal<P extends Principal>(p: P): P {
  Object.freeze(p.roles);
  Object.freeze(p.attr);
  Object.defineProperty(p, PRINCIPAL_KEY, { value: buildPrincipalKey(p) });
  return Object.freeze(p);
}

/** Principal part of the key; roles are a set (order and duplicates do not matter). */
export function principalKey(p: Principal): string {
  return (p as { [PRINCIPAL_KEY]?: string })[PRINCIPAL_KEY] ?? buildPrincipalKey(p);
}

/** Resource part of the key: kind, id, attr, scope, policyVersion. */
export function resourceKey(r: Resource): string {
  return "R" + str(r.kind) + str(r.id) + attributes(r.attr) + str(r.scope ?? "") + str(r.policyVersion ?? "");
}

/**
 * resourceKey() of the generic mapping's resource — kind "route", id the path, attr { host, ip,
 * method, path, query, scheme } — written out at once instead of walking the object: the same
 * string (a unit test holds them equal), for a fraction of the cost on every generic request.
 */
export function genericResourceKey(req: ForwardedRequest): string {
  const { host, ip, method, path, scheme } = req;
  return (
    `R5:route${path.length}:${path}o6{4:hosts${host.length}:${host}2:ips${ip.length}:${ip}` +
    `6:methods${method.length}:${method}4:paths${path.length}:${path}5:query${attributes(req.query)}` +
    `6:schemes${scheme.length}:${scheme}}0:0:`
  );
}

/** The check key from its parts (principalKey, resourceKey), one flat string. */
export function checkKeyOf(principal: string, resource: string, action: string, token: string | undefined): string {
  const tail = token === undefined ? `A${action.length}:${action}-` : `A${action.length}:${action}J${token.length}:${token}`;
  return [principal, resource, tail].join("");
}

export function checkKey(check: Check): string {
  return checkKeyOf(principalKey(check.principal), resourceKey(check.resource), check.action, check.token);
}
