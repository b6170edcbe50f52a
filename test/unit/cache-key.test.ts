/**
 * The canonical cache key (SPEC §6): collision-free across field boundaries, insensitive to
 * attribute key order and to role order/duplicates (roles are a set), sensitive to every field,
 * to value types and to nesting. A property test compares the key with an independent
 * structural oracle: two checks get the same key exactly when they are the same question.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { checkKey, principalKey, resourceKey } from "../../src/canonical-keys.js";
import type { AttrValue, Attributes, Check, Principal, Resource } from "../../src/model.js";

const principal = (over: Partial<Principal> = {}): Principal => ({ id: "alice", roles: ["user"], attr: {}, ...over });
const resource = (over: Partial<Resource> = {}): Resource => ({ kind: "document", id: "1", attr: {}, ...over });
const check = (over: { principal?: Partial<Principal>; resource?: Partial<Resource>; action?: string; token?: string } = {}): Check => ({
  principal: principal(over.principal),
  resource: resource(over.resource),
  action: over.action ?? "read",
  ...(over.token !== undefined ? { token: over.token } : {}),
});

// ---------------------------------------------------------------------------------------------
// Boundaries: no field can borrow characters from another

/**
 * Every string-valued field of the key, in encoding order. A role stands for the role set (one
 * role here: two roles of a set may swap, so their split is not a different question); an attr
 * key and value are one entry of principal.attr or resource.attr.
 */
const FIELDS = [
  "principal.id",
  "principal.role",
  "principal.attrKey",
  "principal.attrValue",
  "principal.scope",
  "principal.policyVersion",
  "resource.kind",
  "resource.id",
  "resource.attrKey",
  "resource.attrValue",
  "resource.scope",
  "resource.policyVersion",
  "action",
  "token",
] as const;
type Field = (typeof FIELDS)[number];

/** A check where every field has a neutral value except the two given. */
function withFields(values: Partial<Record<Field, string>>): Check {
  const v = (f: Field, def: string) => values[f] ?? def;
  return {
    principal: {
      id: v("principal.id", "p"),
      roles: [v("principal.role", "r")],
      attr: { [v("principal.attrKey", "pk")]: v("principal.attrValue", "pv") },
      scope: v("principal.scope", "ps"),
      policyVersion: v("principal.policyVersion", "pp"),
    },
    resource: {
      kind: v("resource.kind", "k"),
      id: v("resource.id", "i"),
      attr: { [v("resource.attrKey", "rk")]: v("resource.attrValue", "rv") },
      scope: v("resource.scope", "rs"),
      policyVersion: v("resource.policyVersion", "rp"),
    },
    action: v("action", "a"),
    token: v("token", "t"),
  };
}

const PAIRS: Array<[Field, Field]> = FIELDS.flatMap((a, i) => FIELDS.slice(i + 1).map((b): [Field, Field] => [a, b]));

