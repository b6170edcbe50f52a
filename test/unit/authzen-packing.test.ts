/**
 * Packing checks of many principals into AuthZEN AccessEvaluationBatch calls
 * (src/pdp/authzen-packing.ts), pure: no PDP. The rules come from the Cerbos PDP, which groups a
 * batch's evaluations by subject id, then by resource type and id, and evaluates each group with
 * its first evaluation's subject and resource (test/integration/authzen.test.ts shows the real
 * PDP doing it). So a call must never hold two different principals with one id, nor two
 * different resources with one kind and id under one subject id; and the PDP's limits hold.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { principalKey, resourceKey } from "../../src/canonical-keys.js";
import type { Principal, Resource } from "../../src/model.js";
import { encodeBatchRequest, type Evaluation } from "../../src/pdp/authzen-codec.js";
import { authzenCompatible, packUnits, toEvaluation, type Limits, type PackedCall, type Unit } from "../../src/pdp/authzen-packing.js";

/** Waiters are labels here: "<principal key #>/<resource key #>/<action>" is easy to trace. */
type W = string;

function unit(principal: Principal, resource: Resource, actions: readonly string[]): Unit<W> {
  const pKey = principalKey(principal);
  const rKey = resourceKey(resource);
  return { principalKey: pKey, principal, resourceKey: rKey, resource, actions: actions.map((a) => [a, `${principal.id}|${rKey}|${a}`] as const) };
}

const user = (id: string, roles: string[] = ["user"], attr: Principal["attr"] = {}, extra: Partial<Principal> = {}): Principal => ({ id, roles, attr, ...extra });
const doc = (id: string, attr: Resource["attr"] = {}, extra: Partial<Resource> = {}): Resource => ({ kind: "doc", id, attr, ...extra });

const kindAndId = (r: Resource) => JSON.stringify([r.kind, r.id]);

/**
 * Every rule a packed batch must keep, checked on the output alone:
 * - positions line up: evaluation i is toEvaluation(units[i]) for the action whose waiters are waiters[i],
 *   and the call encodes to the same bytes as those evaluations built one by one (packUnits shares
 *   subject and resource objects between evaluations, which the encoder writes once);
 * - every (unit, action) appears exactly once over all calls, nothing else does;
 * - per call: one principal per subject id, one resource per (subject id, kind+id);
 * - per call: evaluations ≤ maxRes × maxAct, resources per subject id ≤ maxRes,
 *   evaluations per (subject id, kind+id) ≤ maxAct.
 */
function checkInvariants(units: readonly Unit<W>[], calls: readonly PackedCall<W>[], limits: Limits): void {
  const expected = new Map<W, number>();
  for (const u of units) for (const [, w] of u.actions) expected.set(w, (expected.get(w) ?? 0) + 1);
  const seen = new Map<W, number>();
  for (const call of calls) {
    expect(call.evaluations.length).toBeGreaterThan(0);
    expect(call.waiters).toHaveLength(call.evaluations.length);
    expect(call.units).toHaveLength(call.evaluations.length);
    expect(call.evaluations.length).toBeLessThanOrEqual(limits.maxResourcesPerRequest * limits.maxActionsPerResource);
    const principalOfId = new Map<string, string>();
    const resourceOf = new Map<string, string>();
    const resourcesOfSubject = new Map<string, Set<string>>();
    const evaluationsPerGroup = new Map<string, number>();
    const oneByOne: Evaluation[] = [];
    call.evaluations.forEach((e, i) => {
      const u = call.units[i]!;
      const action = u.actions.find(([, w]) => w === call.waiters[i])?.[0];
      expect(action, "waiters belong to the unit at the same position").toBeDefined();
      oneByOne.push(toEvaluation(u.principal, u.resource, action!));
      expect(e).toEqual(oneByOne[i]);
      seen.set(call.waiters[i]!, (seen.get(call.waiters[i]!) ?? 0) + 1);

      const id = u.principal.id;
      const pk = principalOfId.get(id);
      if (pk === undefined) principalOfId.set(id, u.principalKey);
      else expect(pk, `two principals with id ${id} in one call`).toBe(u.principalKey);
      const group = JSON.stringify([id, kindAndId(u.resource)]);
      const rk = resourceOf.get(group);
      if (rk === undefined) resourceOf.set(group, u.resourceKey);
      else expect(rk, `two resources ${kindAndId(u.resource)} under subject ${id} in one call`).toBe(u.resourceKey);
      const set = resourcesOfSubject.get(id) ?? new Set();
      set.add(kindAndId(u.resource));
      resourcesOfSubject.set(id, set);
      evaluationsPerGroup.set(group, (evaluationsPerGroup.get(group) ?? 0) + 1);
    });
    expect(encodeBatchRequest(call.evaluations).equals(encodeBatchRequest(oneByOne)), "same bytes as evaluations built one by one").toBe(true);
    for (const set of resourcesOfSubject.values()) expect(set.size).toBeLessThanOrEqual(limits.maxResourcesPerRequest);
    for (const n of evaluationsPerGroup.values()) expect(n).toBeLessThanOrEqual(limits.maxActionsPerResource);
  }
  expect(seen).toEqual(expected);
}

