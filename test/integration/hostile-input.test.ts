/**
 * Hostile input through the real listener and the real PDP (issue 8, on top of SPEC §5): the
 * policy allows an admin everything, so any refusal seen here is the request shape's doing and
 * any mistake in it would show up as a 2xx.
 *
 * Measured facts of this uWebSockets.js build, asserted as "never a 2xx":
 * - a header name with "_" or ".", an obs-fold line, a bare LF or CR inside a line, or more than
 *   48 header lines → the request is dropped silently (no answer; the connection is closed after
 *   about 10 s of idle time);
 * - an unknown method, Content-Length together with Transfer-Encoding, a Content-Length of
 *   10^9 or more → the connection is closed at once, no answer;
 * - the body plays no part: the answer does not wait for it, and uWebSockets.js reads and drops
 *   it (the connection stays open for it) instead of buffering it;
 * - a request that arrives pipelined behind one still being decided closes the connection.
 * The service itself answers 431 above 32 KiB of header names + values and 414 above 8,192
 * bytes of X-Forwarded-Uri.
 */
import { connect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configSchema, normalizeHeaderName } from "../../src/config/schema.js";
import { Refusal } from "../../src/errors.js";
import { rebuildRequest, type RebuildOptions } from "../../src/request/forwarded.js";
import { forwarded, parseResponse, rawRequest, type HeaderLines, type RawResponse } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const SECRET = "hostile-input-test-secret-of-at-least-32-characters";
const RESPONSE_HEADERS = {
  "X-Auth-User": "{principal.id}",
  "X-Auth-Roles": "{principal.roles}",
  "X-Auth-Name": "{claims.name}",
  "X-Auth-Dept": "{headers.remote-dept}",
};
const SERVICE = {
  identity: {
    jwt: { hmacSecret: SECRET, algorithms: ["HS256"], principal: { id: "sub", roles: "roles", attr: ["name"] } },
    trustedHeaders: { id: "Remote-User", roles: "Remote-Groups", attr: { dept: "Remote-Dept" } },
  },
  response: { headers: RESPONSE_HEADERS },
};
const ADMIN: HeaderLines = [
  ["Remote-User", "root"],
  ["Remote-Groups", "admin"],
];
const USER: HeaderLines = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
];

/** The rebuild options the service derives from SERVICE (default paths options). */
const REBUILD: RebuildOptions = {
  paths: configSchema.parse({ listen: "127.0.0.1:0", pdp: { address: "127.0.0.1:1" } }).paths,
  ownHeaderNames: new Set(Object.keys(RESPONSE_HEADERS).map(normalizeHeaderName)),
};

let pdp: TestPdp;
let svc: TestService;
beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
  svc = await startService(pdp.grpcTarget, SERVICE);
  await waitFor(async () => (await fetch(`http://127.0.0.1:${svc.adminPort}/readyz`)).status === 200, { what: "readyz 200" });
});
afterAll(async () => {
  await svc?.stop();
  await pdp?.stop();
});

const is2xx = (status: number) => status >= 200 && status < 300;

/**
 * Raw bytes on a fresh connection; resolves with what came back and whether the server closed
 * it, once the server closes, `until(text)` holds, or `waitMs` passed. `after` may write more and
 * call `recheck()` when it is done.
 */
function rawBytes(
  payload: Buffer | string,
  opts: { waitMs: number; until?: (text: string) => boolean; after?: (socket: Socket, recheck: () => void) => void },
): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let closedByServer = false;
    const text = () => Buffer.concat(chunks).toString("latin1");
    const recheck = () => {
      if (opts.until?.(text())) socket.destroy();
    };
    const socket = connect(svc.port, "127.0.0.1", () => {
      socket.write(payload);
      opts.after?.(socket, recheck);
    });
    const timer = setTimeout(() => socket.destroy(), opts.waitMs);
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      recheck();
    });
    socket.on("end", () => (closedByServer = true));
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ECONNRESET" || e.code === "EPIPE") closedByServer = true;
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ text: text(), closedByServer });
    });
  });
}

