import { isIPv6 as nodeIsIPv6, isIPv4 as nodeIsIPv4 } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { normalizeHeaderName } from "../../src/config/schema.js";
import { Refusal } from "../../src/errors.js";
import { isIPv4, isIPv6, rebuildRequest, type RebuildOptions } from "../../src/request/forwarded.js";

type Headers = Array<[string, string]>;

const OPTS: RebuildOptions = {
  paths: { mergeSlashes: false, stripMatrixParams: false, caseInsensitive: false },
  ownHeaderNames: new Set(["X-Auth-Principal", "X-Auth-Roles"].map(normalizeHeaderName)),
};

function base(): Headers {
  return [
    ["host", "forwardauth:8080"],
    ["x-forwarded-method", "GET"],
    ["x-forwarded-proto", "https"],
    ["x-forwarded-host", "api.example.com"],
    ["x-forwarded-uri", "/orders/42?expand=items"],
    ["x-forwarded-for", "203.0.113.9, 10.0.0.1"],
  ];
}

/** base() with `name` replaced (value string), removed (null), or appended again (list). */
function withHeader(name: string, value: string | null | string[], headers = base()): Headers {
  const out = headers.filter(([n]) => n !== name);
  if (typeof value === "string") out.push([name, value]);
  else if (Array.isArray(value)) for (const v of value) out.push([name, v]);
  return out;
}

function refusal(headers: Headers, opts: RebuildOptions = OPTS): Refusal {
  try {
    rebuildRequest(headers, opts);
  } catch (error) {
    expect(error).toBeInstanceOf(Refusal);
    return error as Refusal;
  }
  throw new Error("expected a Refusal");
}

function expect400(headers: Headers, opts: RebuildOptions = OPTS): void {
  const r = refusal(headers, opts);
  expect(r.code).toBe("bad_request");
  expect(r.status).toBe(400);
}

describe("rebuildRequest: the happy path", () => {
  it("rebuilds method, scheme, host, path, query, ip and headers", () => {
    const req = rebuildRequest(base(), OPTS);
    expect(req).toMatchObject({
      method: "GET",
      scheme: "https",
      host: "api.example.com",
      path: "/orders/42",
      rawQuery: "expand=items",
      query: { expand: "items" },
      ip: "10.0.0.1",
    });
    expect(req.headers.get("x-forwarded-host")).toBe("api.example.com");
    expect(req.headers).toBeInstanceOf(Map);
    expect(Object.getPrototypeOf(req.query)).toBeNull();
  });

  it("joins repeated headers with ', ' (cookies with '; ') and lower-cases names", () => {
    const req = rebuildRequest([...base(), ["accept", "a"], ["Accept", "b"], ["cookie", "a=1"], ["cookie", "b=2"]], OPTS);
    expect(req.headers.get("accept")).toBe("a, b");
    expect(req.headers.get("cookie")).toBe("a=1; b=2");
    expect(req.headers.has("Accept")).toBe(false);
  });

  it("canonicalises the path with the configured options", () => {
    const opts = { ...OPTS, paths: { mergeSlashes: true, stripMatrixParams: true, caseInsensitive: true } };
    const req = rebuildRequest(withHeader("x-forwarded-uri", "//Orders;jsessionid=1/%43af%c3%89/?q=1"), opts);
    expect(req.path).toBe("/orders/caf%C3%A9/");
    expect(req.rawQuery).toBe("q=1");
  });
});

describe("rebuildRequest: X-Forwarded-Method / -Uri / -Host are required once, non-empty", () => {
  for (const name of ["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"]) {
    it(`${name} missing → 400`, () => expect400(withHeader(name, null)));
    it(`${name} empty → 400`, () => expect400(withHeader(name, "")));
    it(`${name} repeated → 400`, () => {
      const value = base().find(([n]) => n === name)![1];
      expect400(withHeader(name, [value, value]));
    });
  }
});

describe("rebuildRequest: method", () => {
  it.each(["GET", "POST", "DELETE", "PROPFIND", "M-SEARCH", "X_CUSTOM1", "A".repeat(32)])("accepts %j", (m) => {
    expect(rebuildRequest(withHeader("x-forwarded-method", m), OPTS).method).toBe(m);
  });
  it.each(["get", "Get", "gET", " GET", "GET ", "G ET", "1GET", "-GET", "GET/1", "GÉT", "GET\u0000", "A".repeat(33), "GET,POST"])(
    "refuses %j",
    (m) => expect400(withHeader("x-forwarded-method", m)),
  );
});

