import { describe, expect, it } from "vitest";
import fc from "fast-check";
import FindMyWay from "find-my-way";
import { resourceKey } from "../../src/canonical-keys.js";
import { configSchema } from "../../src/config/schema.js";
import { ConfigError, Refusal } from "../../src/errors.js";
import { canonicalizePath } from "../../src/request/canonical-path.js";
import { compileMapper, type Mapping } from "../../src/mapping/mapper.js";
import { compileRouteTable, MAX_PARAM_LENGTH, parsePathPattern, type PathPattern, type RouteEntry } from "../../src/mapping/routes.js";
import type { ForwardedRequest, Identity } from "../../src/model.js";

// ---------------------------------------------------------------------------------------------
// Helpers

function mapperFor(routes: unknown[], extra: Record<string, unknown> = {}) {
  return compileMapper(configSchema.parse({ pdp: { address: "127.0.0.1:3593" }, routes, ...extra }));
}

function req(over: Partial<ForwardedRequest> = {}): ForwardedRequest {
  return {
    method: "GET",
    scheme: "https",
    host: "api.example.com",
    path: "/",
    rawQuery: "",
    query: {},
    ip: "10.0.0.1",
    headers: new Map(),
    ...over,
  };
}

const alice: Identity = {
  principal: { id: "alice", roles: ["user", "admin"], attr: {} },
  claims: { sub: "alice", org: { id: "o-1", plan: "gold" }, groups: ["g1", "g2"] },
};

function check(m: Mapping) {
  if (m.kind !== "check") throw new Error(`expected a check, got ${JSON.stringify(m)}`);
  return m;
}

/** The route name (or deny/generic label) a request maps to. */
function routeOf(mapper: ReturnType<typeof mapperFor>, over: Partial<ForwardedRequest>): string {
  const m = mapper.map(req(over), alice);
  return m.kind === "check" ? m.route : `deny:${m.route}`;
}

function route(name: string, over: Record<string, unknown> = {}) {
  return { name, resource: { kind: name, id: "x" }, action: "{method}", ...over };
}

function configErrorOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  throw new Error("expected a ConfigError");
}

/**
 * Config paths of the problems found when loading these routes, whether the schema or the
 * mapper reports them (zod "routes.0.a" is written "routes[0].a" like ConfigError's).
 */
function loadProblems(routes: unknown[]): string[] {
  const parsed = configSchema.safeParse({ pdp: { address: "127.0.0.1:3593" }, routes });
  if (!parsed.success) {
    return parsed.error.issues.map((i) => i.path.map((k) => (typeof k === "number" ? `[${k}]` : `.${String(k)}`)).join("").slice(1));
  }
  return configErrorOf(() => compileMapper(parsed.data)).map((p) => p.slice(0, p.indexOf(":")));
}

function refusalOf(fn: () => unknown): Refusal {
  try {
    fn();
  } catch (e) {
    if (e instanceof Refusal) return e;
    throw e;
  }
  throw new Error("expected a Refusal");
}

// ---------------------------------------------------------------------------------------------