/** True once `text` holds `n` complete responses (Content-Length framed). */
function responses(n: number): (text: string) => boolean {
  return (text) => {
    let rest = text;
    for (let i = 0; i < n; i++) {
      const end = rest.indexOf("\r\n\r\n");
      if (end < 0) return false;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(rest.slice(0, end))?.[1] ?? 0);
      if (rest.length < end + 4 + length) return false;
      rest = rest.slice(end + 4 + length);
    }
    return true;
  };
}

/** The request head for raw writes. */
function head(method: string, headers: HeaderLines, extra: readonly string[] = []): string {
  return [`${method} / HTTP/1.1`, "Host: auth.local", ...headers.map(([k, v]) => `${k}: ${v}`), ...extra].join("\r\n") + "\r\n\r\n";
}

/** Status codes of every response in a raw byte stream (0 responses → []). */
function statusesIn(text: string): number[] {
  return [...text.matchAll(/(?:^|\r\n\r\n|\})HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

// ------------------------------------------------------------------------------------------------

describe("fuzzed X-Forwarded-* through the service", () => {
  /** Bytes a client can put in a header value: visible ASCII, space and tab (no CR/LF). */
  const VALUE_CHARS = [..." \t", ...Array.from({ length: 0x7e - 0x20 }, (_, i) => String.fromCharCode(0x21 + i))];
  const junk = (max: number) => fc.string({ unit: fc.constantFrom(...VALUE_CHARS), maxLength: max });
  /** Mostly what a gateway sends, sometimes something hostile, now and then anything at all. */
  const mostly = <T,>(valid: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>, anything?: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 16, arbitrary: valid }, { weight: 2, arbitrary: hostile }, ...(anything ? [{ weight: 1, arbitrary: anything }] : []));
  const SEGMENT_OK = ["a", "api", "Z9", "~", "-", "_", "!", "$", "&", "'", "(", ")", "*", "+", ",", "=", ":", "@", "%41", "%C3%A9", "%c3%a9", "%F0%9F%98%80", "%20", "%7E", "x.y"];
  const SEGMENT_BAD = [
    ".", "..", "%2e", "%2E%2e", "%2F", "%2f", "%5C", "\\", ";", ";x=1", "%3B", "%00", "%09", "%7F", "%25", "%2541", "%zz", "%", "%C3", "%A9",
    "%C0%AE", "%ED%A0%80", "%FF", "#", "?", "|", "[", "]", " ", "\t", '"', "<", "{", "",
  ];
  const QUERY_OK = ["a=1", "a=2", "b", "c=%20", "d=+", "f=%C3%A9", "__proto__=1", "x=a/b", "y=?"];
  const QUERY_BAD = ["e=%ZZ", "g=%FF", "h=%00", "#", "=x", "&&", "%"];
  const segment = fc.array(mostly(fc.constantFrom(...SEGMENT_OK), fc.constantFrom(...SEGMENT_BAD)), { minLength: 1, maxLength: 3 }).map((t) => t.join(""));
  const path = fc.tuple(fc.array(segment, { minLength: 1, maxLength: 5 }), fc.boolean()).map(([segs, slash]) => "/" + segs.join("/") + (slash ? "/" : ""));
  const query = fc.array(mostly(fc.constantFrom(...QUERY_OK), fc.constantFrom(...QUERY_BAD)), { minLength: 1, maxLength: 4 }).map((q) => "?" + q.join("&"));
  const uri = fc.oneof(
    { weight: 12, arbitrary: fc.tuple(path, fc.option(query, { nil: "" })).map(([p, q]) => p + q) },
    { weight: 1, arbitrary: junk(40) },
    { weight: 1, arbitrary: fc.integer({ min: 8185, max: 8200 }).map((n) => "/" + "a".repeat(n - 1)) },
  );
  const method = mostly(
    fc.constantFrom("GET", "POST", "DELETE", "PROPFIND", "M-SEARCH", "X1"),
    fc.constantFrom("get", "Get", "G ET", "GET,POST", "GET\t", "", " ", "A".repeat(33), "GET/1"),
    junk(10),
  );
  const host = mostly(
    fc.constantFrom("app.example.com", "APP.Example.COM.", "app.example.com:80", "app.example.com:8080", "[::1]", "[::1]:80", "1.2.3.4", "-a-.b_c", "a:65535"),
    fc.constantFrom(
      "[fe80::1%25eth0]", "a..b", "a b", "a,b", "user@host", "host/path", "", ":80", "app.example.com:0", "app.example.com:65536", "app.example.com:080",
      "app.example.com.:8080", "[::1", "::1", "a:b:c", "app.example.com:",
    ),
    junk(20),
  );
  const proto = fc.oneof(
    { weight: 4, arbitrary: fc.constant(undefined) },
    { weight: 12, arbitrary: fc.constantFrom("http", "https") },
    { weight: 2, arbitrary: fc.constantFrom("HTTPS", "ws", "", "http,https", "https ") },
    { weight: 1, arbitrary: junk(6) },
  );
  const xff = fc.oneof(
    { weight: 4, arbitrary: fc.constant(undefined) },
    { weight: 12, arbitrary: fc.constantFrom("203.0.113.7", "1.2.3.4, 5.6.7.8", "::1", "[::1]:8080", "1.2.3.4:80", " 1.2.3.4 \t", "unknown, 10.0.0.1") },
    { weight: 2, arbitrary: fc.constantFrom("01.2.3.4", "unknown", "", "1.2.3.4,", "1.2.3.4:0", "[::1") },
    { weight: 1, arbitrary: junk(16) },
  );
  const repeat = fc.oneof(
    { weight: 12, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.constantFrom("X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For") },
  );
  const request = fc.record({ method, uri, host, proto, xff, repeat });

  /** The header parser removes leading and trailing spaces and tabs (RFC 9110 OWS). */
  const ows = (v: string) => v.replace(/^[ \t]+|[ \t]+$/g, "");

  it("whatever rebuildRequest refuses the service answers 400/414/431, and what it accepts the admin gets (never a 2xx from a refusal)", async () => {
    let accepted = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const lines: Array<[string, string]> = [
          ["X-Forwarded-Method", r.method],
          ["X-Forwarded-Host", r.host],
          ["X-Forwarded-Uri", r.uri],
        ];
        if (r.proto !== undefined) lines.push(["X-Forwarded-Proto", r.proto]);
        if (r.xff !== undefined) lines.push(["X-Forwarded-For", r.xff]);
        if (r.repeat !== undefined) lines.push([r.repeat, lines.find(([n]) => n === r.repeat)?.[1] ?? "x"]);
        lines.push(...(ADMIN as Array<[string, string]>));
        // What the service's own parser sees: rawRequest's Host and Connection first, names lower-cased.
        const seen: Array<readonly [string, string]> = [["host", "auth.local"], ["connection", "close"], ...lines.map(([k, v]) => [k.toLowerCase(), ows(v)] as const)];
        let expected: number;
        try {
          rebuildRequest(seen, REBUILD);
          expected = 200;
          accepted++;
        } catch (error) {
          expect(error).toBeInstanceOf(Refusal);
          expected = (error as Refusal).status;
          refused++;
        }
        const res = await rawRequest(svc.port, { headers: lines, timeoutMs: 5000 });
        if (expected !== 200) expect([400, 414, 431]).toContain(res.status);
        expect(res.status, JSON.stringify(lines)).toBe(expected);
      }),
      { numRuns: 500 },
    );
    // The generators reach both sides of the border.
    expect(accepted).toBeGreaterThan(20);
    expect(refused).toBeGreaterThan(20);
  });
});

