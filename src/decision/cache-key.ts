/**
 * The canonical, collision-free key of a check (SPEC §6): principal (id, roles as a sorted set,
 * attr, scope, policyVersion), resource (kind, id, attr, scope, policyVersion), action, and the
 * token when it is forwarded to the PDP.
 *
 * Every string is written as `<length>:<text>` and every value carries a type tag, so no field
 * can borrow characters from its neighbour ("ab"+"c" ≠ "a"+"bc"), a number never equals a
 * string, and object keys are sorted so attribute order does not matter.
 */
import type { AttrValue, Attributes, Check, Principal, Resource } from "../model.js";

function str(s: string): string {
  return `${s.length}:${s}`;
}

function value(v: AttrValue | undefined): string {
  if (v === null || v === undefined) return "z";
  switch (typeof v) {
    case "string":
      return "s" + str(v);
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

function attributes(attr: Attributes): string {
  const keys = Object.keys(attr).sort();
  let out = `o${keys.length}{`;
  for (const k of keys) out += str(k) + value(attr[k]);
  return out + "}";
}

/** Principal part of the key; roles are a set (order and duplicates do not matter). */
export function principalKey(p: Principal): string {
  const roles = [...new Set(p.roles)].sort();
  let out = "P" + str(p.id) + `r${roles.length}[`;
  for (const r of roles) out += str(r);
  return out + "]" + attributes(p.attr) + str(p.scope ?? "") + str(p.policyVersion ?? "");
}

/** Resource part of the key: kind, id, attr, scope, policyVersion. */
export function resourceKey(r: Resource): string {
  return "R" + str(r.kind) + str(r.id) + attributes(r.attr) + str(r.scope ?? "") + str(r.policyVersion ?? "");
}

export function checkKey(check: Check, principal: string = principalKey(check.principal)): string {
  return principal + resourceKey(check.resource) + "A" + str(check.action) + (check.token === undefined ? "-" : "J" + str(check.token));
}
