/**
 * Property-based fuzzing of the forwarded-request rebuild and the path canonicaliser (issue 8),
 * with what a client can really put in a header line: visible ASCII, space and tab — no CR/LF
 * (the HTTP parser ends the line there) — mostly near a valid request, so both sides of every
 * rule are reached. On top of forwarded.test.ts / canonical-path.test.ts (arbitrary strings):
 * - they never throw anything but a Refusal, and what they accept is well-formed and canonical;
 * - the two agree: a path the canonicaliser refuses is refused in a request, and an accepted
 *   request carries exactly the canonical path;
 * - the verdict does not depend on header order;
 * - nothing they reject is ever allowed: through decide() with the real identity and mapping,
 *   a refused request never reaches the PDP and its verdict is 400/414/431.
 * The same property against the real PDP with a permissive policy: hostile-input.test.ts.
 */
import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { configSchema, normalizeHeaderName } from "../../src/config/schema.js";
import type { Checker } from "../../src/decision/checker.js";
import { createDecider, type HeaderList } from "../../src/decision/decide.js";
import { Refusal } from "../../src/errors.js";
import { createIdentityResolver } from "../../src/identity/resolve.js";
import { compileMapper } from "../../src/mapping/mapper.js";
import type { Check } from "../../src/model.js";
import { canonicalizePath, type PathOptions } from "../../src/request/canonical-path.js";
import { rebuildRequest, type RebuildOptions } from "../../src/request/forwarded.js";

const OWN_HEADERS = ["X-Auth-User", "X-Auth-Roles"];
const OWN = new Set(OWN_HEADERS.map(normalizeHeaderName));

// ── generators ────────────────────────────────────────────────────────────────────────────────

/** Bytes a client can put in a header value. */
const VALUE_CHARS = [..." \t", ...Array.from({ length: 0x7e - 0x20 }, (_, i) => String.fromCharCode(0x21 + i))];
const junk = (max: number) => fc.string({ unit: fc.constantFrom(...VALUE_CHARS), maxLength: max });
/** Mostly valid, sometimes hostile, now and then anything. */
const mostly = <T,>(valid: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>, anything?: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 12, arbitrary: valid }, { weight: 3, arbitrary: hostile }, ...(anything ? [{ weight: 1, arbitrary: anything }] : []));

const SEGMENT_OK = ["a", "api", "Z9", "~", "-", "_", "!", "$", "&", "'", "(", ")", "*", "+", ",", "=", ":", "@", "%41", "%7e", "%C3%A9", "%c3%a9", "%E2%84%AA", "%F0%9F%98%80", "%20", "x.y", "...", ".a"];
const SEGMENT_BAD = [
  ".", "..", "%2e", "%2E%2e", ".%2E", "%2F", "%2f", "%5C", "\\", ";", ";x=1", "%3B", "%00", "%09", "%0a", "%7F", "%25", "%2541", "%25zz", "%zz", "%",
  "%4", "%C3", "%A9", "%C0%AE", "%E0%80%AE", "%ED%A0%80", "%C2%85", "%FF", "#", "?", "|", "[", "]", " ", "\t", '"', "<", "{", "",
];
const segment = fc.array(mostly(fc.constantFrom(...SEGMENT_OK), fc.constantFrom(...SEGMENT_BAD)), { minLength: 1, maxLength: 3 }).map((t) => t.join(""));
/** A raw path: "/" + segments, with an optional trailing slash; sometimes anything. */
const rawPath = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(fc.array(segment, { minLength: 1, maxLength: 5 }), fc.boolean()).map(([s, slash]) => "/" + s.join("/") + (slash ? "/" : "")) },
  { weight: 1, arbitrary: junk(30) },
  { weight: 1, arbitrary: junk(30).map((s) => "/" + s) },
);
const query = fc
  .array(mostly(fc.constantFrom("a=1", "a=2", "b", "c=%20", "d=+", "f=%C3%A9", "__proto__=1", "x=a/b", "y=?", ""), fc.constantFrom("e=%ZZ", "g=%FF", "h=%00", "#", "=x", "%")), {
    minLength: 1,
    maxLength: 4,
  })
  .map((q) => "?" + q.join("&"));
