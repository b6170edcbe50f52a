/**
 * Traefik v3 conformance without a Traefik binary: the service is driven with auth requests built
 * exactly as Traefik v3 builds them (GATEWAYS.md; traefik/traefik pkg/middlewares/auth/forward.go
 * and the entrypoint's request-path and header handling), from the example configuration in
 * examples/traefik/ (traefik.yml entrypoint options, dynamic.yml forwardAuth middleware,
 * config.yaml service config), against a real Cerbos PDP with the quickstart policies.
 *
 * What the model reproduces, in Traefik's order:
 *  1. entrypoint: header names with a character other than a letter, a digit or "-" are deleted
 *     or rejected (aliasHeadersStrategy); encoded reserved characters in the path are rejected
 *     (encodedCharacters); percent-encoded unreserved characters are decoded and the other escapes
 *     upper-cased; "/./", "/../" and "//" are resolved (sanitizePath); client X-Forwarded-* and
 *     X-Real-Ip are replaced by Traefik's own (no trustedIPs).
 *  2. forwardAuth: GET to exactly `address`, no body; every request header (names canonicalised
 *     the Go way) minus hop-by-hop ones, filtered by authRequestHeaders when set; then, with
 *     trustForwardHeader: false, every X-Forwarded-* removed and X-Forwarded-For/-Method/-Proto/
 *     -Host/-Uri/-Port written by Traefik; the Go client adds User-Agent and Accept-Encoding.
 *  3. on a 2xx, each authResponseHeaders name is deleted from the request to the application and
 *     copied from the auth response; any other status goes back to the client as it is.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { rawRequest, type HeaderLines, type RawResponse } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, type TestService } from "../support/service.js";

const exampleFile = (name: string) => fileURLToPath(new URL(`../../examples/traefik/${name}`, import.meta.url));

// ---------------------------------------------------------------------------------------------
// The example configuration

interface EntryPointOptions {
  sanitizePath: boolean;
  /** allowEncodedSlash … allowEncodedHash; absent = allowed (Traefik ≥ 3.6.7 default). */
  encodedCharacters: Record<string, boolean>;
  aliasHeadersStrategy: "keep" | "delete" | "reject";
}

interface ForwardAuthOptions {
  address: string;
  trustForwardHeader: boolean;
  authRequestHeaders: string[];
  authResponseHeaders: string[];
}

function exampleEntryPoint(): EntryPointOptions {
  const doc = parse(readFileSync(exampleFile("traefik.yml"), "utf8")) as {
    entryPoints: Record<string, { http?: Partial<EntryPointOptions> }>;
  };
  const http = doc.entryPoints["web"]?.http ?? {};
  return {
    sanitizePath: http.sanitizePath ?? true,
    encodedCharacters: http.encodedCharacters ?? {},
    aliasHeadersStrategy: http.aliasHeadersStrategy ?? "keep",
  };
}

function exampleForwardAuth(): ForwardAuthOptions {
  const doc = parse(readFileSync(exampleFile("dynamic.yml"), "utf8")) as {
    http: { middlewares: Record<string, { forwardAuth?: Partial<ForwardAuthOptions> }> };
  };
  const fa = doc.http.middlewares["cerbos-forwardauth"]?.forwardAuth;
  if (!fa?.address) throw new Error("dynamic.yml: no forwardAuth middleware cerbos-forwardauth");
  return {
    address: fa.address,
    trustForwardHeader: fa.trustForwardHeader ?? false,
    authRequestHeaders: fa.authRequestHeaders ?? [],
    authResponseHeaders: fa.authResponseHeaders ?? [],
  };
}

// ---------------------------------------------------------------------------------------------
// The Traefik model

interface ClientRequest {
  method: string;
  /** Request target exactly as the client sent it (origin-form). */
  target: string;
  /** Host header. */
  host: string;
  headers: HeaderLines;
  remoteIp?: string;
  tls?: boolean;
  /** Entrypoint port, for X-Forwarded-Port when Host has none. */
  entryPointPort?: number;
}

