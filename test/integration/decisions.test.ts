/**
 * Decisions end to end: raw HTTP → listener → rebuild → identity → mapping → real Cerbos PDP.
 * Every allow and deny here comes from the real PDP with test/fixtures/policies.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest, type HeaderLines } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));

const ROUTES = [
  {
    name: "documents",
    path: "/documents/:id",
    resource: { kind: "document", id: "{params.id}", attr: { owner: "{query.owner}", size: 3 } },
    actions: { GET: "read", PUT: "update", DELETE: "delete" },
  },
  {
    name: "reports",
    hosts: ["reports.example.com"],
    path: "/reports/:tenant/:id",
    resource: { kind: "report", id: "{params.id}", attr: { tenant: "{params.tenant}" } },
    action: "view",
  },
  { name: "beta", path: "/beta/*", resource: { kind: "route", id: "{path}" }, action: "{method}", shadow: true },
];

const BASE = {
  identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups", attr: { tenant: "Remote-Tenant" } } },
  routes: ROUTES,
  response: { headers: { "X-Auth-Principal": "{principal.id}", "X-Auth-Roles": "{principal.roles}" } },
};

const as = (user: string, roles: string, tenant?: string): HeaderLines => [
  ["Remote-User", user],
  ["Remote-Groups", roles],
  ...(tenant ? ([["Remote-Tenant", tenant]] as const) : []),
];

let pdp: TestPdp;
let svc: TestService;

beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
  svc = await startService(pdp.grpcTarget, BASE);
});
afterAll(async () => {
  await svc?.stop();
  await pdp?.stop();
});

const ask = (method: string, uri: string, extra: HeaderLines = [], host?: string) => rawRequest(svc.port, { headers: forwarded(method, uri, host, extra) });

describe("generic mapping", () => {
  it("allows a user to read /api/* and sets the identity headers", async () => {
    const res = await ask("GET", "/api/items?limit=5", as("alice", "user,auditor"));
    expect(res.status).toBe(200);
    expect(res.header("x-auth-principal")).toBe("alice");
    expect(res.header("x-auth-roles")).toBe("user,auditor");
    expect(res.header("cache-control")).toBe("no-store");
    expect(res.header("x-request-id")).toMatch(/^[A-Za-z0-9._-]+$/);
    expect(res.body).toBe("");
  });

  it("denies a user on /admin/* with the exact error body", async () => {
    const res = await ask("GET", "/admin/users", as("alice", "user"));
    expect(res.status).toBe(403);
    expect(res.header("cache-control")).toBe("no-store");
    expect(JSON.parse(res.body)).toEqual({ error: "forbidden", requestId: res.header("x-request-id") });
    expect(res.header("x-auth-principal")).toBeUndefined();
  });

  it("allows an admin on /admin/*", async () => {
    expect((await ask("DELETE", "/admin/users", as("root", "admin"))).status).toBe(200);
  });

  it("denies a write where the policy only allows reads", async () => {
    expect((await ask("POST", "/api/items", as("alice", "user"))).status).toBe(403);
  });

  it("does not let a query string satisfy a path rule", async () => {
    expect((await ask("GET", "/admin/users?x=/api/items", as("alice", "user"))).status).toBe(403);
  });
});

describe("routes", () => {
  it("maps params, a query-derived attribute and an actions map", async () => {
    expect((await ask("PUT", "/documents/1?owner=alice", as("alice", "user"))).status).toBe(200);
    expect((await ask("PUT", "/documents/1?owner=alice", as("bob", "user"))).status).toBe(403);
    expect((await ask("GET", "/documents/1?owner=alice", as("bob", "user"))).status).toBe(200);
    expect((await ask("DELETE", "/documents/1", as("alice", "user"))).status).toBe(403);
  });

  it("denies a method the actions map does not name without asking the PDP", async () => {
    const before = await pdp.checkCalls();
    const res = await ask("PATCH", "/documents/1?owner=alice", as("alice", "user"));
    expect(res.status).toBe(403);
    expect(await pdp.checkCalls()).toBe(before);
    expect(svc.decisions().at(-1)).toMatchObject({ route: "documents", outcome: "deny" });
  });

  it("matches hosts and compares a principal attribute with a path parameter", async () => {
    expect((await ask("GET", "/reports/acme/q1", as("alice", "user", "acme"), "reports.example.com")).status).toBe(200);
    expect((await ask("GET", "/reports/acme/q1", as("bob", "user", "globex"), "reports.example.com")).status).toBe(403);
    // Another host falls through to the generic mapping, which does not allow /reports/*.
    expect((await ask("GET", "/reports/acme/q1", as("alice", "user", "acme"), "other.example.com")).status).toBe(403);
    expect(svc.decisions().at(-1)).toMatchObject({ route: "generic", resourceKind: "route" });
  });

  it("answers 200 on a shadow route the PDP denies and records shadow_deny", async () => {
    const res = await ask("DELETE", "/beta/thing", as("alice", "user"));
    expect(res.status).toBe(200);
    expect(res.header("x-auth-principal")).toBe("alice");
    expect(svc.decisions().at(-1)).toMatchObject({ route: "beta", outcome: "shadow_deny", principal: "alice" });
  });
});

describe("identity", () => {
  it("answers 401 with a Bearer challenge when nobody is identified", async () => {
    const res = await ask("GET", "/api/items");
    expect(res.status).toBe(401);
    expect(res.header("www-authenticate")).toBe("Bearer");
    expect(JSON.parse(res.body)).toEqual({ error: "unauthenticated", requestId: res.header("x-request-id") });
  });

  it("refuses a planted identity header in any case", async () => {
    for (const name of ["X-Auth-Principal", "x-auth-principal", "X-AUTH-ROLES"]) {
      const res = await ask("GET", "/api/items", [...as("alice", "user"), [name, "root"]]);
      expect(res.status, name).toBe(400);
      expect(JSON.parse(res.body)).toEqual({ error: "bad_request", requestId: res.header("x-request-id") });
    }
  });

  it("never answers a planted identity header spelled with _ or . (uWebSockets.js drops the request)", async () => {
    // Measured: this uWS build never hands a header name containing "_" or "." to the handler;
    // it closes the connection without a byte after its idle timeout (~10 s). The rebuild
    // refuses these spellings with 400 as well (test/unit/forwarded.test.ts) should a build pass them.
    const answers = await Promise.all(
      ["x_auth_principal", "X.Auth.Principal"].map((name) =>
        rawRequest(svc.port, { headers: forwarded("GET", "/api/items", undefined, [...as("alice", "user"), [name, "root"]]), timeoutMs: 25_000 }),
      ),
    );
    for (const res of answers) expect(res.status).toBe(0);
  }, 30_000);

  it("uses the anonymous principal when configured", async () => {
    const anon = await startService(pdp.grpcTarget, { ...BASE, identity: { ...BASE.identity, anonymous: { id: "anonymous", roles: ["anonymous"] } } });
    try {
      const ok = await rawRequest(anon.port, { headers: forwarded("GET", "/public/index.html") });
      expect(ok.status).toBe(200);
      expect(ok.header("x-auth-principal")).toBe("anonymous");
      expect((await rawRequest(anon.port, { headers: forwarded("GET", "/api/items") })).status).toBe(403);
      // Trusted headers still come first.
      expect((await rawRequest(anon.port, { headers: forwarded("GET", "/api/items", undefined, as("alice", "user")) })).status).toBe(200);
    } finally {
      await anon.stop();
    }
  });
});

describe("unmatched: deny", () => {
  it("denies unmatched requests without asking the PDP", async () => {
    const strict = await startService(pdp.grpcTarget, { ...BASE, unmatched: "deny" });
    try {
      const before = await pdp.checkCalls();
      const res = await rawRequest(strict.port, { headers: forwarded("GET", "/api/items", undefined, as("root", "admin")) });
      expect(res.status).toBe(403);
      expect(await pdp.checkCalls()).toBe(before);
      expect(strict.decisions().at(-1)).toMatchObject({ route: "unmatched", outcome: "deny" });
      expect((await rawRequest(strict.port, { headers: forwarded("GET", "/documents/7", undefined, as("bob", "user")) })).status).toBe(200);
    } finally {
      await strict.stop();
    }
  });
});

describe("responses", () => {
  it("reuses a well-formed X-Request-Id and replaces a malformed one", async () => {
    const kept = await ask("GET", "/api/items", [...as("alice", "user"), ["X-Request-Id", "abc-123.X_y"]]);
    expect(kept.header("x-request-id")).toBe("abc-123.X_y");
    const replaced = await ask("GET", "/api/items", [...as("alice", "user"), ["X-Request-Id", "bad id\t"]]);
    expect(replaced.header("x-request-id")).not.toContain("bad");
  });

  it("percent-encodes control characters and non-ASCII in identity header values", async () => {
    const res = await rawRequest(svc.port, {
      headers: forwarded("GET", "/api/items", undefined, [
        // The UTF-8 bytes of "René%" on the wire.
        ["Remote-User", Buffer.from("Ren\u00e9%", "utf8").toString("latin1")],
        ["Remote-Groups", "user"],
      ]),
    });
    expect(res.status).toBe(200);
    expect(res.header("x-auth-principal")).toBe("Ren%C3%A9%25");
  });

  it("answers any method and path on the listener through the normal decision", async () => {
    for (const method of ["HEAD", "OPTIONS", "POST", "PUT", "DELETE"]) {
      const res = await rawRequest(svc.port, { method, path: "/anything?x=1", headers: forwarded("GET", "/admin/x", undefined, as("alice", "user")) });
      expect(res.status, method).toBe(403);
    }
    // An unknown method is dropped by uWebSockets.js before the handler: no answer at all, never a 2xx.
    const brew = await rawRequest(svc.port, { method: "BREW", headers: forwarded("GET", "/api/items", undefined, as("alice", "user")) });
    expect(brew.status).toBe(0);
  });
});