describe("rebuildRequest: scheme", () => {
  it("absent → http", () => {
    expect(rebuildRequest(withHeader("x-forwarded-proto", null), OPTS).scheme).toBe("http");
  });
  it.each(["http", "https"])("accepts %j", (p) => {
    expect(rebuildRequest(withHeader("x-forwarded-proto", p), OPTS).scheme).toBe(p);
  });
  it.each(["", "ftp", "HTTPS", "Http", "https ", "https,http", "https, http", "ws", "wss"])("refuses %j", (p) =>
    expect400(withHeader("x-forwarded-proto", p)),
  );
  it("repeated → 400 (even when equal)", () => expect400(withHeader("x-forwarded-proto", ["https", "https"])));
});

describe("rebuildRequest: host", () => {
  const host = (value: string, proto = "https") =>
    rebuildRequest(withHeader("x-forwarded-host", value, withHeader("x-forwarded-proto", proto)), OPTS).host;

  it("lower-cases", () => expect(host("API.Example.COM")).toBe("api.example.com"));
  it("removes one trailing dot", () => {
    expect(host("api.example.com.")).toBe("api.example.com");
    expect(host("api.example.com.:8443")).toBe("api.example.com:8443");
  });
  it("removes the scheme's default port only", () => {
    expect(host("api.example.com:443", "https")).toBe("api.example.com");
    expect(host("api.example.com:80", "http")).toBe("api.example.com");
    expect(host("api.example.com:80", "https")).toBe("api.example.com:80");
    expect(host("api.example.com:443", "http")).toBe("api.example.com:443");
    expect(rebuildRequest(withHeader("x-forwarded-host", "a.test:80", withHeader("x-forwarded-proto", null)), OPTS).host).toBe("a.test");
  });
  it("keeps a non-default port", () => expect(host("api.example.com:8443")).toBe("api.example.com:8443"));
  it("accepts IPv4, IPv6 literals and single labels", () => {
    expect(host("192.0.2.1:8080")).toBe("192.0.2.1:8080");
    expect(host("[::1]:8080")).toBe("[::1]:8080");
    expect(host("[2001:DB8::1]:443")).toBe("[2001:db8::1]");
    expect(host("[::ffff:192.0.2.1]")).toBe("[::ffff:192.0.2.1]");
    expect(host("localhost")).toBe("localhost");
    expect(host("my_host-1.internal")).toBe("my_host-1.internal");
  });
  it.each([
    ["userinfo", "user@api.example.com"],
    ["userinfo with password", "user:pw@api.example.com"],
    ["path", "api.example.com/admin"],
    ["backslash", "api.example.com\\admin"],
    ["query", "api.example.com?x"],
    ["fragment", "api.example.com#x"],
    ["space", "api.example.com "],
    ["inner space", "api example.com"],
    ["tab", "api.example.com\t"],
    ["control", "api.example.com\u0000"],
    ["comma", "a.example.com,b.example.com"],
    ["comma-space", "a.example.com, b.example.com"],
    ["non-ASCII", "exämple.com"],
    ["empty label", "api..example.com"],
    ["leading dot", ".example.com"],
    ["two trailing dots", "example.com.."],
    ["only a dot", "."],
    ["only a port", ":8080"],
    ["empty port", "example.com:"],
    ["port 0", "example.com:0"],
    ["port too big", "example.com:65536"],
    ["leading-zero port", "example.com:080"],
    ["signed port", "example.com:+80"],
    ["two ports", "example.com:80:80"],
    ["bad char", "exa*mple.com"],
    ["unterminated IPv6", "[::1"],
    ["bad IPv6", "[::g]"],
    ["IPv6 without brackets", "::1"],
    ["IPv6 zone", "[fe80::1%25eth0]"],
    ["junk after IPv6", "[::1]x"],
  ])("%s → 400", (_, value) => expect400(withHeader("x-forwarded-host", value)));
});