type GoHeader = Map<string, string[]>;

/** textproto.CanonicalMIMEHeaderKey: upper-case the first letter and each letter after "-". */
function canonicalKey(name: string): string {
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return name;
  let upper = true;
  let out = "";
  for (const ch of name) {
    out += upper ? ch.toUpperCase() : ch.toLowerCase();
    upper = ch === "-";
  }
  return out;
}

function toGoHeader(lines: HeaderLines): GoHeader {
  const h: GoHeader = new Map();
  for (const [name, value] of lines) {
    const key = canonicalKey(name);
    h.set(key, [...(h.get(key) ?? []), value]);
  }
  return h;
}

const HOP_BY_HOP = ["Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"];

const ENCODED_CHARACTERS: Array<[option: string, escapes: string[]]> = [
  ["allowEncodedSlash", ["%2F"]],
  ["allowEncodedBackSlash", ["%5C"]],
  ["allowEncodedNullCharacter", ["%00"]],
  ["allowEncodedSemicolon", ["%3B"]],
  ["allowEncodedPercent", ["%25"]],
  ["allowEncodedQuestionMark", ["%3F"]],
  ["allowEncodedHash", ["%23"]],
];

/** RFC 3986 §2.3 unreserved. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/** Decodes escaped unreserved characters and upper-cases every other escape (RFC 3986 §6.2.2). */
function normalizeEscapes(path: string): string {
  return path.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => {
    const ch = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
  });
}

/** Removes "." and ".." segments and merges "//", keeping a trailing slash (Traefik's sanitizePath). */
function sanitize(path: string): string {
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  let clean = "/" + out.join("/");
  if (path.endsWith("/") && clean !== "/") clean += "/";
  return clean;
}

type EntryPointResult = { status: 400 } | { path: string; query: string; header: GoHeader };

function entryPoint(req: ClientRequest, ep: EntryPointOptions): EntryPointResult {
  let lines = req.headers;
  const aliasing = (name: string) => !/^[A-Za-z0-9-]+$/.test(name);
  if (ep.aliasHeadersStrategy === "reject" && lines.some(([n]) => aliasing(n))) return { status: 400 };
  if (ep.aliasHeadersStrategy === "delete") lines = lines.filter(([n]) => !aliasing(n));

  const q = req.target.indexOf("?");
  let path = q < 0 ? req.target : req.target.slice(0, q);
  const query = q < 0 ? "" : req.target.slice(q + 1);
  for (const [option, escapes] of ENCODED_CHARACTERS) {
    if (ep.encodedCharacters[option] === false && escapes.some((e) => path.toUpperCase().includes(e))) return { status: 400 };
  }
  path = normalizeEscapes(path);
  if (ep.sanitizePath) path = sanitize(path);

  // Forwarded headers, no trustedIPs: the client's are replaced by Traefik's.
  const header = toGoHeader(lines);
  for (const key of [...header.keys()]) {
    if (key.startsWith("X-Forwarded-") || key === "X-Real-Ip") header.delete(key);
  }
  const hostPort = /:(\d+)$/.exec(req.host)?.[1];
  header.set("X-Forwarded-Proto", [req.tls ? "https" : "http"]);
  header.set("X-Forwarded-Host", [req.host]);
  header.set("X-Forwarded-Port", [hostPort ?? String(req.entryPointPort ?? (req.tls ? 443 : 80))]);
  header.set("X-Forwarded-Server", ["traefik-0"]);
  header.set("X-Real-Ip", [req.remoteIp ?? "203.0.113.7"]);
  return { path, query, header };
}

interface AuthRequest {
  /** Path of `address` (the original path is not appended). */
  path: string;
  /** Host of `address`, as the Go client sends it. */
  host: string;
  /** Header lines in the Go client's order (sorted by name), without Host. */
  headers: HeaderLines;
}