describe("size limits", () => {
  it("X-Forwarded-Uri: 8,192 bytes are decided, 8,193 answer 414 without a body", async () => {
    const at = await rawRequest(svc.port, { headers: forwarded("GET", "/" + "a".repeat(8191), undefined, ADMIN) });
    expect(at.status).toBe(200);
    const over = await rawRequest(svc.port, { headers: forwarded("GET", "/" + "a".repeat(8192), undefined, ADMIN) });
    expect(over.status).toBe(414);
    expect(over.body).toBe("");
    expect(over.header("cache-control")).toBe("no-store");
  });

  it("header names + values: 32 KiB are decided, one byte more answers 431; 200 KB never get a 2xx", async () => {
    const base = forwarded("GET", "/api/x", undefined, ADMIN);
    // The service counts name + value + 4 per header line, rawRequest's Host and Connection included.
    const used = [["host", "auth.local"], ["connection", "close"], ...base].reduce((n, [k, v]) => n + k.length + v.length + 4, 0);
    const pad = (total: number): HeaderLines => [...base, ["X-Pad", "p".repeat(total - used - "x-pad".length - 4)]];
    expect((await rawRequest(svc.port, { headers: pad(32 * 1024) })).status).toBe(200);
    const over = await rawRequest(svc.port, { headers: pad(32 * 1024 + 1) });
    expect(over.status).toBe(431);
    expect(over.header("cache-control")).toBe("no-store");
    const huge = await rawRequest(svc.port, { headers: [...base, ...Array.from({ length: 20 }, (_, i) => [`X-Pad-${i}`, "p".repeat(10_000)] as const)] }).catch(() => undefined);
    if (huge) expect(is2xx(huge.status), `status ${huge.status}`).toBe(false);
  });

  it("requests the parser drops (49+ header lines, '_' or '.' in a name, obs-fold, bare LF or CR) never get an answer", async () => {
    const ok = forwarded("GET", "/api/x", undefined, ADMIN);
    // Each of these would be allowed if it were read; the same request with 48 lines is.
    const fill = (n: number): HeaderLines => [...ok, ...Array.from({ length: n - ok.length - 2 }, (_, i) => [`X-Fill-${i}`, "v"] as const)];
    expect((await rawRequest(svc.port, { headers: fill(48) })).status).toBe(200);
    const cases: Array<[string, string]> = [
      ["49 header lines", head("GET", fill(49), ["Connection: close"])],
      ["250 header lines", head("GET", fill(250), ["Connection: close"])],
      ["underscore in a name", head("GET", [...ok, ["X_Auth_User", "root"]])],
      ["dot in a name", head("GET", [...ok, ["X.Auth.User", "root"]])],
      ["obs-fold", head("GET", [...ok, ["X-Folded", "a\r\n b"]])],
      ["bare LF", head("GET", [...ok, ["X-Lf", "a\nRemote-Groups: admin"]])],
      ["bare CR", head("GET", [...ok, ["X-Cr", "a\rb"]])],
    ];
    const results = await Promise.all(cases.map(([, payload]) => rawBytes(payload, { waitMs: 12_000 })));
    results.forEach((r, i) => expect(statusesIn(r.text), cases[i]![0]).toEqual([]));
  });
});

