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
 * The parts are collected in an array and joined once: the result is one flat string. (Built by
 * `+`, V8 keeps a tree of the pieces alive, which cost about 1.5 KB per cached decision instead
 * of about 0.25 KB.)
 */
import type { AttrValue, Attributes, Check, Principal, Resource } from "./model.js";

type Parts = string[];

function str(out: Parts, s: string): void {
  out.push(`${s.length}:${s}`);
}

function value(out: Parts, v: AttrValue | undefined): void {
  if (v === null || v === undefined) {
    out.push("z");
    return;
  }
  switch (typeof v) {
    case "string":
      out.push("s");
      str(out, v);
      return;
    case "number":
      out.push("n");
      str(out, Object.is(v, -0) ? "0" : String(v));
      return;
    case "boolean":
      out.push(v ? "T" : "F");
      return;
  }
  if (Array.isArray(v)) {
    out.push("a", String(v.length), "[");
    for (const item of v) value(out, item as AttrValue);
    out.push("]");
    return;
  }
  attributes(out, v as Attributes);
}

function sortedKeys(attr: Attributes): string[] {
  const keys = Object.keys(attr);
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) return keys.sort();
  }
  return keys;
}

function attributes(out: Parts, attr: Attributes): void {
  const keys = sortedKeys(attr);
  out.push("o", String(keys.length), "{");
  for (const k of keys) {
    str(out, k);
    value(out, attr[k]);
  }
  out.push("}");
}

function principalParts(out: Parts, p: Principal): void {
  const roles = p.roles.length === 1 ? p.roles : [...new Set(p.roles)].sort();
  out.push("P");
  str(out, p.id);
  out.push("r", String(roles.length), "[");
  for (const r of roles) str(out, r);
  out.push("]");
  attributes(out, p.attr);
  str(out, p.scope ?? "");
  str(out, p.policyVersion ?? "");
}

function resourceParts(out: Parts, r: Resource): void {
  out.push("R");
  str(out, r.kind);
  str(out, r.id);
  attributes(out, r.attr);
  str(out, r.scope ?? "");
  str(out, r.policyVersion ?? "");
}

/** Principal part of the key; roles are a set (order and duplicates do not matter). */
export function principalKey(p: Principal): string {
  const out: Parts = [];
  principalParts(out, p);
  return out.join("");
}

/** Resource part of the key: kind, id, attr, scope, policyVersion. */
export function resourceKey(r: Resource): string {
  const out: Parts = [];
  resourceParts(out, r);
  return out.join("");
}

export function checkKey(check: Check): string {
  const out: Parts = [];
  principalParts(out, check.principal);
  resourceParts(out, check.resource);
  out.push("A");
  str(out, check.action);
  if (check.token === undefined) out.push("-");
  else {
    out.push("J");
    str(out, check.token);
  }
  return out.join("");
}
