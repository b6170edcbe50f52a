/**
 * Trusted-header identities: the same header values give the same frozen Identity object (so
 * its principal key is computed once), and values that differ — however they are split between
 * headers — never share one.
 */
import { describe, expect, it } from "vitest";
import { checkKey, freezePrincipal, principalKey } from "../../src/canonical-keys.js";
import type { ForwardedRequest, Principal } from "../../src/model.js";
import { trustedHeadersSource } from "../../src/identity/trusted-headers.js";

const source = () => trustedHeadersSource({ id: "Remote-User", roles: "Remote-Groups", attr: { team: "Remote-Team" } });
const req = (headers: Record<string, string>): ForwardedRequest => ({
  method: "GET",
  scheme: "https",
  host: "app.example",
  path: "/",
  rawQuery: "",
  query: {},
  ip: "",
  headers: new Map(Object.entries(headers)),
});

describe("trusted headers: remembered identities", () => {
  it("the same header values give the same frozen identity object", () => {
    const resolve = source();
    const a = resolve(req({ "remote-user": "alice", "remote-groups": "user, admin", "remote-team": "blue" }));
    const b = resolve(req({ "remote-user": "alice", "remote-groups": "user, admin", "remote-team": "blue" }));
    expect(b).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a!.principal)).toBe(true);
    expect(Object.isFrozen(a!.principal.roles)).toBe(true);
    expect(Object.isFrozen(a!.principal.attr)).toBe(true);
    expect(a!.principal).toEqual({ id: "alice", roles: ["user", "admin"], attr: { team: "blue" } });
  });

  it("values split differently between headers are different callers", () => {
    const resolve = source();
    const one = resolve(req({ "remote-user": "ab", "remote-groups": "c" }));
    const two = resolve(req({ "remote-user": "a", "remote-groups": "bc" }));
    expect(one!.principal.id).toBe("ab");
    expect(two!.principal.id).toBe("a");
    const withTeam = resolve(req({ "remote-user": "a", "remote-groups": "bc", "remote-team": "" }));
    const withoutTeam = resolve(req({ "remote-user": "a", "remote-groups": "bc" }));
    expect(withTeam).not.toBe(two); // "" and absent are remembered apart (same principal all the same)
    expect(withTeam!.principal).toEqual(withoutTeam!.principal);
  });

  it("refusals are never remembered: a bad id is refused every time", () => {
    const resolve = source();
    for (let i = 0; i < 2; i++) {
      expect(() => resolve(req({ "remote-user": "a, b", "remote-groups": "user" }))).toThrow(/more than one value/);
      expect(() => resolve(req({ "remote-user": "a", "remote-groups": " , " }))).toThrow(/without roles/);
    }
    expect(resolve(req({ "remote-user": "  " }))).toBeUndefined();
    expect(resolve(req({}))).toBeUndefined();
  });
});

describe("principal key: kept inside principals from identity sources", () => {
  it("a mutable principal's key follows its changes", () => {
    const p: { id: string; roles: string[]; attr: Record<string, string> } = { id: "alice", roles: ["user"], attr: {} };
    const before = principalKey(p);
    p.roles.push("admin");
    p.attr["team"] = "blue";
    expect(principalKey(p)).not.toBe(before);
    expect(principalKey(p)).toBe(principalKey({ id: "alice", roles: ["admin", "user"], attr: { team: "blue" } }));
  });

  it("freezePrincipal freezes it and its key equals a fresh copy's; copies do not carry the stored key", () => {
    const p: Principal = freezePrincipal({ id: "alice", roles: ["user"], attr: { team: "blue" } });
    expect(Object.isFrozen(p) && Object.isFrozen(p.roles) && Object.isFrozen(p.attr)).toBe(true);
    expect(Object.keys(p)).toEqual(["id", "roles", "attr"]);
    expect(principalKey(p)).toBe(principalKey({ id: "alice", roles: ["user"], attr: { team: "blue" } }));
    const copy = { ...p, id: "bob" };
    expect(principalKey(copy)).toBe(principalKey({ id: "bob", roles: ["user"], attr: { team: "blue" } }));
    const resource = { kind: "doc", id: "1", attr: {} };
    expect(checkKey({ principal: p, resource, action: "read" })).toBe(checkKey({ principal: { ...p }, resource, action: "read" }));
  });
});