describe("identity values never inject a header", () => {
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setExpirationTime("5m").sign(new TextEncoder().encode(SECRET));

  /** Every response header is one line of visible ASCII; our identity headers appear exactly once each. */
  function expectSafeHeaders(res: RawResponse): void {
    for (const [name, values] of res.headers) {
      for (const v of values) expect(v, name).toMatch(/^[\x20-\x7e]*$/);
    }
    const names = [...res.headers.keys()];
    for (const own of Object.keys(RESPONSE_HEADERS)) expect(res.headers.get(own.toLowerCase()), own).toHaveLength(1);
    expect(names.filter((n) => !["cache-control", "x-request-id", "date", "uwebsockets", "content-length", ...Object.keys(RESPONSE_HEADERS).map((h) => h.toLowerCase())].includes(n))).toEqual([]);
  }

  it("CR/LF, U+2028 and non-Latin-1 in claims are percent-encoded: no injected header, the upstream decodes the exact value", async () => {
    const sub = "evil\r\nX-Injected: 1\r\n\r\nHTTP/1.1 200 OK";
    const name = "Zoë 日本 \u2028\u0085\r\nSet-Cookie: session=stolen %41";
    const token = await sign({ sub, roles: ["admin"], name });
    const res = await rawRequest(svc.port, { headers: forwarded("GET", "/api/x", undefined, [["Authorization", `Bearer ${token}`]]) });
    expect(res.status).toBe(200);
    expectSafeHeaders(res);
    expect(res.headers.has("x-injected")).toBe(false);
    expect(res.headers.has("set-cookie")).toBe(false);
    expect(decodeURIComponent(res.header("x-auth-user")!)).toBe(sub);
    expect(decodeURIComponent(res.header("x-auth-name")!)).toBe(name);
  });

  it("non-ASCII inside trusted-header values is percent-encoded and round-trips", async () => {
    const user = "Zoë-日本-\u2028-x";
    const dept = "R&D – Zürich\u0085/%2F";
    const payload = Buffer.concat([
      Buffer.from(head("GET", forwarded("GET", "/api/x", undefined, [["Remote-Groups", "admin"]]), ["Connection: close"]).slice(0, -2), "latin1"),
      Buffer.from(`Remote-User: ${user}\r\nRemote-Dept: ${dept}\r\n\r\n`, "utf8"),
    ]);
    const { text } = await rawBytes(payload, { waitMs: 5000, until: responses(1) });
    const res = parseResponse(text);
    expect(res.status).toBe(200);
    expectSafeHeaders(res);
    expect(decodeURIComponent(res.header("x-auth-user")!)).toBe(user);
    expect(decodeURIComponent(res.header("x-auth-dept")!)).toBe(dept);
  });

  // KNOWN LIMITATION (uWebSockets.js 20.30 unofficial, not src/; README "Hardening"): the header parser trims bytes
  // ≥ 0x80 from both ends of every header value, as if they were whitespace. "rooté" reaches the
  // service as "root", "éroot" as "root": a principal (or a role: "adminé" → "admin") another
  // identity than the one the authentication layer asserted. The service cannot see the bytes.
  it.fails("a trusted identity with non-ASCII at an end is never taken for a shorter identity", async () => {
    for (const id of ["rooté", "éroot", "root\u00a0"]) {
      const payload = Buffer.concat([
        Buffer.from(head("GET", forwarded("GET", "/api/x", undefined, [["Remote-Groups", "admin"]]), ["Connection: close"]).slice(0, -2), "latin1"),
        Buffer.from(`Remote-User: ${id}\r\n\r\n`, "utf8"),
      ]);
      const res = parseResponse((await rawBytes(payload, { waitMs: 5000, until: responses(1) })).text);
      if (res.status === 200) expect(decodeURIComponent(res.header("x-auth-user")!), JSON.stringify(id)).toBe(id);
      else expect([400, 401]).toContain(res.status);
    }
  });

  // KNOWN LIMITATION (same uWebSockets.js trimming): SPEC §5.2 refuses raw non-ASCII in the path, but
  // "/healthé" arrives as "/health", which the policy allows to anyone: the service allows a path
  // the backend will not serve as the one it decided ("/healthé"), and "é/health" is not refused
  // for not starting with "/".
  it.fails("raw non-ASCII at either end of X-Forwarded-Uri is refused (400), not trimmed into another path", async () => {
    for (const uri of ["/health\u00e9", "\u00e9/health", "/health\u00ff"]) {
      const bytes = Buffer.concat([
        Buffer.from(head("GET", USER, ["X-Forwarded-Method: GET", "X-Forwarded-Host: app.example.com", "Connection: close"]).slice(0, -2), "latin1"),
        Buffer.from(`X-Forwarded-Uri: ${uri}\r\n\r\n`, "utf8"),
      ]);
      const res = parseResponse((await rawBytes(bytes, { waitMs: 5000, until: responses(1) })).text);
      expect(res.status, JSON.stringify(uri)).toBe(400);
    }
  });
});