const LIMITS: Limits = { maxResourcesPerRequest: 50, maxActionsPerResource: 50 };

describe("packUnits: the PDP's grouping trap", () => {
  it("two principals with the same id but different roles never share a call", () => {
    const units = [unit(user("alice", ["admin"]), doc("1"), ["delete"]), unit(user("alice", ["user"]), doc("1"), ["delete"])];
    const calls = packUnits(units, LIMITS);
    expect(calls).toHaveLength(2);
    checkInvariants(units, calls, LIMITS);
  });

  it("two principals with the same id but different attributes never share a call, even on different resources", () => {
    const units = [
      unit(user("alice", ["user"], { tenant: "acme" }), doc("1"), ["read"]),
      unit(user("alice", ["user"], { tenant: "globex" }), doc("2"), ["read"]),
    ];
    const calls = packUnits(units, LIMITS);
    expect(calls).toHaveLength(2);
    checkInvariants(units, calls, LIMITS);
  });

  it.each([
    ["scope", { scope: "acme" }],
    ["policyVersion", { policyVersion: "v2" }],
  ])("two principals with the same id differing only in %s never share a call", (_name, extra) => {
    const units = [unit(user("alice"), doc("1"), ["read"]), unit(user("alice", ["user"], {}, extra), doc("1"), ["read"])];
    expect(packUnits(units, LIMITS)).toHaveLength(2);
  });

  it("two resources with the same kind and id but different attributes never share a call under one subject id", () => {
    const p = user("alice");
    const units = [unit(p, doc("1", { owner: "alice" }), ["edit"]), unit(p, doc("1", { owner: "bob" }), ["edit"])];
    const calls = packUnits(units, LIMITS);
    expect(calls).toHaveLength(2);
    checkInvariants(units, calls, LIMITS);
  });

  it.each([
    ["scope", { scope: "acme" }],
    ["policyVersion", { policyVersion: "v2" }],
  ])("two resources with the same kind and id differing only in %s never share a call under one subject id", (_name, extra) => {
    const p = user("alice");
    expect(packUnits([unit(p, doc("1"), ["read"]), unit(p, doc("1", {}, extra), ["read"])], LIMITS)).toHaveLength(2);
  });

  it("the same resource twice under one principal (actions split over units) goes to separate calls", () => {
    const p = user("alice");
    const r = doc("1");
    const units = [unit(p, r, ["read", "edit"]), unit(p, r, ["delete"])];
    const calls = packUnits(units, LIMITS);
    expect(calls).toHaveLength(2);
    checkInvariants(units, calls, LIMITS);
  });

  it("different principals on the same resource share a call when their ids differ", () => {
    const r = doc("1", { owner: "alice" });
    const units = [unit(user("alice"), r, ["edit"]), unit(user("bob"), r, ["edit"]), unit(user("carol", ["admin"]), r, ["edit"])];
    expect(packUnits(units, LIMITS)).toHaveLength(1);
  });

  it("the same kind and id with different attributes share a call under different subject ids", () => {
    const units = [unit(user("alice"), doc("1", { owner: "alice" }), ["edit"]), unit(user("bob"), doc("1", { owner: "bob" }), ["edit"])];
    expect(packUnits(units, LIMITS)).toHaveLength(1);
  });

  it("the same kind and id under one subject is fine when the kinds differ", () => {
    const p = user("alice");
    const units = [unit(p, doc("1"), ["read"]), unit(p, { kind: "report", id: "1", attr: {} }, ["read"])];
    expect(packUnits(units, LIMITS)).toHaveLength(1);
  });

  it("kind and id are told apart without a separator that could occur in them", () => {
    const p = user("alice");
    const units = [unit(p, { kind: "ab", id: "c", attr: {} }, ["read"]), unit(p, { kind: "a", id: "bc", attr: {} }, ["read"])];
    expect(packUnits(units, LIMITS)).toHaveLength(1);
  });

  it("the same principal key (roles in another order) with different resources shares a call", () => {
    const units = [
      unit(user("alice", ["user", "admin"], { tenant: "acme" }), doc("1"), ["read"]),
      unit(user("alice", ["admin", "user"], { tenant: "acme" }), doc("2"), ["read", "edit"]),
      unit(user("alice", ["user", "admin"], { tenant: "acme" }), { kind: "report", id: "1", attr: {} }, ["view"]),
    ];
    expect(units[0]!.principalKey).toBe(units[1]!.principalKey);
    const calls = packUnits(units, LIMITS);
    expect(calls).toHaveLength(1);
    checkInvariants(units, calls, LIMITS);
  });

  it("a later unit fills an earlier call when it fits there (first fit)", () => {
    const units = [
      unit(user("alice", ["admin"]), doc("1"), ["read"]),
      unit(user("alice", ["user"]), doc("1"), ["read"]), // → call 2
      unit(user("bob"), doc("1"), ["read"]), // → call 1
      unit(user("alice", ["user"]), doc("2"), ["read"]), // the second alice → call 2
    ];
    const calls = packUnits(units, LIMITS);
    expect(calls.map((c) => c.units.map((u) => units.indexOf(u)))).toEqual([
      [0, 2],
      [1, 3],
    ]);
  });
});