describe("rebuildRequest: X-Forwarded-Uri", () => {
  it("splits at the first ? and keeps the raw query", () => {
    const req = rebuildRequest(withHeader("x-forwarded-uri", "/a?b=1?c=2"), OPTS);
    expect(req.path).toBe("/a");
    expect(req.rawQuery).toBe("b=1?c=2");
    expect(req.query).toEqual({ b: "1?c=2" });
  });
  it("no query → empty rawQuery and query", () => {
    const req = rebuildRequest(withHeader("x-forwarded-uri", "/a"), OPTS);
    expect(req.rawQuery).toBe("");
    expect({ ...req.query }).toEqual({});
  });
  it("over 8192 bytes → 414 uri_too_long (before any other check)", () => {
    const long = "/" + "a".repeat(8192);
    const r = refusal(withHeader("x-forwarded-uri", long));
    expect(r.code).toBe("uri_too_long");
    expect(r.status).toBe(414);
    expect(rebuildRequest(withHeader("x-forwarded-uri", long.slice(0, 8192)), OPTS).path).toHaveLength(8192);
    // Checked before the identity-header and duplicate checks.
    expect(refusal([...withHeader("x-forwarded-uri", [long, "/"]), ["x-auth-principal", "x"]]).code).toBe("uri_too_long");
    // UTF-8 bytes are counted.
    expect(refusal(withHeader("x-forwarded-uri", "/" + "é".repeat(4096))).code).toBe("uri_too_long");
    expect(refusal(withHeader("x-forwarded-uri", "/abc"), { ...OPTS, maxUriBytes: 3 }).code).toBe("uri_too_long");
  });
  it.each([
    ["fragment", "/a#b"],
    ["fragment in query", "/a?b=1#c"],
    ["absolute-form", "http://api.example.com/a"],
    ["asterisk-form", "*"],
    ["relative", "a/b"],
    ["raw space in query", "/a?b=1 2"],
    ["control in query", "/a?b=\u0001"],
    ["non-ASCII in query", "/a?b=é"],
    ["malformed escape in query", "/a?b=%zz"],
    ["truncated escape in query", "/a?b=%4"],
    ["invalid UTF-8 in query", "/a?b=%C0%AE"],
    ["invalid UTF-8 in query name", "/a?%FF=1"],
    ["path refused by canonicalisation", "/a/../admin"],
    ["encoded slash", "/a%2Fb"],
    ["double slash", "//a"],
  ])("%s → 400", (_, uri) => expect400(withHeader("x-forwarded-uri", uri)));

  it("parses the query: repeats as lists in order, + as space, percent-decoding", () => {
    const req = rebuildRequest(withHeader("x-forwarded-uri", "/s?tag=a&tag=b&q=hello+world%21&e=&f&&=skipped&tag=c&n%C3%A9=%C3%A9&p=%2B"), OPTS);
    expect({ ...req.query }).toEqual({ tag: ["a", "b", "c"], q: "hello world!", e: "", f: "", "né": "é", p: "+" });
  });
  it("query keys cannot pollute prototypes", () => {
    const req = rebuildRequest(withHeader("x-forwarded-uri", "/s?__proto__=x&constructor=y&__proto__=z"), OPTS);
    expect(req.query["__proto__"]).toEqual(["x", "z"]);
    expect(req.query["constructor"]).toBe("y");
    expect(({} as Record<string, unknown>)["x"]).toBeUndefined();
    expect(Object.getPrototypeOf(req.query)).toBeNull();
  });
});

describe("rebuildRequest: X-Forwarded-For", () => {
  const ip = (...values: string[]) => rebuildRequest(withHeader("x-forwarded-for", values), OPTS).ip;
  it("absent → ''", () => expect(rebuildRequest(withHeader("x-forwarded-for", null), OPTS).ip).toBe(""));
  it("takes the right-most entry of the last line, trimmed", () => {
    expect(ip("203.0.113.9")).toBe("203.0.113.9");
    expect(ip("1.1.1.1, 2.2.2.2,3.3.3.3 ")).toBe("3.3.3.3");
    expect(ip("1.1.1.1, 2.2.2.2", "4.4.4.4")).toBe("4.4.4.4");
    expect(ip("evil, 5.5.5.5")).toBe("5.5.5.5");
  });
  it("accepts IPv6, brackets and ports", () => {
    expect(ip("2001:DB8::1")).toBe("2001:db8::1");
    expect(ip("[2001:db8::1]")).toBe("2001:db8::1");
    expect(ip("[2001:db8::1]:4711")).toBe("2001:db8::1");
    expect(ip("192.0.2.1:4711")).toBe("192.0.2.1");
    expect(ip("::ffff:192.0.2.1")).toBe("::ffff:192.0.2.1");
  });
  it.each(["", " ", "1.2.3.4,", "unknown", "_hidden", "1.2.3", "1.2.3.256", "01.2.3.4", "1.2.3.4:", "1.2.3.4:99999", "[::1", "[::1]x", "::1::", "host.example", "1.2.3.4 5.6.7.8"])(
    "right-most entry %j → 400",
    (v) => expect400(withHeader("x-forwarded-for", v)),
  );
});