describe("log injection", () => {
  it("CR/LF, U+2028 and a forged JSON record in a claim or a trusted header yield exactly one decision record", async () => {
    const forged = '{"level":30,"decision":true,"forged":true,"outcome":"allow"}';
    const token = await new SignJWT({ sub: `mallory\n${forged}\r\n\u2028${forged}`, roles: ["admin"] })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(SECRET));
    const before = svc.logs.length;
    const viaClaim = await rawRequest(svc.port, { headers: forwarded("GET", "/api/log", undefined, [["Authorization", `Bearer ${token}`], ["X-Request-Id", "log-claim"]]) });
    expect(viaClaim.status).toBe(200);
    const payload = Buffer.concat([
      Buffer.from(head("GET", forwarded("GET", "/api/log2", undefined, [["Remote-Groups", "admin"], ["X-Request-Id", "log-header"]]), ["Connection: close"]).slice(0, -2), "latin1"),
      // (no comma: a trusted identity with a comma is refused as two values)
      Buffer.from(`Remote-User: mallory\u2028{"level":30;"forged":true}\u0085x\r\n\r\n`, "utf8"),
    ]);
    expect(parseResponse((await rawBytes(payload, { waitMs: 5000, until: responses(1) })).text).status).toBe(200);

    const records = svc.logs.slice(before);
    expect(records.map((r) => r.requestId)).toEqual(["log-claim", "log-header"]);
    expect(records.some((r) => "forged" in r)).toBe(false);
    expect(records[0]!.principal).toBe(`mallory\n${forged}\r\n\u2028${forged}`);
  });
});