const uri = fc.tuple(rawPath, fc.option(query, { nil: "" })).map(([p, q]) => p + q);
const method = mostly(fc.constantFrom("GET", "POST", "DELETE", "PROPFIND", "M-SEARCH", "X1"), fc.constantFrom("get", "G ET", "GET,POST", "", "A".repeat(33), "GET/1"), junk(8));
const host = mostly(
  fc.constantFrom("app.example.com", "APP.Example.COM.", "app.example.com:80", "app.example.com:443", "app.example.com:8080", "[::1]", "[::1]:443", "1.2.3.4", "-a-.b_c"),
  fc.constantFrom("[fe80::1%25eth0]", "a..b", "a b", "a,b", "user@host", "host/path", "", ":80", "app.example.com:0", "app.example.com:65536", "app.example.com:080", "[::1", "a:b:c"),
  junk(16),
);
const proto = fc.oneof(fc.constant(undefined), mostly(fc.constantFrom("http", "https"), fc.constantFrom("HTTPS", "ws", "", "http,https"), junk(6)));
const xff = fc.oneof(
  fc.constant(undefined),
  mostly(fc.constantFrom("203.0.113.7", "1.2.3.4, 5.6.7.8", "::1", "[::1]:8080", "1.2.3.4:80", "unknown, 10.0.0.1"), fc.constantFrom("01.2.3.4", "unknown", "", "1.2.3.4,", "[::1"), junk(16)),
);
/** Other header lines a client sends, own identity header spellings among them (always refused). */
const otherHeader = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom("accept", "cookie", "user-agent", "x-custom", "__proto__", "constructor"), junk(20)) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("x-auth-user", "X-AUTH-ROLES", "x_auth_user", "x.auth.roles"), junk(8)) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto"), junk(8)) },
);
const pathOptions: fc.Arbitrary<PathOptions> = fc.record({ mergeSlashes: fc.boolean(), stripMatrixParams: fc.boolean(), caseInsensitive: fc.boolean() });

/** The header list as the service gets it from the parser: OWS trimmed, names as sent. */
const ows = (v: string) => v.replace(/^[ \t]+|[ \t]+$/g, "");
const headerList = fc
  .record({ method, uri, host, proto, xff, others: fc.array(otherHeader, { maxLength: 3 }), withIdentity: fc.boolean() })
  .map(({ method, uri, host, proto, xff, others, withIdentity }) => {
    const list: Array<[string, string]> = [
      ["host", "forwardauth:8080"],
      ["x-forwarded-method", method],
      ["x-forwarded-uri", uri],
      ["x-forwarded-host", host],
    ];
    if (proto !== undefined) list.push(["x-forwarded-proto", proto]);
    if (xff !== undefined) list.push(["x-forwarded-for", xff]);
    if (withIdentity) list.push(["remote-user", "root"], ["remote-groups", "admin"]);
    list.push(...others);
    return list.map(([k, v]) => [k, ows(v)] as [string, string]);
  });

function outcome(headers: HeaderList, opts: RebuildOptions): { ok: true; req: ReturnType<typeof rebuildRequest> } | { ok: false; code: string } {
  try {
    return { ok: true, req: rebuildRequest(headers, opts) };
  } catch (error) {
    // Nothing but a Refusal, ever.
    expect(error).toBeInstanceOf(Refusal);
    return { ok: false, code: (error as Refusal).code };
  }
}

// ── properties ────────────────────────────────────────────────────────────────────────────────