function forwardAuthRequest(req: ClientRequest, at: { path: string; query: string; header: GoHeader }, fa: ForwardAuthOptions): AuthRequest {
  const address = new URL(fa.address);
  let h: GoHeader = new Map([...at.header].map(([k, v]) => [k, [...v]]));
  // Hop-by-hop: the fixed list and whatever Connection names.
  for (const named of (h.get("Connection") ?? []).flatMap((v) => v.split(","))) h.delete(canonicalKey(named.trim()));
  for (const key of HOP_BY_HOP) h.delete(key);
  if (fa.authRequestHeaders.length > 0) {
    const allowed: GoHeader = new Map();
    for (const name of fa.authRequestHeaders) {
      const values = h.get(canonicalKey(name));
      if (values && values.length > 0) allowed.set(canonicalKey(name), values);
    }
    h = allowed;
  }
  if (fa.trustForwardHeader) throw new Error("the examples use trustForwardHeader: false");
  for (const key of [...h.keys()]) if (key.startsWith("X-Forwarded-")) h.delete(key);
  h.set("X-Forwarded-For", [req.remoteIp ?? "203.0.113.7"]);
  h.set("X-Forwarded-Method", [req.method]);
  h.set("X-Forwarded-Proto", [req.tls ? "https" : "http"]);
  h.set("X-Forwarded-Host", [req.host]);
  h.set("X-Forwarded-Uri", [at.path + (at.query ? `?${at.query}` : "")]);
  h.set("X-Forwarded-Port", at.header.get("X-Forwarded-Port") ?? ["80"]);
  // net/http client defaults.
  if (!h.has("User-Agent")) h.set("User-Agent", ["Go-http-client/1.1"]);
  if (!h.has("Accept-Encoding") && !h.has("Range")) h.set("Accept-Encoding", ["gzip"]);
  const headers: Array<[string, string]> = [];
  for (const key of [...h.keys()].sort()) for (const v of h.get(key)!) headers.push([key, v]);
  return { path: address.pathname + address.search, host: address.host, headers };
}

/** The request to the application after a 2xx: authResponseHeaders replaced by the service's values. */
function upstreamHeaders(at: { header: GoHeader }, fa: ForwardAuthOptions, auth: RawResponse): GoHeader {
  const h: GoHeader = new Map([...at.header].map(([k, v]) => [k, [...v]]));
  for (const name of fa.authResponseHeaders) {
    const key = canonicalKey(name);
    h.delete(key);
    const values = auth.headers.get(name.toLowerCase());
    if (values && values.length > 0) h.set(key, [...values]);
  }
  return h;
}

/** What the client gets: Traefik's own 400 at the entrypoint, or the service's answer. */
interface Outcome {
  /** Status the client sees. */
  status: number;
  /** Whether the service was asked. */
  asked: boolean;
  auth?: AuthRequest;
  response?: RawResponse;
  /** Headers of the request to the application (2xx only). */
  upstream?: GoHeader;
}

// ---------------------------------------------------------------------------------------------

let pdp: TestPdp;
let svc: TestService;
const EP = exampleEntryPoint();
const FA = exampleForwardAuth();

beforeAll(async () => {
  pdp = await startPdp();
  const example = parse(readFileSync(exampleFile("config.yaml"), "utf8")) as Record<string, unknown>;
  const { address: _address, ...pdpRest } = example.pdp as Record<string, unknown>;
  svc = await startService(pdp.grpcTarget, {
    identity: example.identity,
    routes: example.routes,
    unmatched: example.unmatched,
    response: example.response,
    pdp: pdpRest,
    log: { decisions: "none" },
  });
});
afterAll(async () => {
  await svc?.stop();
  await pdp?.stop();
});