describe("route matching: first match wins in config order", () => {
  it("an earlier wildcard beats a later, more specific parameter route (and the reverse)", () => {
    const a = mapperFor([route("wild", { path: "/orders/*" }), route("param", { path: "/orders/:id" })]);
    expect(routeOf(a, { path: "/orders/1" })).toBe("wild");
    const b = mapperFor([route("param", { path: "/orders/:id" }), route("wild", { path: "/orders/*" })]);
    expect(routeOf(b, { path: "/orders/1" })).toBe("param");
    expect(routeOf(b, { path: "/orders/1/items" })).toBe("wild");
  });

  it("an earlier parameter route beats a later static route", () => {
    const m = mapperFor([route("param", { path: "/orders/:id" }), route("static", { path: "/orders/new" })]);
    expect(routeOf(m, { path: "/orders/new" })).toBe("param");
  });

  it("an earlier route that covers a later one completely is a config error", () => {
    const problems = configErrorOf(() =>
      mapperFor([
        route("all"),
        route("after", { path: "/x" }),
        route("getx", { path: "/y", methods: ["GET"] }),
        route("getx-again", { path: "/y", methods: ["GET"], hosts: ["api.example.com"] }),
      ]),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^routes\[1\]: can never match, routes\[0\] comes first/),
      expect.stringMatching(/^routes\[2\]: can never match, routes\[0\] comes first/),
      expect.stringMatching(/^routes\[3\]: can never match, routes\[0\] comes first/),
    ]);
    expect(configErrorOf(() => mapperFor([route("a", { path: "/y" }), route("b", { path: "/y", methods: ["GET"] })]))).toEqual([
      expect.stringMatching(/^routes\[1\]: can never match, routes\[0\]/),
    ]);
    expect(
      configErrorOf(() => mapperFor([route("a", { hosts: ["*.example.org"] }), route("b", { path: "/y", hosts: ["a.b.example.org:8443"] })])),
    ).toEqual([expect.stringMatching(/^routes\[1\]: can never match, routes\[0\]/)]);
  });

  it("a static route before a parameter route takes its own path only", () => {
    const m = mapperFor([route("static", { path: "/orders/new" }), route("param", { path: "/orders/:id" })]);
    expect(routeOf(m, { path: "/orders/new" })).toBe("static");
    expect(routeOf(m, { path: "/orders/7" })).toBe("param");
  });

  it("a route skipped for its host or method lets a later route with an overlapping path match", () => {
    const m = mapperFor([
      route("a-host", { path: "/x/:id", hosts: ["a.example.com"] }),
      route("post-only", { path: "/x/:id", methods: ["POST"] }),
      route("same-path-any", { path: "/x/:id" }),
      route("rest", { path: "/x/*" }),
    ]);
    expect(routeOf(m, { host: "a.example.com", path: "/x/1" })).toBe("a-host");
    expect(routeOf(m, { host: "b.example.com", path: "/x/1", method: "POST" })).toBe("post-only");
    expect(routeOf(m, { host: "b.example.com", path: "/x/1" })).toBe("same-path-any");
    expect(routeOf(m, { host: "b.example.com", path: "/x/1/2" })).toBe("rest");

    const n = mapperFor([route("a-host", { path: "/x/:id", hosts: ["a.example.com"] }), route("rest", { path: "/x/*" })]);
    expect(routeOf(n, { host: "a.example.com", path: "/x/1" })).toBe("a-host");
    expect(routeOf(n, { host: "b.example.com", path: "/x/1" })).toBe("rest");
  });

  it("the query never takes part in matching", () => {
    const m = mapperFor([route("x", { path: "/x" })]);
    expect(routeOf(m, { path: "/x", rawQuery: "a=1", query: { a: "1" } })).toBe("x");
  });
});

describe("hosts", () => {
  const m = mapperFor([
    route("named", { hosts: ["api.example.com", "*.example.org"] }),
    route("ported", { hosts: ["admin.example.com:8443", "*.internal.example:9000"] }),
  ]);

  it("exact names match on any port, never another name", () => {
    expect(routeOf(m, { host: "api.example.com" })).toBe("named");
    expect(routeOf(m, { host: "api.example.com:8443" })).toBe("named");
    expect(routeOf(m, { host: "www.example.com" })).toBe("generic");
    expect(routeOf(m, { host: "xapi.example.com" })).toBe("generic");
  });

  it("*.example.org matches subdomains at any depth, not the apex", () => {
    expect(routeOf(m, { host: "a.example.org" })).toBe("named");
    expect(routeOf(m, { host: "a.b.example.org" })).toBe("named");
    expect(routeOf(m, { host: "a.example.org:8080" })).toBe("named");
    expect(routeOf(m, { host: "example.org" })).toBe("generic");
    expect(routeOf(m, { host: "badexample.org" })).toBe("generic");
  });

  it("a host written with a port matches only that host:port", () => {
    expect(routeOf(m, { host: "admin.example.com:8443" })).toBe("ported");
    expect(routeOf(m, { host: "admin.example.com" })).toBe("generic");
    expect(routeOf(m, { host: "admin.example.com:9443" })).toBe("generic");
    expect(routeOf(m, { host: "x.internal.example:9000" })).toBe("ported");
    expect(routeOf(m, { host: "x.internal.example" })).toBe("generic");
    expect(routeOf(m, { host: "internal.example:9000" })).toBe("generic");
  });

  it("IPv6 literals are split from their port", () => {
    const v6 = mapperFor([route("v6", { path: "/v6" })]);
    expect(routeOf(v6, { host: "[::1]:8080", path: "/v6" })).toBe("v6");
  });

  it("a default port or an invalid port in config is refused", () => {
    expect(configErrorOf(() => mapperFor([route("a", { hosts: ["a.example.com:443", "b.example.com:99999", "c.example.com:80"] })]))).toEqual([
      expect.stringMatching(/^routes\[0\]\.hosts\[0\]: the default port/),
      expect.stringMatching(/^routes\[0\]\.hosts\[1\]: port must be/),
      expect.stringMatching(/^routes\[0\]\.hosts\[2\]: the default port/),
    ]);
  });
});