describe("packUnits: limits", () => {
  it("evaluations per call ≤ maxResourcesPerRequest × maxActionsPerResource", () => {
    const limits = { maxResourcesPerRequest: 5, maxActionsPerResource: 3 };
    const units = Array.from({ length: 40 }, (_, i) => unit(user(`u${i}`), doc(`${i}`), ["read"]));
    const calls = packUnits(units, limits);
    expect(calls.map((c) => c.evaluations.length)).toEqual([15, 15, 10]);
    checkInvariants(units, calls, limits);
  });

  it("a unit never straddles two calls: one that does not fit opens the next", () => {
    const limits = { maxResourcesPerRequest: 2, maxActionsPerResource: 3 };
    const units = [
      unit(user("a"), doc("1"), ["x", "y", "z"]),
      unit(user("b"), doc("1"), ["x", "y"]),
      unit(user("c"), doc("1"), ["x", "y"]), // 5 + 2 > 6: next call
      unit(user("d"), doc("1"), ["x"]), // fits the first call (5 + 1 = 6)
    ];
    const calls = packUnits(units, limits);
    expect(calls.map((c) => c.evaluations.length)).toEqual([6, 2]);
    checkInvariants(units, calls, limits);
  });

  it("resources per subject ≤ maxResourcesPerRequest", () => {
    const limits = { maxResourcesPerRequest: 5, maxActionsPerResource: 3 };
    const p = user("heavy");
    const units = Array.from({ length: 12 }, (_, i) => unit(p, doc(`${i}`), ["read"]));
    const calls = packUnits(units, limits);
    expect(calls.map((c) => c.evaluations.length)).toEqual([5, 5, 2]);
    checkInvariants(units, calls, limits);
  });

  it("other subjects still join a call whose subject is full", () => {
    const limits = { maxResourcesPerRequest: 2, maxActionsPerResource: 10 };
    const units = [
      unit(user("heavy"), doc("1"), ["read"]),
      unit(user("heavy"), doc("2"), ["read"]),
      unit(user("heavy"), doc("3"), ["read"]), // → call 2
      unit(user("light"), doc("1"), ["read"]), // → call 1
    ];
    const calls = packUnits(units, limits);
    expect(calls.map((c) => c.units.map((u) => units.indexOf(u)))).toEqual([[0, 1, 3], [2]]);
    checkInvariants(units, calls, limits);
  });

  it("limits of 1 × 1: one evaluation per call", () => {
    const limits = { maxResourcesPerRequest: 1, maxActionsPerResource: 1 };
    const units = [unit(user("a"), doc("1"), ["read"]), unit(user("b"), doc("1"), ["read"]), unit(user("a"), doc("2"), ["read"])];
    const calls = packUnits(units, limits);
    expect(calls).toHaveLength(3);
    checkInvariants(units, calls, limits);
  });

  it("no units, no calls", () => {
    expect(packUnits([], LIMITS)).toEqual([]);
  });
});