describe("request smuggling shapes", () => {
  const ok = forwarded("POST", "/api/x", undefined, ADMIN);

  it("Content-Length with Transfer-Encoding (either order): closed at once, no answer", async () => {
    for (const extra of [
      ["Content-Length: 5", "Transfer-Encoding: chunked"],
      ["Transfer-Encoding: chunked", "Content-Length: 5"],
      ["Content-Length: 5", "Transfer-Encoding: gzip, chunked"],
    ]) {
      const r = await rawBytes(head("POST", ok, extra) + "0\r\n\r\n", { waitMs: 5000, until: responses(1) });
      expect(statusesIn(r.text), extra.join(" + ")).toEqual([]);
      expect(r.closedByServer).toBe(true);
    }
  });

  it("a request hidden in a body is never answered: the next answer on the connection is the next request's", async () => {
    const hidden = head("GET", forwarded("GET", "/api/hidden", undefined, [...ADMIN, ["X-Request-Id", "hidden"]]));
    const next = head("GET", forwarded("GET", "/api/next", undefined, [...ADMIN, ["X-Request-Id", "next"]]));
    const chunked = `${hidden.length.toString(16)}\r\n${hidden}\r\n0\r\n\r\n`;
    for (const [shape, first] of [
      ["Content-Length", head("POST", [...ok, ["X-Request-Id", "outer"]], [`Content-Length: ${hidden.length}`]) + hidden],
      ["chunked", head("POST", [...ok, ["X-Request-Id", "outer"]], ["Transfer-Encoding: chunked"]) + chunked],
    ] as const) {
      // The second request is written only once the first answer is in: if the hidden one had
      // been read as a request, its answer would come before the second's.
      const r = await rawBytes(first, {
        waitMs: 5000,
        until: responses(2),
        after: (socket) => {
          let received = "";
          let sent = false;
          socket.on("data", (c: Buffer) => {
            received += c.toString("latin1");
            if (!sent && responses(1)(received)) {
              sent = true;
              socket.write(next);
            }
          });
        },
      });
      const ids = [...r.text.matchAll(/\r\nX-Request-Id: ([^\r]*)\r\n/gi)].map((m) => m[1]);
      expect(ids, shape).toEqual(["outer", "next"]);
      expect(statusesIn(r.text), shape).toEqual([200, 200]);
    }
  });

  // Regression: two different Content-Length values are a request-smuggling shape (RFC 9112
  // §6.3: unrecoverable); uWebSockets.js frames the body by the first, so the rebuild refuses it.
  it("two different Content-Length values never get a 2xx", async () => {
    const r = await rawBytes(head("POST", ok, ["Content-Length: 0", "Content-Length: 5"]), { waitMs: 5000, until: responses(1) });
    for (const status of statusesIn(r.text)) expect(is2xx(status)).toBe(false);
  });

  it("a huge declared body is never read: the answer does not wait for it and memory does not grow with it", async () => {
    // 10^9 or more: closed at once.
    const giant = await rawBytes(head("POST", ok, ["Content-Length: 1000000000"]), { waitMs: 5000, until: responses(1) });
    expect(statusesIn(giant.text)).toEqual([]);

    const BODY = 96 * 1024 * 1024;
    const rssBefore = process.memoryUsage().rss;
    let written = 0;
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let answeredAt = -1;
    const r = await rawBytes(head("POST", ok, [`Content-Length: ${BODY}`]), {
      waitMs: 20_000,
      until: (text) => {
        if (answeredAt < 0 && responses(1)(text)) answeredAt = written;
        return answeredAt >= 0 && written >= BODY;
      },
      after: (socket, recheck) => {
        const pump = () => {
          while (written < BODY) {
            written += chunk.length;
            if (!socket.write(chunk)) {
              socket.once("drain", pump);
              return;
            }
          }
          recheck();
        };
        pump();
      },
    });
    // The policy's answer to the request (its body plays no part), once, before the body was
    // all sent; the rest of the body was read and dropped (the connection stayed open for it).
    expect(statusesIn(r.text)).toEqual([200]);
    expect(answeredAt).toBeLessThan(BODY);
    expect(written).toBeGreaterThanOrEqual(BODY);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(48 * 1024 * 1024);
  });
});