describe("rebuildRequest: planted identity headers", () => {
  it.each(["X-Auth-Principal", "x-auth-principal", "x_auth_principal", "X.Auth.Principal", "X_AUTH_ROLES", "x-auth.roles"])("%j → 400", (name) => {
    const r = refusal([...base(), [name, "admin"]]);
    expect(r.code).toBe("bad_request");
  });
  it("other headers with similar names pass", () => {
    expect(() => rebuildRequest([...base(), ["x-auth-principals", "a"], ["x-auth", "b"]], OPTS)).not.toThrow();
  });
  it("an empty set of own headers refuses nothing", () => {
    expect(() => rebuildRequest([...base(), ["x-auth-principal", "a"]], { ...OPTS, ownHeaderNames: new Set() })).not.toThrow();
  });
});

describe("IP validators agree with node:net", () => {
  const ipToken = fc.constantFrom("::", ":", "0", "1", "a", "F", "ffff", "12345", "db8", ".", "1.2.3.4", "255", "256", "01", "g", "0:0", "2001");
  const candidate = fc.array(ipToken, { maxLength: 14 }).map((p) => p.join(""));
  it("isIPv6", () => {
    fc.assert(fc.property(candidate, (s) => {
      expect(isIPv6(s), s).toBe(nodeIsIPv6(s));
    }), { numRuns: 20_000 });
    for (const s of ["::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8:9", ":1", "1:", "1:::2", "1::2::3"])
      expect(isIPv6(s), s).toBe(nodeIsIPv6(s));
  });
  it("isIPv4", () => {
    fc.assert(fc.property(candidate, (s) => {
      expect(isIPv4(s), s).toBe(nodeIsIPv4(s));
    }), { numRuns: 20_000 });
  });
});

describe("rebuildRequest: properties", () => {
  const names = fc.constantFrom(
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-for",
    "X-Forwarded-Host",
    "x_auth_principal",
    "cookie",
    "__proto__",
    "constructor",
    "authorization",
  );
  const values = fc.oneof(
    fc.constantFrom("GET", "get", "/", "/a?b=1&b=2", "//a", "/%2e%2e/", "https", "http", "api.example.com:443", "[::1]:80", "1.2.3.4", "", "a, b", "/a#b"),
    fc.string({ maxLength: 30 }),
    fc.string({ unit: "binary", maxLength: 30 }),
    fc.string({ unit: fc.constantFrom(..."/?=&%+.;:[]@,#aA19fF "), maxLength: 30 }),
  );
  const headerList = fc.array(fc.tuple(fc.oneof(names, fc.string({ maxLength: 12 })), values), { maxLength: 12 });

  it("never throws anything but a Refusal, and results are well-formed", () => {
    fc.assert(
      fc.property(headerList, fc.boolean(), (extra, mergeSlashes) => {
        const opts = { ...OPTS, paths: { ...OPTS.paths, mergeSlashes }, maxUriBytes: 64 };
        for (const headers of [extra, [...base(), ...extra], [...base().filter(([n]) => !extra.some(([e]) => e === n)), ...extra]]) {
          try {
            const req = rebuildRequest(headers, opts);
            expect(req.path.startsWith("/")).toBe(true);
            expect(["http", "https"]).toContain(req.scheme);
            expect(req.host).not.toBe("");
            expect(req.host).toBe(req.host.toLowerCase());
            expect(Object.getPrototypeOf(req.query)).toBeNull();
            expect(req.headers).toBeInstanceOf(Map);
          } catch (error) {
            expect(error).toBeInstanceOf(Refusal);
            expect(["bad_request", "uri_too_long"]).toContain((error as Refusal).code);
          }
        }
      }),
      { numRuns: 10_000 },
    );
  });
});

describe("planted identity headers in every token spelling", () => {
  it("refuses our header names written with any non-alphanumeric separator", () => {
    const opts: RebuildOptions = { paths: { mergeSlashes: false, stripMatrixParams: false, caseInsensitive: false }, ownHeaderNames: new Set(["x-auth-principal"]) };
    for (const sep of ["!", "#", "$", "%", "&", "'", "*", "+", ".", "^", "_", "`", "|", "~"]) {
      const headers = [
        ["x-forwarded-method", "GET"],
        ["x-forwarded-uri", "/"],
        ["x-forwarded-host", "a.example"],
        [`x${sep}auth${sep}principal`, "root"],
      ] as const;
      expect(() => rebuildRequest(headers, opts), sep).toThrow(Refusal);
    }
  });
});