describe("paths", () => {
  it("/x/* matches /x/ and below, not /x", () => {
    const m = mapperFor([route("x", { path: "/x/*", resource: { kind: "k", id: "[{params.*}]" } })]);
    expect(routeOf(m, { path: "/x" })).toBe("generic");
    expect(check(m.map(req({ path: "/x/" }), alice)).resource.id).toBe("[]");
    expect(check(m.map(req({ path: "/x/a/b" }), alice)).resource.id).toBe("[a/b]");
    expect(routeOf(m, { path: "/xy" })).toBe("generic");
  });

  it(":param takes one whole segment; trailing slashes are significant", () => {
    const m = mapperFor([route("one", { path: "/u/:id", resource: { kind: "k", id: "{params.id}" } })]);
    expect(check(m.map(req({ path: "/u/42" }), alice)).resource.id).toBe("42");
    expect(routeOf(m, { path: "/u/42/" })).toBe("generic");
    expect(routeOf(m, { path: "/u/42/x" })).toBe("generic");
    expect(routeOf(m, { path: "/u" })).toBe("generic");
    // "/u/" matches with an empty id, which is a 400.
    expect(refusalOf(() => m.map(req({ path: "/u/" }), alice)).code).toBe("bad_request");
  });

  it("a route without a path matches every path and has no parameters", () => {
    const m = mapperFor([route("all", { resource: { kind: "k", id: "{path}" } })]);
    expect(check(m.map(req({ path: "/" }), alice)).resource.id).toBe("/");
    expect(check(m.map(req({ path: "/a/b/c" }), alice)).resource.id).toBe("/a/b/c");
  });

  it("parameters keep the canonical percent-encoding as it appears in the path", () => {
    const m = mapperFor([
      route("files", { path: "/files/:name", resource: { kind: "file", id: "{params.name}" } }),
      route("rest", { path: "/all/*", resource: { kind: "file", id: "{params.*}" } }),
    ]);
    const idOf = (path: string) => {
      // Only canonical paths reach the mapper: make sure these are.
      expect(canonicalizePath(path, { mergeSlashes: false, stripMatrixParams: false, caseInsensitive: false })).toEqual({ ok: true, path });
      return check(m.map(req({ path }), alice)).resource.id;
    };
    expect(idOf("/files/caf%C3%A9:x")).toBe("caf%C3%A9:x");
    expect(idOf("/files/100%25")).toBe("100%25");
    expect(idOf("/files/a%20b%3F%23&c=d")).toBe("a%20b%3F%23&c=d");
    expect(idOf("/all/a,b/%C3%A9/")).toBe("a,b/%C3%A9/");
    // Not canonical, but even if a "%2F" or "%3A" reached the mapper it would not be decoded.
    expect(check(m.map(req({ path: "/files/a%2Fb%3A" }), alice)).resource.id).toBe("a%2Fb%3A");
  });

  it("static text is canonicalised like request paths (raw non-ASCII, hex case, decoded pchar escapes)", () => {
    const m = mapperFor([
      route("raw", { path: "/café/:x" }),
      route("hex", { path: "/na%c3%afve" }),
      route("colon", { path: "/v1/items::batch" }),
      route("encoded-colon", { path: "/v2/items%3Abatch" }),
      route("tilde", { path: "/%7Euser" }),
      route("space", { path: "/a%20b" }),
      route("dot-prefix", { path: "/.*" }),
    ]);
    expect(routeOf(m, { path: "/caf%C3%A9/1" })).toBe("raw");
    expect(routeOf(m, { path: "/na%C3%AFve" })).toBe("hex");
    expect(routeOf(m, { path: "/v1/items:batch" })).toBe("colon");
    expect(routeOf(m, { path: "/v2/items:batch" })).toBe("encoded-colon");
    expect(routeOf(m, { path: "/~user" })).toBe("tilde");
    expect(routeOf(m, { path: "/a%20b" })).toBe("space");
    expect(routeOf(m, { path: "/.well-known/openid-configuration" })).toBe("dot-prefix");
    expect(routeOf(m, { path: "/café/1" })).toBe("generic");
  });

  it("paths.caseInsensitive lower-cases the route's static text but keeps parameter names", () => {
    const routes = [route("orders", { path: "/Orders/:OrderId", resource: { kind: "order", id: "{params.OrderId}" } })];
    const ci = mapperFor(routes, { paths: { caseInsensitive: true } });
    // The canonical path is already lower-cased by then.
    const m = check(ci.map(req({ path: "/orders/abc" }), alice));
    expect([m.route, m.resource.id]).toEqual(["orders", "abc"]);
    const cs = mapperFor(routes);
    expect(routeOf(cs, { path: "/orders/abc" })).toBe("generic");
    expect(routeOf(cs, { path: "/Orders/abc" })).toBe("orders");
    // Non-ASCII is folded like the request path: code points lower-cased, escape hex upper-case.
    const accents = mapperFor([route("cafe", { path: "/CAFÉ/%C3%89T%C3%89" })], { paths: { caseInsensitive: true } });
    expect(routeOf(accents, { path: "/caf%C3%A9/%C3%A9t%C3%A9" })).toBe("cafe");
  });

  it("a parameter up to MAX_PARAM_LENGTH matches; a longer one is a 400, never a fall-through", () => {
    const m = mapperFor([route("p", { path: "/p/:id", resource: { kind: "k", id: "{params.id}" } }), route("all")]);
    const long = "a".repeat(MAX_PARAM_LENGTH);
    expect(check(m.map(req({ path: `/p/${long}` }), alice)).resource.id).toBe(long);
    expect(refusalOf(() => m.map(req({ path: `/p/${long}a` }), alice)).code).toBe("bad_request");
  });

  it("a path that is not canonical is refused (defence in depth)", () => {
    const m = mapperFor([route("x", { path: "/x" })]);
    for (const path of ["x", "/x?a=1", "/x#f"]) expect(refusalOf(() => m.map(req({ path }), alice)).code).toBe("bad_request");
  });

  it("every pattern problem is reported at once with its path", () => {
    const problems = configErrorOf(() =>
      mapperFor([
        route("a", { path: "/x/:a-:b" }),
        route("b", { path: "/x/:id?" }),
        route("c", { path: "/x/:id(^\\d+)" }),
        route("d", { path: "/a*/b" }),
        route("e", { path: "/a//b" }),
        route("f", { path: "/a/%2F" }),
        route("g", { path: "/a/../b" }),
        route("h", { path: "/a/%2A" }),
        route("i", { path: "/a/%zz" }),
        route("j", { path: "/a b" }),
        route("k", { path: "/a:b" }),
        route("l", { path: "/:id/:id" }),
        route("m", { path: "/a/%C3" }),
        route("n", { path: "/a/%2541" }),
        route("o", { path: "/a;b" }),
      ]),
    );
    expect(problems.map((p) => p.slice(0, p.indexOf(":")))).toEqual("abcdefghijklmno".split("").map((_, i) => `routes[${i}].path`));
  });

  it("a template naming a parameter the path does not have is refused at load, with its path", () => {
    const problems = loadProblems([
      route("a", { path: "/u/:userId", resource: { kind: "k", id: "{params.userid}", attr: { x: ["{params.nope}"] } } }),
      route("b", { path: "/w/*", resource: { kind: "k", id: "{params.*}" } }),
      route("c", { resource: { kind: "k", id: "{params.*}" } }),
    ]);
    expect(problems).toEqual(["routes[0].resource.id", "routes[0].resource.attr.x[0]", "routes[2].resource.id"]);
  });
});