describe("packUnits: positions", () => {
  it("evaluations, waiters and units line up, in input order within a call", () => {
    const units = [
      unit(user("alice"), doc("1"), ["read", "edit"]),
      unit(user("bob", ["admin"]), doc("2", { owner: "bob" }, { scope: "acme" }), ["delete"]),
      unit(user("carol", ["user"], { tenant: "acme" }, { policyVersion: "v2" }), doc("3"), ["read", "approve", "archive"]),
    ];
    const [call, ...rest] = packUnits(units, LIMITS);
    expect(rest).toEqual([]);
    expect(call!.evaluations.map((e) => [e.subject.id, e.resource.id, e.action])).toEqual([
      ["alice", "1", "read"],
      ["alice", "1", "edit"],
      ["bob", "2", "delete"],
      ["carol", "3", "read"],
      ["carol", "3", "approve"],
      ["carol", "3", "archive"],
    ]);
    expect(call!.waiters).toEqual(units.flatMap((u) => u.actions.map(([, w]) => w)));
    expect(call!.units).toEqual([units[0], units[0], units[1], units[2], units[2], units[2]]);
    checkInvariants(units, [call!], LIMITS);
  });

  it("property: any mix of principals, resources and limits keeps every rule", () => {
    const principal = fc.record({
      id: fc.constantFrom("alice", "bob", "a", ""),
      roles: fc.constantFrom(["user"], ["admin"], ["user", "admin"], ["admin", "user"]),
      attr: fc.constantFrom({}, { tenant: "acme" }, { tenant: "globex" }),
      scope: fc.constantFrom(undefined, "acme"),
    });
    const resource = fc.record({
      kind: fc.constantFrom("doc", "report", "do"),
      id: fc.constantFrom("1", "2", "c1"),
      attr: fc.constantFrom({}, { owner: "alice" }, { owner: "bob" }),
      policyVersion: fc.constantFrom(undefined, "v2"),
    });
    const limits = fc.record({ maxResourcesPerRequest: fc.integer({ min: 1, max: 4 }), maxActionsPerResource: fc.integer({ min: 1, max: 3 }) });
    const actions = fc.uniqueArray(fc.constantFrom("read", "edit", "delete", "approve"), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(limits, fc.array(fc.tuple(principal, resource, actions), { maxLength: 30 }), (lim, rows) => {
        // As the batcher builds them: one unit per (principal key, resource key, ≤ maxAct actions).
        const units: Unit<W>[] = [];
        let n = 0;
        for (const [p, r, acts] of rows) {
          const clean = (o: object) => JSON.parse(JSON.stringify(o)) as never;
          for (let i = 0; i < acts.length; i += lim.maxActionsPerResource) {
            const u = unit(clean(p), clean(r), acts.slice(i, i + lim.maxActionsPerResource));
            // Distinct waiters even when a row repeats another.
            units.push({ ...u, actions: u.actions.map(([a, w]) => [a, `${w}#${n++}`] as const) });
          }
        }
        checkInvariants(units, packUnits(units, lim), lim);
      }),
      { numRuns: 300 },
    );
  });
});