describe("rebuildRequest on header-line bytes", () => {
  it("never throws anything but a Refusal; what it accepts is well-formed and canonical", () => {
    let accepted = 0;
    fc.assert(
      fc.property(headerList, pathOptions, fc.constantFrom(undefined, 24, 64), (headers, paths, maxUriBytes) => {
        const opts: RebuildOptions = { paths, ownHeaderNames: OWN, ...(maxUriBytes !== undefined ? { maxUriBytes } : {}) };
        const r = outcome(headers, opts);
        if (!r.ok) {
          expect(["bad_request", "uri_too_long", "header_too_large"]).toContain(r.code);
          return;
        }
        accepted++;
        const req = r.req;
        expect(req.method).toMatch(/^[A-Z][A-Z0-9!#$%&'*+.^_`|~-]{0,31}$/);
        expect(["http", "https"]).toContain(req.scheme);
        expect(req.host).toMatch(/^[a-z0-9_.:[\]-]+$/);
        expect(req.host.endsWith(req.scheme === "http" ? ":80" : ":443")).toBe(false);
        expect(req.ip === "" || isIP(req.ip) !== 0).toBe(true);
        // The canonical path is printable ASCII, canonical for these options (a fixed point) …
        expect(req.path).toMatch(/^\/[\x21-\x7e]*$/);
        expect(canonicalizePath(req.path, paths)).toEqual({ ok: true, path: req.path });
        for (const seg of req.path.split("/")) expect(seg === "." || seg === "..").toBe(false);
        // … and no identity header of ours came from the client.
        for (const name of req.headers.keys()) expect(OWN.has(normalizeHeaderName(name))).toBe(false);
      }),
      { numRuns: 5000 },
    );
    expect(accepted).toBeGreaterThan(250);
  });

  it("agrees with canonicalizePath: a refused path is refused in a request, an accepted one is carried exactly", () => {
    fc.assert(
      fc.property(rawPath, pathOptions, (raw, paths) => {
        const headers: HeaderList = [
          ["x-forwarded-method", "GET"],
          ["x-forwarded-host", "app.example.com"],
          ["x-forwarded-uri", raw],
        ];
        const r = outcome(headers, { paths, ownHeaderNames: OWN });
        // The URI rules come first: "#", spaces and controls anywhere are refused; a "?" starts the query.
        if (/[#\x00-\x20\x7f-\uffff]/.test(raw)) {
          expect(r.ok, JSON.stringify(raw)).toBe(false);
          return;
        }
        const q = raw.indexOf("?");
        const canon = canonicalizePath(q < 0 ? raw : raw.slice(0, q), paths);
        if (!canon.ok) {
          expect(r.ok, JSON.stringify(raw)).toBe(false);
          return;
        }
        if (q >= 0) return; // the query has rules of its own
        expect(r.ok, JSON.stringify(raw)).toBe(true);
        if (r.ok) expect(r.req.path).toBe(canon.path);
      }),
      { numRuns: 5000 },
    );
  });

  it("the verdict does not depend on header order (one X-Forwarded-For line: the last one counts by design)", () => {
    fc.assert(
      fc.property(
        headerList.filter((h) => h.filter(([k]) => k === "x-forwarded-for").length <= 1),
        pathOptions,
        fc.nat(),
        (headers, paths, seed) => {
          const shuffled = [...headers];
          for (let i = shuffled.length - 1, s = seed; i > 0; i--, s = Math.floor(s / 7) + i) {
            const j = s % (i + 1);
            [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
          }
          const opts = { paths, ownHeaderNames: OWN };
          const a = outcome(headers, opts);
          const b = outcome(shuffled, opts);
          expect(b.ok).toBe(a.ok);
          if (!a.ok && !b.ok) expect(b.code).toBe(a.code);
          if (a.ok && b.ok) expect({ ...b.req, headers: undefined }).toEqual({ ...a.req, headers: undefined });
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("nothing rejected is ever allowed", () => {
  const config = configSchema.parse({
    listen: "127.0.0.1:0",
    pdp: { address: "127.0.0.1:1" },
    identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } },
    routes: [{ name: "documents", path: "/documents/:id", resource: { kind: "document", id: "{params.id}" }, actions: { GET: "read", DELETE: "delete" } }],
    response: { headers: { "X-Auth-User": "{principal.id}", "X-Auth-Roles": "{principal.roles}" } },
  });

  it("a request rebuildRequest refuses is answered 400/414/431 by decide() and never reaches the PDP", async () => {
    let reached: Check | undefined;
    // Not a decision double: any check that gets this far is recorded and fails (503), so an
    // allow can only come from a PDP, and no PDP is here.
    const checker: Checker = (check) => {
      reached = check;
      throw new Error("the PDP was reached");
    };
    const decide = createDecider({ config, identity: createIdentityResolver(config.identity), mapper: compileMapper(config), checker });
    const opts: RebuildOptions = { paths: config.paths, ownHeaderNames: OWN };
    let refusedCount = 0;
    await fc.assert(
      fc.asyncProperty(headerList, async (headers) => {
        reached = undefined;
        const r = outcome(headers, opts);
        const verdict = await decide(headers, "fuzz", performance.now());
        expect(verdict.status).not.toBe(200);
        if (!r.ok) {
          refusedCount++;
          expect(reached).toBeUndefined();
          expect([400, 414, 431]).toContain(verdict.status);
          expect(verdict.refusal?.code).toBe(r.code);
          expect(verdict.headers).toEqual([]);
        }
      }),
      { numRuns: 3000 },
    );
    expect(refusedCount).toBeGreaterThan(300);
  });
});