async function throughTraefik(req: ClientRequest, ep: EntryPointOptions = EP, fa: ForwardAuthOptions = FA): Promise<Outcome> {
  const at = entryPoint(req, ep);
  if ("status" in at) return { status: at.status, asked: false };
  const auth = forwardAuthRequest(req, at, fa);
  const response = await rawRequest(svc.port, { method: "GET", path: auth.path, host: auth.host, headers: auth.headers });
  const ok = response.status >= 200 && response.status < 300;
  return { status: response.status, asked: true, auth, response, ...(ok ? { upstream: upstreamHeaders(at, fa, response) } : {}) };
}

const ALICE: HeaderLines = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
];
const ROOT: HeaderLines = [
  ["Remote-User", "root"],
  ["Remote-Groups", "admin"],
];
const client = (method: string, target: string, headers: HeaderLines = [], extra: Partial<ClientRequest> = {}): ClientRequest => ({
  method,
  target,
  host: "app.example.com",
  headers: [["User-Agent", "curl/8.5.0"], ["Accept", "*/*"], ...headers],
  ...extra,
});

const serviceError = (o: Outcome) => JSON.parse(o.response!.body) as { error: string; requestId: string };

describe("the example middleware as Traefik builds it", () => {
  it("reads the example files: trustForwardHeader false, an allow-list, the entrypoint hardening", () => {
    expect(FA.trustForwardHeader).toBe(false);
    expect(FA.authRequestHeaders.length).toBeGreaterThan(0);
    expect(EP).toEqual({
      sanitizePath: true,
      encodedCharacters: expect.objectContaining({ allowEncodedSlash: false, allowEncodedBackSlash: false, allowEncodedNullCharacter: false }),
      aliasHeadersStrategy: "delete",
    });
  });

  it("builds the auth request Traefik sends: GET to the address, the original request in X-Forwarded-*, client copies replaced", async () => {
    const o = await throughTraefik(
      client("PUT", "/orders/42?x=1", [
        ...ALICE,
        ["X-Order-Owner", "alice"],
        ["X-Forwarded-Uri", "/api/items"],
        ["X-Forwarded-For", "198.51.100.1"],
        ["Cookie", "session=abc"],
        ["Connection", "keep-alive"],
      ]),
    );
    const sent = new Map(o.auth!.headers.map(([k, v]) => [k, v]));
    expect(o.auth!.path).toBe("/");
    expect(sent.get("X-Forwarded-Method")).toBe("PUT");
    expect(sent.get("X-Forwarded-Uri")).toBe("/orders/42?x=1");
    expect(sent.get("X-Forwarded-For")).toBe("203.0.113.7");
    expect(sent.get("X-Forwarded-Host")).toBe("app.example.com");
    expect(sent.has("Cookie")).toBe(false); // not in authRequestHeaders
    expect(sent.has("Connection")).toBe(false);
    expect(o.status).toBe(200);
    expect(o.upstream!.get("X-Auth-Principal")).toEqual(["alice"]);
  });
});