describe("methods and actions", () => {
  it("methods filter the route; other methods fall through", () => {
    const m = mapperFor([route("reads", { path: "/r", methods: ["GET", "HEAD"] }), route("custom", { path: "/r", methods: ["PURGE", "MYVERB"] })]);
    expect(routeOf(m, { path: "/r" })).toBe("reads");
    expect(routeOf(m, { path: "/r", method: "HEAD" })).toBe("reads");
    expect(routeOf(m, { path: "/r", method: "MYVERB" })).toBe("custom");
    expect(routeOf(m, { path: "/r", method: "POST" })).toBe("generic");
  });

  it("an actions map gives the action; a method it does not name is denied without rendering", () => {
    const m = mapperFor([
      {
        name: "orders",
        path: "/orders/:id",
        resource: { kind: "order", id: "{params.id}" },
        actions: { GET: "read", PUT: "update" },
      },
    ]);
    expect(check(m.map(req({ path: "/orders/1" }), alice)).action).toBe("read");
    expect(check(m.map(req({ path: "/orders/1", method: "PUT" }), alice)).action).toBe("update");
    expect(m.map(req({ path: "/orders/1", method: "DELETE" }), alice)).toEqual({ kind: "deny", route: "orders" });
    // Unmapped method beats an empty id: 403, not 400.
    expect(m.map(req({ path: "/orders/", method: "DELETE" }), alice)).toEqual({ kind: "deny", route: "orders" });
  });

  it('an action template "{method}" renders the method; one rendering empty is a 400', () => {
    const m = mapperFor([route("a", { path: "/a" }), route("b", { path: "/b", action: "{headers.x-action}" })]);
    expect(check(m.map(req({ path: "/a", method: "PATCH" }), alice)).action).toBe("PATCH");
    expect(check(m.map(req({ path: "/b", headers: new Map([["x-action", "approve"]]) }), alice)).action).toBe("approve");
    expect(refusalOf(() => m.map(req({ path: "/b" }), alice)).code).toBe("bad_request");
  });
});