describe("listener methods go through the normal decision", () => {
  it("HEAD and OPTIONS get the policy's answer (403 for a denied request), other standard methods too", async () => {
    for (const method of ["HEAD", "OPTIONS", "GET", "POST", "PUT", "PATCH", "DELETE"]) {
      const allowed = await rawRequest(svc.port, { method, headers: forwarded("GET", "/api/m", undefined, USER) });
      expect(allowed.status, `${method} allowed`).toBe(200);
      const denied = await rawRequest(svc.port, { method, headers: forwarded("DELETE", "/admin/m", undefined, USER) });
      expect(denied.status, `${method} denied`).toBe(403);
      // A CORS preflight is a request like any other: never allowed automatically.
      const preflight = await rawRequest(svc.port, { method, headers: forwarded("OPTIONS", "/api/m", undefined, USER) });
      expect(preflight.status, `${method} preflight`).toBe(403);
      // No identity at all: 401, whatever the method.
      expect((await rawRequest(svc.port, { method, headers: forwarded("GET", "/api/m") })).status, `${method} anonymous`).toBe(401);
    }
  });

  it("unknown methods: the connection is closed at once, never a 2xx", async () => {
    for (const method of ["BREW", "FOO", "get", "PROPFINDX", "M-SEARCH"]) {
      const r = await rawBytes(head(method, forwarded("GET", "/api/m", undefined, ADMIN)), { waitMs: 5000, until: responses(1) });
      for (const status of statusesIn(r.text)) expect(is2xx(status), `${method}: ${status}`).toBe(false);
    }
  });
});