// The same cases with the example allow-list and with none (Traefik's default: every header).
describe.each([
  { label: "authRequestHeaders from dynamic.yml", fa: FA },
  { label: "no authRequestHeaders (every client header, Authorization and Cookie included)", fa: { ...FA, authRequestHeaders: [] } },
])("decisions through Traefik — $label", ({ fa }) => {
  const via = (req: ClientRequest, ep: EntryPointOptions = EP) => throughTraefik(req, ep, fa);

  it("allowed: 200, and the application receives exactly the service's identity headers", async () => {
    const o = await via(
      client("GET", "/api/items?limit=5", [
        ["Remote-User", "alice"],
        ["Remote-Groups", "user, auditor"],
        ["Authorization", "Basic YWxpY2U6c2VjcmV0"],
        ["Cookie", "a=1"],
        ["Cookie", "b=2"],
      ]),
    );
    expect(o.status).toBe(200);
    expect(o.response!.body).toBe("");
    expect(o.upstream!.get("X-Auth-Principal")).toEqual(["alice"]);
    expect(o.upstream!.get("X-Auth-Roles")).toEqual(["user,auditor"]);
  });

  it("the original method is judged: an admin may DELETE in the admin area, a user may not POST to the API", async () => {
    expect((await via(client("DELETE", "/admin/users/7", ROOT))).status).toBe(200);
    expect((await via(client("POST", "/api/items", ALICE))).status).toBe(403);
  });

  it("denied: 403 with the service's body, which Traefik relays to the client", async () => {
    const o = await via(client("GET", "/admin/users", ALICE));
    expect(o.status).toBe(403);
    expect(serviceError(o)).toEqual({ error: "forbidden", requestId: o.response!.header("x-request-id") });
    expect(o.upstream).toBeUndefined();
  });

  it("no identity: 401 with the Bearer challenge", async () => {
    const o = await via(client("GET", "/api/items"));
    expect(o.status).toBe(401);
    expect(o.response!.header("www-authenticate")).toBe("Bearer");
    expect(serviceError(o).error).toBe("unauthenticated");
  });

  it("a client-planted identity header reaches the service and is refused (400), in any letter case", async () => {
    for (const planted of [
      [["X-Auth-Principal", "root"]],
      [["x-auth-roles", "admin"]],
      [["X-AUTH-PRINCIPAL", "root"]],
    ] as HeaderLines[]) {
      const o = await via(client("GET", "/api/items", [...ALICE, ...planted]));
      expect(o.status, JSON.stringify(planted)).toBe(400);
      expect(serviceError(o).error).toBe("bad_request");
    }
  });

  it("aliases of the identity headers are deleted at the entrypoint and never reach the application", async () => {
    const o = await via(client("GET", "/api/items", [...ALICE, ["X_Auth_Principal", "root"], ["X.Auth.Roles", "admin"], ["Remote_User", "root"]]));
    expect(o.status).toBe(200);
    expect(o.upstream!.get("X-Auth-Principal")).toEqual(["alice"]);
    expect([...o.upstream!.keys()].filter((k) => !/^[A-Za-z0-9-]+$/.test(k))).toEqual([]);
    expect(o.auth!.headers.filter(([k]) => !/^[A-Za-z0-9-]+$/.test(k))).toEqual([]);
  });

  it("a query string cannot satisfy a path rule", async () => {
    for (const target of ["/admin/users?x=/api/items", "/admin/users?/api/items", "/admin/users?p=%2Fapi%2Fitems"]) {
      expect((await via(client("GET", target, ALICE))).status, target).toBe(403);
    }
    const o = await via(client("GET", "/api/items?next=/admin/users", ALICE));
    expect(o.status).toBe(200);
    expect(new Map(o.auth!.headers).get("X-Forwarded-Uri")).toBe("/api/items?next=/admin/users");
  });

  it("client-sent X-Forwarded-* cannot change what is judged", async () => {
    const o = await via(
      client("GET", "/admin/users", [
        ...ALICE,
        ["X-Forwarded-Uri", "/api/items"],
        ["X-Forwarded-Method", "GET"],
        ["X-Forwarded-Host", "trusted.example.com"],
      ]),
    );
    expect(o.status).toBe(403);
  });

  it("encoded paths: Traefik resolves what it may, rejects encoded reserved characters, and the service sees what the application will serve", async () => {
    // %2e%2e is an encoded unreserved "..": decoded, then resolved by sanitizePath → /admin/users.
    const dots = await via(client("GET", "/api/%2e%2e/admin/users", ALICE));
    expect(new Map(dots.auth!.headers).get("X-Forwarded-Uri")).toBe("/admin/users");
    expect(dots.status).toBe(403);
    const tilde = await via(client("GET", "/api/%7Eitems/./x", ALICE));
    expect(new Map(tilde.auth!.headers).get("X-Forwarded-Uri")).toBe("/api/~items/x");
    expect(tilde.status).toBe(200);
    // %C3%A9 stays encoded (not unreserved) and is accepted.
    const utf8 = await via(client("GET", "/api/caf%c3%a9", ALICE));
    expect(new Map(utf8.auth!.headers).get("X-Forwarded-Uri")).toBe("/api/caf%C3%A9");
    expect(utf8.status).toBe(200);
    // With the example entrypoint, an encoded slash never reaches the service …
    for (const target of ["/admin%2Fusers", "/api/items%2F..%2F..%2Fadmin", "/api/x%00", "/api/%252e%252e/admin"]) {
      const o = await via(client("GET", target, ROOT));
      expect([o.status, o.asked], target).toEqual([400, false]);
    }
    // … and with Traefik's default (encoded characters allowed) the service refuses it itself.
    const permissive = { ...EP, encodedCharacters: {} };
    for (const target of ["/admin%2Fusers", "/api/items%2F..%2F..%2Fadmin", "/api/x%00", "/api/%252e%252e/admin", "/api/x%5Cy"]) {
      const o = await via(client("GET", target, ROOT), permissive);
      expect([o.status, o.asked], target).toEqual([400, true]);
      expect(serviceError(o).error).toBe("bad_request");
    }
  });

  it("a Host with a port is forwarded as Traefik sends it; https is carried in X-Forwarded-Proto", async () => {
    const o = await via(client("GET", "/api/items", ALICE, { host: "app.example.com:8443", tls: true }));
    const sent = new Map(o.auth!.headers);
    expect(sent.get("X-Forwarded-Host")).toBe("app.example.com:8443");
    expect(sent.get("X-Forwarded-Port")).toBe("8443");
    expect(sent.get("X-Forwarded-Proto")).toBe("https");
    expect(o.status).toBe(200);
  });
});