describe("resource templates", () => {
  const m = mapperFor([
    {
      name: "docs",
      hosts: ["api.example.com"],
      path: "/t/:tenant/docs/:id",
      resource: {
        kind: "document",
        id: "{params.tenant}/{params.id}",
        attr: {
          tenant: "{params.tenant}",
          filter: "{query.filter}",
          tags: "{query.tag}",
          region: "{headers.x-region}",
          owner: "{principal.id}",
          roles: "{principal.roles}",
          org: "{claims.org.id}",
          groups: "{claims.groups}",
          who: "{method} {scheme}://{host}{path} from {ip}",
          empty: "{headers.x-missing}",
          literal: "{{not a template}}",
          count: 3,
          ratio: 0.5,
          public: false,
          nothing: null,
          list: [1, "two", "{headers.x-region}", "{headers.x-missing}", true],
          nested: { a: "{params.id}", b: "{headers.x-missing}", c: [null, { d: "{claims.org.plan}" }] },
        },
        scope: "{claims.org.id}",
        policyVersion: "{headers.x-policy-version}",
      },
      action: "read",
      shadow: true,
    },
  ]);

  const request = req({
    path: "/t/acme/docs/d-1",
    rawQuery: "filter=open&tag=a&tag=b",
    query: { filter: "open", tag: ["a", "b"] },
    headers: new Map([["x-region", "eu"]]),
  });

  it("renders params, query, headers, principal, claims and request fields", () => {
    const r = check(m.map(request, alice));
    expect(r).toEqual({
      kind: "check",
      route: "docs",
      action: "read",
      shadow: true,
      cacheable: true,
      resource: {
        kind: "document",
        id: "acme/d-1",
        scope: "o-1",
        attr: {
          tenant: "acme",
          filter: "open",
          tags: "a,b",
          region: "eu",
          owner: "alice",
          roles: "user,admin",
          org: "o-1",
          groups: "g1,g2",
          who: "GET https://api.example.com/t/acme/docs/d-1 from 10.0.0.1",
          literal: "{not a template}",
          count: 3,
          ratio: 0.5,
          public: false,
          nothing: null,
          list: [1, "two", "eu", true],
          nested: { a: "d-1", c: [null, { d: "gold" }] },
        },
      },
    });
    // Empty renders are left out entirely, not present as undefined.
    expect(Object.keys(r.resource.attr)).not.toContain("empty");
    expect(Object.keys(r.resource)).not.toContain("policyVersion");
  });

  it("scope and policyVersion are included when they render non-empty", () => {
    const r = check(m.map({ ...request, headers: new Map([["x-policy-version", "v2"]]) }, { principal: alice.principal }));
    expect(r.resource.policyVersion).toBe("v2");
    expect(Object.keys(r.resource)).not.toContain("scope"); // no claims: scope renders empty
    expect(r.resource.attr).not.toHaveProperty("region");
  });

  it("an empty resource id or kind is a 400", () => {
    const e = mapperFor([route("e", { resource: { kind: "k", id: "{headers.x-id}" } })]);
    const refusal = refusalOf(() => e.map(req(), alice));
    expect([refusal.code, refusal.status]).toEqual(["bad_request", 400]);
    const k = mapperFor([route("k", { resource: { kind: "{headers.x-kind}", id: "x" } })]);
    expect(refusalOf(() => k.map(req(), alice)).code).toBe("bad_request");
  });

  it("an attr object without variables is computed once and frozen", () => {
    const c = mapperFor([route("c", { resource: { kind: "k", id: "x", attr: { a: 1, b: "two", e: "", l: ["x", ""] } } })]);
    const first = check(c.map(req(), alice)).resource.attr;
    expect(first).toEqual({ a: 1, b: "two", l: ["x"] });
    expect(check(c.map(req(), alice)).resource.attr).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
  });

  it('an attr named "__proto__" is an own property', () => {
    // zod drops a "__proto__" key, so put it into the parsed config directly.
    const config = configSchema.parse({ pdp: { address: "127.0.0.1:3593" }, routes: [route("c")] });
    const r0 = config.routes[0]!;
    const c = compileMapper({ ...config, routes: [{ ...r0, resource: { ...r0.resource, attr: JSON.parse('{"__proto__": "{method}"}') } }] });
    const attr = check(c.map(req(), alice)).resource.attr;
    expect(Object.getPrototypeOf(attr)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(attr, "__proto__")?.value).toBe("GET");
  });
});