describe("packUnits: shared subject and resource objects", () => {
  it("the evaluations of one principal object share one subject object, in every call; those of one unit one resource object", () => {
    const alice = user("alice", ["user"], { tenant: "acme" }, { scope: "acme" });
    const bob = user("bob");
    const r1 = doc("1", {}, { policyVersion: "v2" });
    const units = [unit(alice, r1, ["read", "edit"]), unit(bob, doc("2"), ["read"]), unit(alice, doc("2"), ["read"]), unit(alice, r1, ["delete"])];
    const calls = packUnits(units, LIMITS);
    expect(calls).toHaveLength(2); // r1 twice under alice
    const evaluations = calls.flatMap((c) => c.evaluations);
    const subjectOf = (id: string) => new Set(evaluations.filter((e) => e.subject.id === id).map((e) => e.subject));
    expect(subjectOf("alice").size).toBe(1);
    expect(subjectOf("bob").size).toBe(1);
    const [read, edit] = calls[0]!.evaluations;
    expect(read!.resource).toBe(edit!.resource);
    expect(calls[1]!.evaluations[0]!.resource).not.toBe(read!.resource); // another unit
    expect(calls[1]!.evaluations[0]!.resource).toEqual(read!.resource);
    checkInvariants(units, calls, LIMITS);
  });

  it("equal but distinct principal objects each get their own subject, as toEvaluation builds it (roles keep their order)", () => {
    const units = [unit(user("alice", ["user", "admin"]), doc("1"), ["read"]), unit(user("alice", ["admin", "user"]), doc("2"), ["read"])];
    const [call, ...rest] = packUnits(units, LIMITS);
    expect(rest).toEqual([]);
    expect(call!.evaluations.map((e) => e.subject.properties["cerbos.roles"])).toEqual([
      ["user", "admin"],
      ["admin", "user"],
    ]);
    checkInvariants(units, [call!], LIMITS);
  });

  it("a call of one shared principal encodes to the same bytes as one subject per evaluation", () => {
    const p = user("shared-u7");
    const route = (n: number): Resource => {
      const path = `/api/ms/abc123/${n}`;
      return { kind: "route", id: path, attr: { method: "GET", host: "app.example", path, scheme: "http", ip: "", query: {} } };
    };
    const units = Array.from({ length: 50 }, (_, n) => unit(p, route(n), ["GET"]));
    const [call] = packUnits(units, LIMITS);
    expect(new Set(call!.evaluations.map((e) => e.subject)).size).toBe(1);
    const separate = units.map((u) => toEvaluation(u.principal, u.resource, "GET"));
    expect(encodeBatchRequest(call!.evaluations).equals(encodeBatchRequest(separate))).toBe(true);
  });
});

describe("authzenCompatible", () => {
  const p = user("alice", ["user"], { tenant: "acme" });
  const r = doc("1", { owner: "alice" });

  it("accepts an ordinary principal and resource", () => {
    expect(authzenCompatible(p, r)).toBe(true);
    expect(authzenCompatible(user("alice", ["user"], {}, { scope: "acme", policyVersion: "v2" }), doc("1", {}, { scope: "acme", policyVersion: "v2" }))).toBe(true);
  });

  it("refuses a principal without roles (the PDP would use the subject type as its role)", () => {
    expect(authzenCompatible(user("alice", []), r)).toBe(false);
  });

  it("refuses an empty role (the PDP drops empty roles)", () => {
    expect(authzenCompatible(user("alice", ["user", ""]), r)).toBe(false);
  });

  it.each(["cerbos.roles", "cerbos.scope", "cerbos.policyVersion", "cerbos.anything", "cerbos."])("refuses a principal attribute named %s", (key) => {
    expect(authzenCompatible(user("alice", ["user"], { [key]: "x" }), r)).toBe(false);
  });

  it.each(["cerbos.scope", "cerbos.policyVersion", "cerbos.roles", "cerbos.x"])("refuses a resource attribute named %s", (key) => {
    expect(authzenCompatible(p, doc("1", { [key]: "x" }))).toBe(false);
  });

  it("accepts attribute names that only look alike (cerbos, Cerbos.roles, xcerbos.roles, nested cerbos.*)", () => {
    expect(authzenCompatible(user("alice", ["user"], { cerbos: 1, "Cerbos.roles": ["x"], "xcerbos.roles": 1, nested: { "cerbos.roles": ["x"] } }), doc("1", { cerbos: "x" }))).toBe(true);
  });

  it("refuses an empty principal id, resource kind or resource id", () => {
    expect(authzenCompatible(user(""), r)).toBe(false);
    expect(authzenCompatible(p, { kind: "", id: "1", attr: {} })).toBe(false);
    expect(authzenCompatible(p, { kind: "doc", id: "", attr: {} })).toBe(false);
  });
});