describe("cache key: no field borrows characters from another", () => {
  it('principal "ab" + resource "c" differs from principal "a" + resource "bc"', () => {
    const k1 = checkKey(check({ principal: { id: "ab" }, resource: { kind: "c" } }));
    const k2 = checkKey(check({ principal: { id: "a" }, resource: { kind: "bc" } }));
    expect(k1).not.toBe(k2);
    expect(checkKey(check({ principal: { id: "ab" }, resource: { id: "c" } }))).not.toBe(checkKey(check({ principal: { id: "a" }, resource: { id: "bc" } })));
  });

  // Every split point of a string that looks like the encoding itself ("1:a", "s1:"), moved
  // between every pair of fields: a joined encoding (even a length-prefixed one without type
  // tags) would map some of these to the same key.
  it.each(PAIRS)("moving the boundary between %s and %s always changes the key", (a, b) => {
    for (const joined of ["abc", "1:a1:b", "s1:x]o0{}", "\u0000|,;"]) {
      const keys = new Set<string>();
      for (let cut = 0; cut <= joined.length; cut++) {
        keys.add(checkKey(withFields({ [a]: joined.slice(0, cut), [b]: joined.slice(cut) })));
      }
      expect(keys.size, `${a}|${b} over ${JSON.stringify(joined)}`).toBe(joined.length + 1);
    }
  });

  it("roles ['ab'] and ['a', 'b'] are different role sets", () => {
    expect(checkKey(check({ principal: { roles: ["ab"] } }))).not.toBe(checkKey(check({ principal: { roles: ["a", "b"] } })));
    expect(checkKey(check({ principal: { roles: ["a,b"] } }))).not.toBe(checkKey(check({ principal: { roles: ["a", "b"] } })));
  });

  it("an attribute entry cannot be confused with two entries or with a nested object", () => {
    const keys = (<Attributes[]>[
      { "a.b": "c" },
      { a: { b: "c" } },
      { a: "b", b: "c" },
      { ab: "c" },
      { a: "bc" },
      { "a:": "b" },
    ]).map((attr) => checkKey(check({ resource: { attr } })));
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("principal and resource attributes never trade places", () => {
    expect(checkKey(check({ principal: { attr: { tenant: "acme" } } }))).not.toBe(checkKey(check({ resource: { attr: { tenant: "acme" } } })));
  });
});

// ---------------------------------------------------------------------------------------------
// Normalisation: what is not a different question

describe("cache key: order that does not matter", () => {
  it("attribute key order does not change the key (at every depth)", () => {
    const a = check({
      principal: { attr: { tenant: "acme", email: "a@x", org: { b: 1, a: [{ y: 2, x: 1 }] } } },
      resource: { attr: { owner: "alice", size: 3 } },
    });
    const b = check({
      principal: { attr: { org: { a: [{ x: 1, y: 2 }], b: 1 }, email: "a@x", tenant: "acme" } },
      resource: { attr: { size: 3, owner: "alice" } },
    });
    expect(checkKey(a)).toBe(checkKey(b));
  });

  it("role order and duplicate roles do not change the key (roles are a set)", () => {
    const k = checkKey(check({ principal: { roles: ["user", "admin"] } }));
    expect(checkKey(check({ principal: { roles: ["admin", "user"] } }))).toBe(k);
    expect(checkKey(check({ principal: { roles: ["admin", "user", "admin", "user"] } }))).toBe(k);
    expect(checkKey(check({ principal: { roles: ["user"] } }))).not.toBe(k);
  });

  it("list order does matter (lists are ordered values)", () => {
    expect(checkKey(check({ resource: { attr: { tags: ["a", "b"] } } }))).not.toBe(checkKey(check({ resource: { attr: { tags: ["b", "a"] } } })));
  });

  it("an absent scope or policyVersion is the same question as an empty one (the PDP request omits both)", () => {
    expect(checkKey(check({ principal: { scope: "" }, resource: { policyVersion: "" } }))).toBe(checkKey(check()));
  });

  it("checkKey begins with the principal part that groups checks in the batcher", () => {
    const c = check({ principal: { roles: ["b", "a"], attr: { x: [1, { y: null }] } } });
    expect(checkKey(c).startsWith(principalKey(c.principal))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Values: type and nesting distinguish

describe("cache key: attribute values keep their type and shape", () => {
  const keyOf = (v: AttrValue) => checkKey(check({ resource: { attr: { v } } }));

  it('number 1 and string "1" differ; so do true/"true", null/"null", and an absent key', () => {
    expect(keyOf(1)).not.toBe(keyOf("1"));
    expect(keyOf(true)).not.toBe(keyOf("true"));
    expect(keyOf(false)).not.toBe(keyOf("false"));
    expect(keyOf(null)).not.toBe(keyOf("null"));
    expect(keyOf("")).not.toBe(checkKey(check()));
    expect(keyOf(null)).not.toBe(checkKey(check()));
    expect(keyOf(1)).not.toBe(keyOf(1.5));
    expect(keyOf(-0)).toBe(keyOf(0));
  });

  it("nested attributes distinguish: objects in lists, lists in lists, lists vs objects", () => {
    const values: AttrValue[] = [
      [{ x: 1 }],
      [{ x: "1" }],
      [{ x: 1 }, {}],
      [{}, { x: 1 }],
      { x: 1 },
      [[{ x: 1 }]],
      { 0: { x: 1 } },
      [],
      {},
      [[]],
      [{}],
      [null],
      ["a", "b"],
      ["ab"],
      [["a"], "b"],
      ["a", ["b"]],
      { a: [1, 2] },
      { a: [[1], 2] },
      { a: { b: { c: [true] } } },
      { a: { b: { c: [false] } } },
      { a: { b: { c: ["true"] } } },
    ];
    const keys = values.map(keyOf);
    expect(new Set(keys).size).toBe(values.length);
  });
});

// ---------------------------------------------------------------------------------------------
// Every field of §6 changes the key

describe("cache key: every field of SPEC §6 changes the key", () => {
  const base = check({
    principal: { id: "alice", roles: ["user", "auditor"], attr: { tenant: "acme" }, scope: "acme", policyVersion: "v1" },
    resource: { kind: "document", id: "1", attr: { owner: "alice" }, scope: "acme.hr", policyVersion: "v1" },
    action: "read",
  });
  const p = base.principal;
  const r = base.resource;
  const variants: Array<[string, Check]> = [
    ["principal id", { ...base, principal: { ...p, id: "bob" } }],
    ["principal role replaced (first)", { ...base, principal: { ...p, roles: ["admin", "auditor"] } }],
    ["principal role replaced (second)", { ...base, principal: { ...p, roles: ["user", "admin"] } }],
    ["principal role added", { ...base, principal: { ...p, roles: ["user", "auditor", "admin"] } }],
    ["principal role removed", { ...base, principal: { ...p, roles: ["user"] } }],
    ["principal roles empty", { ...base, principal: { ...p, roles: [] } }],
    ["principal attr value", { ...base, principal: { ...p, attr: { tenant: "globex" } } }],
    ["principal attr key", { ...base, principal: { ...p, attr: { org: "acme" } } }],
    ["principal attr added", { ...base, principal: { ...p, attr: { tenant: "acme", email: "a@x" } } }],
    ["principal attr removed", { ...base, principal: { ...p, attr: {} } }],
    ["principal scope", { ...base, principal: { ...p, scope: "globex" } }],
    ["principal scope absent", { ...base, principal: { ...p, scope: undefined } }],
    ["principal policyVersion", { ...base, principal: { ...p, policyVersion: "v2" } }],
    ["resource kind", { ...base, resource: { ...r, kind: "report" } }],
    ["resource id", { ...base, resource: { ...r, id: "2" } }],
    ["resource attr value", { ...base, resource: { ...r, attr: { owner: "bob" } } }],
    ["resource attr key", { ...base, resource: { ...r, attr: { author: "alice" } } }],
    ["resource attr removed", { ...base, resource: { ...r, attr: {} } }],
    ["resource scope", { ...base, resource: { ...r, scope: "acme" } }],
    ["resource policyVersion", { ...base, resource: { ...r, policyVersion: "default" } }],
    ["resource policyVersion absent", { ...base, resource: { ...r, policyVersion: undefined } }],
    ["action", { ...base, action: "update" }],
    ["token present", { ...base, token: "eyJ.a.b" }],
    ["token empty string", { ...base, token: "" }],
    ["token different", { ...base, token: "eyJ.a.c" }],
  ];

  it.each(variants)("%s", (_name, changed) => {
    expect(checkKey(changed)).not.toBe(checkKey(base));
  });

  it("all the variants above are different from each other too", () => {
    const keys = variants.map(([, c]) => checkKey(c));
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("token present vs absent vs different is visible in checkKey only (principal and resource parts ignore it)", () => {
    const withToken = { ...base, token: "t1" };
    expect(principalKey(withToken.principal)).toBe(principalKey(base.principal));
    expect(resourceKey(withToken.resource)).toBe(resourceKey(base.resource));
    expect(new Set([checkKey(base), checkKey(withToken), checkKey({ ...base, token: "t2" })]).size).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: same key ⇔ same question

/** Few distinct characters, so equal strings (and near-collisions like "a:"/"a") come up often. */
const str = fc.string({ unit: fc.constantFrom("a", "b", "1", ":", "[", "{", "s", "\u0000", "é"), maxLength: 4 });
const attrKey = fc.constantFrom("a", "b", "ab", "1", "a:", "");

const attrValue: fc.Arbitrary<AttrValue> = fc.letrec<{ value: AttrValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    str,
    fc.constantFrom(0, 1, -1, 1.5, -0, 1e21, 2 ** 53),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(attrKey, tie("value"), { maxKeys: 3 }),
  ),
})).value;

const attributes: fc.Arbitrary<Attributes> = fc.dictionary(attrKey, attrValue, { maxKeys: 3 });
const optional = fc.option(str, { nil: undefined });

const principalArb: fc.Arbitrary<Principal> = fc.record(
  { id: str, roles: fc.array(fc.constantFrom("user", "admin", "a", "a:", ""), { maxLength: 4 }), attr: attributes, scope: optional, policyVersion: optional },
  { requiredKeys: ["id", "roles", "attr"] },
);
const resourceArb: fc.Arbitrary<Resource> = fc.record(
  { kind: str, id: str, attr: attributes, scope: optional, policyVersion: optional },
  { requiredKeys: ["kind", "id", "attr"] },
);
const checkArb: fc.Arbitrary<Check> = fc.record(
  { principal: principalArb, resource: resourceArb, action: fc.constantFrom("read", "update", "a", ""), token: fc.option(str, { nil: undefined }) },
  { requiredKeys: ["principal", "resource", "action"] },
);

/**
 * The oracle: a plain structural form of what the PDP is asked — roles as a sorted set, object
 * keys sorted, absent scope/policyVersion as "" — compared as JSON text (which keeps 1 and "1"
 * apart and writes -0 as 0, as the PDP's JSON does). Independent of the key's own encoding.
 */
function canonical(c: Check): string {
  const sortKeys = (v: AttrValue): unknown => {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v !== null && typeof v === "object") {
      const obj = v as Attributes;
      return Object.keys(obj)
        .sort()
        .map((k) => [k, sortKeys(obj[k]!)]);
    }
    return v;
  };
  const side = (x: Principal | Resource) => ({ attr: sortKeys(x.attr), scope: x.scope ?? "", policyVersion: x.policyVersion ?? "" });
  return JSON.stringify([
    c.principal.id,
    [...new Set(c.principal.roles)].sort(),
    side(c.principal),
    c.resource.kind,
    c.resource.id,
    side(c.resource),
    c.action,
    c.token === undefined ? null : [c.token],
  ]);
}

/** The same question written differently: roles shuffled and duplicated, attribute keys reordered at every depth. */
function rewritten(c: Check, seed: number): Check {
  const reorder = (v: AttrValue): AttrValue => {
    if (Array.isArray(v)) return v.map(reorder);
    if (v !== null && typeof v === "object") {
      const entries = Object.entries(v as Attributes).map(([k, x]) => [k, reorder(x)] as const);
      return Object.fromEntries(seed % 2 ? entries.reverse() : [...entries.slice(1), ...entries.slice(0, 1)]);
    }
    return v;
  };
  const roles = [...c.principal.roles];
  const shuffled = seed % 3 === 0 ? roles.reverse() : [...roles, ...roles.slice(0, seed % 4)];
  return {
    ...c,
    principal: { ...c.principal, roles: shuffled, attr: reorder(c.principal.attr) as Attributes },
    resource: { ...c.resource, attr: reorder(c.resource.attr) as Attributes },
  };
}

describe("cache key: property", () => {
  it("two random checks have the same key exactly when they are structurally the same question", () => {
    fc.assert(
      fc.property(checkArb, checkArb, (a, b) => {
        expect(checkKey(a) === checkKey(b)).toBe(canonical(a) === canonical(b));
      }),
      { numRuns: 3000 },
    );
  });

  it("a check rewritten with shuffled/duplicated roles and reordered attributes keeps its key", () => {
    fc.assert(
      fc.property(checkArb, fc.nat(), (c, seed) => {
        const same = rewritten(c, seed);
        expect(canonical(same)).toBe(canonical(c));
        expect(checkKey(same)).toBe(checkKey(c));
      }),
      { numRuns: 1000 },
    );
  });

  it("a check and a rewritten copy with one field taken from another check: same key exactly when the same question", () => {
    fc.assert(
      fc.property(checkArb, checkArb, fc.integer({ min: 0, max: 9 }), fc.nat(), (c, other, field, seed) => {
        const changed: Check = [
          { ...c, principal: { ...c.principal, id: other.principal.id } },
          { ...c, principal: { ...c.principal, roles: other.principal.roles } },
          { ...c, principal: { ...c.principal, attr: other.principal.attr } },
          { ...c, principal: { ...c.principal, scope: other.principal.scope } },
          { ...c, resource: { ...c.resource, kind: other.resource.kind } },
          { ...c, resource: { ...c.resource, id: other.resource.id } },
          { ...c, resource: { ...c.resource, attr: other.resource.attr } },
          { ...c, resource: { ...c.resource, policyVersion: other.resource.policyVersion } },
          { ...c, action: other.action },
          other.token === undefined ? (({ token: _drop, ...rest }) => rest)(c) : { ...c, token: other.token },
        ][field]!;
        const copy = rewritten(changed, seed);
        expect(checkKey(copy) === checkKey(c)).toBe(canonical(copy) === canonical(c));
      }),
      { numRuns: 2000 },
    );
  });
});