describe("unmatched requests", () => {
  it("generic: kind route, id = path, attr = request fields, action = method", () => {
    const m = mapperFor([route("x", { path: "/x" })]);
    const r = m.map(
      req({ method: "DELETE", scheme: "http", host: "h.example:8080", path: "/a/b", rawQuery: "q=1&t=a&t=b", query: { q: "1", t: ["a", "b"] }, ip: "" }),
      alice,
    );
    const resource = {
      kind: "route",
      id: "/a/b",
      attr: { method: "DELETE", host: "h.example:8080", path: "/a/b", scheme: "http", ip: "", query: { q: "1", t: ["a", "b"] } },
    };
    expect(r).toEqual({
      kind: "check",
      route: "generic",
      action: "DELETE",
      shadow: false,
      cacheable: true,
      resource,
      // Written out by the mapper, and the very key the cache would compute from the resource.
      resourceKey: resourceKey(resource),
    });
  });

  it("generic: the resource key it hands over is resourceKey() of its resource, for any request", () => {
    const m = mapperFor([], { unmatched: "generic" });
    const text = fc.string({ unit: fc.constantFrom("a", "1", ":", "/", "{", "}", "s", "o", "é", "\u0000"), maxLength: 6 });
    const query = fc.dictionary(text, fc.oneof(text, fc.array(text, { maxLength: 3 })), { maxKeys: 3 });
    fc.assert(
      fc.property(text, text, text, text, text, fc.constantFrom("http" as const, "https" as const), query, (method, host, path, ip, rawQuery, scheme, q) => {
        const r = m.map(req({ method, host, path: "/" + path, ip, rawQuery, scheme, query: q }), alice);
        if (r.kind !== "check") throw new Error("generic mapping expected");
        expect(r.resourceKey).toBe(resourceKey(r.resource));
      }),
      { numRuns: 2000 },
    );
  });

  it("deny: 403 without a PDP question, labelled unmatched", () => {
    const m = mapperFor([route("x", { path: "/x" })], { unmatched: "deny" });
    expect(m.map(req({ path: "/y" }), alice)).toEqual({ kind: "deny", route: "unmatched" });
    expect(routeOf(m, { path: "/x" })).toBe("x");
  });

  it("no routes at all", () => {
    expect(routeOf(mapperFor([]), { path: "/" })).toBe("generic");
  });
});