describe("toEvaluation", () => {
  it("puts roles in cerbos.roles, in order, next to the principal's attributes", () => {
    const e = toEvaluation(user("alice", ["user", "admin"], { tenant: "acme", level: 3 }), doc("1", { owner: "bob" }), "edit");
    expect(e).toEqual({
      subject: { type: "principal", id: "alice", properties: { tenant: "acme", level: 3, "cerbos.roles": ["user", "admin"] } },
      resource: { type: "doc", id: "1", properties: { owner: "bob" } },
      action: "edit",
    });
  });

  it("maps principal scope and policyVersion to cerbos.scope and cerbos.policyVersion", () => {
    const e = toEvaluation(user("alice", ["user"], {}, { scope: "acme.emea", policyVersion: "v2" }), doc("1"), "read");
    expect(e.subject.properties).toEqual({ "cerbos.roles": ["user"], "cerbos.scope": "acme.emea", "cerbos.policyVersion": "v2" });
    expect(e.resource.properties).toEqual({});
  });

  it("maps resource scope and policyVersion to cerbos.scope and cerbos.policyVersion", () => {
    const e = toEvaluation(user("alice"), doc("1", { owner: "alice" }, { scope: "acme", policyVersion: "v2" }), "read");
    expect(e.resource).toEqual({ type: "doc", id: "1", properties: { owner: "alice", "cerbos.scope": "acme", "cerbos.policyVersion": "v2" } });
    expect(e.subject.properties).toEqual({ "cerbos.roles": ["user"] });
    expect(toEvaluation(user("alice"), doc("1", {}, { scope: "acme" }), "read").resource.properties).toEqual({ "cerbos.scope": "acme" });
    expect(toEvaluation(user("alice"), doc("1", {}, { policyVersion: "v2" }), "read").resource.properties).toEqual({ "cerbos.policyVersion": "v2" });
  });

  it("leaves empty scope and policyVersion out (as CheckResources does)", () => {
    const e = toEvaluation(user("alice", ["user"], {}, { scope: "", policyVersion: "" }), doc("1", {}, { scope: "", policyVersion: "" }), "read");
    expect(e.subject.properties).toEqual({ "cerbos.roles": ["user"] });
    expect(e.resource.properties).toEqual({});
  });

  it("builds new objects on every call (sharing is packUnits's, within one packing)", () => {
    const p = user("alice");
    const r = doc("1");
    const [a, b] = [toEvaluation(p, r, "read"), toEvaluation(p, r, "edit")];
    expect(a.subject).not.toBe(b.subject);
    expect(a.subject).toEqual(b.subject);
  });

  it("does not change the principal or resource it was given (frozen input)", () => {
    const principal = Object.freeze({ id: "alice", roles: Object.freeze(["user"]), attr: Object.freeze({ tenant: "acme" }), scope: "acme" });
    const resource = Object.freeze({ kind: "doc", id: "1", attr: Object.freeze({ owner: "alice" }), policyVersion: "v2" });
    const e = toEvaluation(principal, resource, "read");
    expect(principal.attr).toEqual({ tenant: "acme" });
    expect(resource.attr).toEqual({ owner: "alice" });
    expect(e.subject.properties["cerbos.roles"]).toEqual(["user"]);
  });
});