describe("load as Traefik produces it: a new connection for every auth request", () => {
  it("300 requests, 20 at a time, each on a fresh socket with Connection: close — every answer correct", async () => {
    const kinds: Array<{ make: (i: number) => ClientRequest; check: (o: Outcome, i: number) => void }> = [
      {
        // Distinct paths: most of these reach the PDP (no cache hit).
        make: (i) => client("GET", `/api/items/${i}?page=${i}`, [["Remote-User", `user${i}`], ["Remote-Groups", "user"]]),
        check: (o, i) => {
          expect(o.status).toBe(200);
          expect(o.upstream!.get("X-Auth-Principal")).toEqual([`user${i}`]);
        },
      },
      { make: (i) => client("GET", `/admin/users/${i}`, ALICE), check: (o) => expect(o.status).toBe(403) },
      { make: (i) => client("DELETE", `/admin/users/${i}`, ROOT), check: (o) => expect(o.upstream!.get("X-Auth-Roles")).toEqual(["admin"]) },
      { make: (i) => client("GET", `/api/items/${i}`), check: (o) => expect(o.status).toBe(401) },
      { make: (i) => client("GET", `/api/items/${i}`, [...ALICE, ["X-Auth-Principal", "root"]]), check: (o) => expect(o.status).toBe(400) },
      { make: (i) => client("GET", `/admin/users?x=/api/items/${i}`, ALICE), check: (o) => expect(o.status).toBe(403) },
    ];
    const TOTAL = 300;
    const CONCURRENCY = 20;
    const failures: string[] = [];
    let next = 0;
    const started = Date.now();
    const worker = async () => {
      while (next < TOTAL) {
        const i = next++;
        const kind = kinds[i % kinds.length]!;
        const req = kind.make(i);
        try {
          // rawRequest opens a new connection and sends Connection: close.
          const o = await throughTraefik(req);
          kind.check(o, i);
        } catch (error) {
          failures.push(`#${i} ${req.method} ${req.target}: ${(error as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const elapsed = Date.now() - started;
    expect(failures).toEqual([]);
    // For the report only: no speed threshold in tests (TESTING.md).
    console.log(`traefik-conformance load: ${TOTAL} requests, ${CONCURRENCY} concurrent, new connection each: ${elapsed} ms`);
  });
});