// ---------------------------------------------------------------------------------------------
// The grouping of routes into find-my-way routers against a naive reference: one router per
// route, asked in config order.

describe("route table", () => {
  function pattern(p: string | undefined): PathPattern {
    const parsed = parsePathPattern(p, false);
    if (typeof parsed === "string") throw new Error(parsed);
    return parsed;
  }

  it("packs disjoint patterns into one router and splits on overlaps", () => {
    const entries = (paths: (string | undefined)[]): RouteEntry<number>[] =>
      paths.map((p, i) => ({ where: `routes[${i}]`, pattern: pattern(p), value: i }));
    expect(compileRouteTable(entries(["/a", "/b/:id", "/c/*", "/b/:id/x", "/b"]), []).groupCount).toBe(1);
    expect(compileRouteTable(entries(["/a/*", "/a/:id"]), []).groupCount).toBe(2);
    expect(compileRouteTable(entries(["/a/:id", "/a/new"]), []).groupCount).toBe(2);
    expect(compileRouteTable(entries(["/x/*", "/x", undefined]), []).groupCount).toBe(2);
  });

  it("matches exactly like asking one router per route in order (property)", () => {
    const seg = fc.constantFrom("a", "b", ":p", "");
    const patternArb = fc.oneof(
      fc.constant(undefined),
      fc
        .tuple(fc.array(seg, { minLength: 0, maxLength: 3 }), fc.constantFrom("", "/*", "*", "/"))
        .map(([segs, end]) => {
          let n = 0;
          const body = segs.map((s) => (s === ":p" ? `:p${n++}` : s === "" ? "a" : s)).join("/");
          const p = `/${body}${end}`.replace(/\/\/+/g, "/");
          return p;
        }),
    );
    const routeArb = fc.record({
      path: patternArb,
      hosts: fc.option(fc.subarray(["a.com", "*.a.com", "b.com:8443"], { minLength: 1 }), { nil: undefined }),
      methods: fc.option(fc.subarray(["GET", "POST"], { minLength: 1 }), { nil: undefined }),
    });
    const requestArb = fc.record({
      path: fc.array(fc.constantFrom("a", "b", "c", "", "%C3%A9"), { minLength: 1, maxLength: 4 }).map((s) => `/${s.join("/")}`),
      host: fc.constantFrom("a.com", "x.a.com", "b.com", "b.com:8443", "a.com:8443"),
      method: fc.constantFrom("GET", "POST", "PUT"),
    });

    function referenceHost(hosts: string[] | undefined, host: string): boolean {
      if (!hosts) return true;
      const name = host.split(":")[0]!;
      return hosts.some((h) =>
        h.startsWith("*.") ? (h.includes(":") ? host : name).endsWith(h.slice(1)) && (h.includes(":") ? host : name) !== h.slice(2) : h.includes(":") ? h === host : h === name,
      );
    }

    fc.assert(
      fc.property(fc.array(routeArb, { minLength: 1, maxLength: 6 }), fc.array(requestArb, { minLength: 1, maxLength: 10 }), (routes, requests) => {
        const valid = routes.filter((r) => typeof parsePathPattern(r.path, false) !== "string");
        const entries: RouteEntry<number>[] = valid.map((r, i) => ({
          where: `routes[${i}]`,
          pattern: pattern(r.path),
          hosts: r.hosts,
          methods: r.methods,
          value: i,
        }));
        const table = compileRouteTable(entries, []);
        const singles = entries.map((e) => {
          const router = FindMyWay({ maxParamLength: MAX_PARAM_LENGTH });
          router.on("GET", e.pattern.fmw, () => {});
          return router;
        });
        for (const rq of requests) {
          const expected = entries.findIndex(
            (e, i) =>
              singles[i]!.find("GET", rq.path.replaceAll("%", "%25")) !== null &&
              (e.methods === undefined || e.methods.includes(rq.method)) &&
              referenceHost(e.hosts as string[] | undefined, rq.host),
          );
          const got = table.match(rq.method, rq.host, rq.path);
          expect(got === null ? -1 : got.value).toBe(expected);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
