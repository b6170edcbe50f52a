/**
 * Identity from JWTs end to end (issue 3): raw HTTP → listener → JWT verification against a JWKS
 * endpoint on a loopback port → the real Cerbos PDP. Keys are generated here. Every attack must
 * be a 401 `invalid_token` that reaches neither the PDP nor another identity source (each
 * service below also has trusted headers and an anonymous principal that would allow the request).
 */
import { constants, createHmac, sign as cryptoSign } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CompactEncrypt, CompactSign, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, importSPKI, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest, type HeaderLines, type RawResponse } from "../support/http.js";
import { b64url, compact, startJwksServer, type JwksServer } from "../support/jwks-server.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const ISS = "https://idp.test/realms/demo";
const AUD = "forwardauth";

interface Key {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
  kid: string;
}

async function key(alg: "RS256" | "ES256", kid: string): Promise<Key> {
  const k = await generateKeyPair(alg, { extractable: true });
  return { ...k, kid, jwk: { ...(await exportJWK(k.publicKey)), kid, alg, use: "sig" } };
}

const nowSec = () => Math.floor(Date.now() / 1000);
let jti = 0;

/** Keycloak-shaped claims; a fresh jti keeps every token distinct (no verified-cache hit). */
function claims(extra: JWTPayload = {}): JWTPayload {
  return { sub: "alice", iss: ISS, aud: AUD, exp: nowSec() + 300, jti: `t${++jti}`, realm_access: { roles: ["user"] }, email: "alice@example.com", ...extra };
}

function sign(k: Key, payload: JWTPayload = claims(), header: Record<string, unknown> = {}): Promise<string> {
  const alg = k.jwk.alg!;
  return new SignJWT(payload).setProtectedHeader({ alg, kid: k.kid, typ: "JWT", ...header }).sign(k.privateKey);
}

let dir: string;
let pdp: TestPdp;
let rsa: Key;
let ec: Key;
let rsaPem: string;
let rsaPrivatePem: string;
let attacker: Key;
let idp: JwksServer;
let evilServer: JwksServer;
let svc: TestService;

const IDENTITY_FALLBACKS = {
  trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" },
  anonymous: { id: "anonymous", roles: ["anonymous"] },
};

function jwtConfig(jwksUrl: string, extra: Record<string, unknown> = {}) {
  return {
    jwksUrl,
    issuer: ISS,
    audience: AUD,
    algorithms: ["RS256", "ES256"],
    clockToleranceSec: 30,
    principal: { id: "sub", roles: "realm_access.roles", attr: ["email", "tenant"] },
    ...extra,
  };
}

const SERVICE = {
  routes: [{ name: "tickets", path: "/tickets/:tenant/:id", resource: { kind: "ticket", id: "{params.id}", attr: { tenant: "{params.tenant}" } }, action: "read" }],
  response: { headers: { "X-Auth-Principal": "{principal.id}", "X-Auth-Roles": "{principal.roles}", "X-Auth-Email": "{claims.email}" } },
};

async function readyz(port: number): Promise<number> {
  return (await rawRequest(port, { path: "/readyz" })).status;
}

/** CheckResources + AuthZEN batch calls the PDP has served. */
async function pdpCalls(settled = false): Promise<number> {
  if (settled) return (await pdp.settledCheckCalls("CheckResources", 100)) + (await pdp.settledCheckCalls("AccessEvaluationBatch", 50));
  return (await pdp.checkCalls("CheckResources")) + (await pdp.checkCalls("AccessEvaluationBatch"));
}

const bearer = (token: string): HeaderLines => [["Authorization", `Bearer ${token}`]];
const ask = (s: TestService, method: string, uri: string, extra: HeaderLines = []) => rawRequest(s.port, { headers: forwarded(method, uri, undefined, extra) });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "jwt-it-"));
  [rsa, ec, attacker] = await Promise.all([key("RS256", "rsa-1"), key("ES256", "ec-1"), key("RS256", "evil-1")]);
  rsaPem = await exportSPKI(rsa.publicKey);
  rsaPrivatePem = await exportPKCS8(rsa.privateKey);
  // The PDP verifies forwarded tokens itself (auxData.jwt) with the same public keys.
  writeFileSync(join(dir, "pdp-jwks.json"), JSON.stringify({ keys: [rsa.jwk, ec.jwk] }));
  writeFileSync(join(dir, "cerbos-extra.yaml"), `auxData:\n  jwt:\n    keySets:\n      - id: idp\n        local:\n          file: ${join(dir, "pdp-jwks.json")}\n`);
  pdp = await startPdp({ policiesDir, extraConfigFile: join(dir, "cerbos-extra.yaml") });
  idp = await startJwksServer({ keys: [rsa.jwk, ec.jwk] });
  evilServer = await startJwksServer({ keys: [attacker.jwk] });
  svc = await startService(pdp.grpcTarget, { ...SERVICE, identity: { jwt: jwtConfig(idp.url, { forwardToken: true }), ...IDENTITY_FALLBACKS } });
  await waitFor(async () => (await readyz(svc.adminPort)) === 200, { what: "readyz 200" });
});

afterAll(async () => {
  await svc?.stop();
  await idp?.close();
  await evilServer?.close();
  await pdp?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("verified tokens against the real PDP", () => {
  it("RS256: roles from realm_access.roles decide allow vs deny", async () => {
    const user = await sign(rsa);
    const ok = await ask(svc, "GET", "/api/items", bearer(user));
    expect(ok.status).toBe(200);
    expect(ok.header("x-auth-principal")).toBe("alice");
    expect(ok.header("x-auth-roles")).toBe("user");
    expect(ok.header("x-auth-email")).toBe("alice@example.com");
    expect((await ask(svc, "DELETE", "/admin/users", bearer(user))).status).toBe(403);
    const admin = await sign(rsa, claims({ sub: "root", realm_access: { roles: ["admin"] } }));
    expect((await ask(svc, "DELETE", "/admin/users", bearer(admin))).status).toBe(200);
  });

  it("ES256: the same, with the scheme in any case", async () => {
    const user = await sign(ec, claims({ sub: "bob" }));
    const ok = await ask(svc, "GET", "/api/items", [["Authorization", `bearer ${user}`]]);
    expect(ok.status).toBe(200);
    expect(ok.header("x-auth-principal")).toBe("bob");
    expect((await ask(svc, "GET", "/admin/users", bearer(user))).status).toBe(403);
    const admin = await sign(ec, claims({ sub: "root", realm_access: { roles: ["user", "admin"] } }));
    const res = await ask(svc, "GET", "/admin/users", bearer(admin));
    expect(res.status).toBe(200);
    expect(res.header("x-auth-roles")).toBe("user,admin");
  });

  it("forwards the token to the PDP as auxData.jwt (forwardToken), one token per call", async () => {
    const acme = await sign(rsa, claims({ sub: "carol", tenant: "acme" }));
    const globex = await sign(rsa, claims({ sub: "carol", tenant: "globex" }));
    expect((await ask(svc, "GET", "/tickets/acme/7", bearer(acme))).status).toBe(200);
    expect((await ask(svc, "GET", "/tickets/acme/7", bearer(globex))).status).toBe(403);
    // Same principal, same resource, different tokens, all at once: each answered by its own token.
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => ask(svc, "GET", "/tickets/acme/8", bearer(i % 2 ? globex : acme))));
    expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 20 }, (_, i) => (i % 2 ? 403 : 200)));
  });

  it("without a token, the next identity source applies (trusted headers, then anonymous)", async () => {
    const trusted = await ask(svc, "DELETE", "/admin/users", [
      ["Remote-User", "root"],
      ["Remote-Groups", "admin"],
    ]);
    expect(trusted.status).toBe(200);
    expect(trusted.header("x-auth-principal")).toBe("root");
    const anon = await ask(svc, "GET", "/public/index.html");
    expect(anon.status).toBe(200);
    expect(anon.header("x-auth-principal")).toBe("anonymous");
    // Another Authorization scheme is not a bearer token either.
    expect((await ask(svc, "GET", "/public/index.html", [["Authorization", "Basic YWxpY2U6cHc="]])).header("x-auth-principal")).toBe("anonymous");
  });

  it("never writes a token into the logs", async () => {
    const token = await sign(rsa);
    await ask(svc, "GET", "/api/items", bearer(token));
    await ask(svc, "GET", "/api/items", bearer(`${token}x`));
    const text = JSON.stringify(svc.logs);
    expect(text).not.toContain(token.split(".")[2]);
    expect(text).not.toContain(token.split(".")[1]);
  });
});

describe("attacks: 401 invalid_token, no PDP call, no fallback to trusted headers or anonymous", () => {
  /** Sent with trusted headers for an admin to a path anonymous may read: any fallback would be a 200. */
  async function expectRefused(token: string, reason?: RegExp): Promise<RawResponse> {
    const before = await pdpCalls();
    const res = await ask(svc, "GET", "/public/index.html", [
      ["Remote-User", "root"],
      ["Remote-Groups", "admin"],
      ...bearer(token),
    ]);
    expect(res.status).toBe(401);
    expect(res.header("www-authenticate")).toBe('Bearer error="invalid_token"');
    expect(res.header("cache-control")).toBe("no-store");
    expect(JSON.parse(res.body)).toEqual({ error: "unauthenticated", requestId: res.header("x-request-id") });
    const record = svc.decisions().find((d) => d.requestId === res.header("x-request-id"));
    expect(record).toMatchObject({ outcome: "unauthenticated", route: "-", principal: null, cerbosCallId: null });
    if (reason) expect(String(record?.reason)).toMatch(reason);
    expect(await pdpCalls(true)).toBe(before);
    return res;
  }

  function rsaSignedAs(alg: "RS384" | "PS256", payload: JWTPayload): string {
    const input = `${b64url({ alg, kid: rsa.kid, typ: "JWT" })}.${b64url(payload)}`;
    const hash = alg === "RS384" ? "sha384" : "sha256";
    const k = alg === "PS256" ? { key: rsaPrivatePem, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : rsaPrivatePem;
    return `${input}.${cryptoSign(hash, Buffer.from(input), k).toString("base64url")}`;
  }

  it("alg: none", async () => {
    await expectRefused(compact({ alg: "none", typ: "JWT" }, claims(), ""));
    await expectRefused(compact({ alg: "none", typ: "JWT" }, claims(), "eA"), /ALG_NOT_ALLOWED/);
  });

  it("HS256 signed with the RSA public key, PEM and JWK forms", async () => {
    for (const secret of [rsaPem, JSON.stringify(rsa.jwk)]) {
      const input = `${b64url({ alg: "HS256", kid: rsa.kid, typ: "JWT" })}.${b64url(claims())}`;
      await expectRefused(`${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`, /ALG_NOT_ALLOWED/);
    }
  });

  it("an algorithm outside the allow-list, signed by the right key", async () => {
    await expectRefused(rsaSignedAs("RS384", claims()), /ALG_NOT_ALLOWED/);
    await expectRefused(rsaSignedAs("PS256", claims()), /ALG_NOT_ALLOWED/);
  });

  it("expired beyond the tolerance, missing exp, nbf in the future", async () => {
    await expectRefused(await sign(rsa, claims({ exp: nowSec() - 60 })), /ERR_JWT_EXPIRED/);
    const { exp: _, ...noExp } = claims();
    await expectRefused(await sign(rsa, noExp), /missing required "exp"/);
    await expectRefused(await sign(rsa, claims({ nbf: nowSec() + 120 })), /"nbf"/);
  });

  it("wrong iss, wrong aud", async () => {
    await expectRefused(await sign(rsa, claims({ iss: "https://evil.test/" })), /"iss"/);
    await expectRefused(await sign(rsa, claims({ aud: "another-api" })), /"aud"/);
  });

  it("a jku (or x5u, jwk, x5c) header pointing at an attacker's key: never fetched", async () => {
    const idpBefore = idp.requests;
    await expectRefused(await sign(attacker, claims(), { jku: evilServer.url }), /"jku"/);
    await expectRefused(await sign(attacker, claims(), { x5u: evilServer.url }), /"x5u"/);
    await expectRefused(await sign(attacker, claims(), { jwk: attacker.jwk }), /"jwk"/);
    await expectRefused(await sign(rsa, claims(), { jku: evilServer.url }), /"jku"/);
    expect(evilServer.requests).toBe(0);
    expect(idp.requests).toBe(idpBefore);
  });

  it("malformed base64url and a payload that is not JSON", async () => {
    const [h, p, s] = (await sign(rsa)).split(".");
    await expectRefused(`${h}.${p}!.${s}`, /malformed/);
    await expectRefused(`${h}.${p}=.${s}`, /malformed/);
    await expectRefused(`${b64url("{not json")}.${p}.${s}`, /JWS Protected Header is invalid/);
    const notJson = await new CompactSign(new TextEncoder().encode("not json")).setProtectedHeader({ alg: "RS256", kid: rsa.kid }).sign(rsa.privateKey);
    await expectRefused(notJson, /JWT Claims Set/);
  });

  it("a JWE", async () => {
    const jwe = await new CompactEncrypt(new TextEncoder().encode(JSON.stringify(claims()))).setProtectedHeader({ alg: "RSA-OAEP-256", enc: "A256GCM" }).encrypt(await importSPKI(rsaPem, "RSA-OAEP-256"));
    await expectRefused(jwe, /JWE/);
  });

  it("an oversized token (over 8 KiB, validly signed)", async () => {
    await expectRefused(await sign(rsa, claims({ pad: "x".repeat(8 * 1024) })), /over 8192 bytes/);
  });

  it("a crit header with an unknown extension", async () => {
    const ext = "https://example.invalid/ext";
    const token = await new SignJWT(claims()).setProtectedHeader({ alg: "RS256", kid: rsa.kid, crit: [ext], [ext]: 1 }).sign(rsa.privateKey, { crit: { [ext]: true } });
    await expectRefused(token, /not recognized/);
  });

  it("an unknown kid, and a known kid over the wrong key", async () => {
    await expectRefused(await sign({ ...attacker, kid: "rsa-1" }), /SIGNATURE_VERIFICATION_FAILED/);
    await expectRefused(await sign(attacker), /NO_MATCHING_KEY/);
  });

  it("two Authorization values, or Bearer a, Bearer b → 400 without a PDP call", async () => {
    const token = await sign(rsa);
    const before = await pdpCalls();
    for (const headers of [
      [
        ["Authorization", `Bearer ${token}`],
        ["Authorization", `Bearer ${token}`],
      ],
      [["Authorization", `Bearer ${token}, Bearer ${token}`]],
    ] as HeaderLines[]) {
      const res = await ask(svc, "GET", "/public/index.html", headers);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body)).toEqual({ error: "bad_request", requestId: res.header("x-request-id") });
    }
    expect(await pdpCalls(true)).toBe(before);
  });
});

describe("unknown kid burst", () => {
  let jwks: JwksServer;
  let burst: TestService;
  beforeAll(async () => {
    jwks = await startJwksServer({ keys: [rsa.jwk] });
    burst = await startService(pdp.grpcTarget, { ...SERVICE, identity: { jwt: jwtConfig(jwks.url) } });
    await waitFor(async () => (await readyz(burst.adminPort)) === 200, { what: "readyz 200" });
  });
  afterAll(async () => {
    await burst?.stop();
    await jwks?.close();
  });

  it("1,000 unknown kids cost at most one JWKS fetch; valid requests in between still pass", async () => {
    const fetchesBefore = jwks.requests;
    const pdpBefore = await pdpCalls();
    const bad = await Promise.all(Array.from({ length: 1000 }, (_, i) => sign({ ...attacker, kid: `unknown-${i}` })));
    const good = await sign(rsa);
    const requests: Array<Promise<RawResponse>> = [];
    bad.forEach((token, i) => {
      requests.push(ask(burst, "GET", "/api/items", bearer(token)));
      if (i % 50 === 0) requests.push(ask(burst, "GET", "/api/items", bearer(good)));
    });
    const answers = await Promise.all(requests);
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(1000);
    expect(statuses.filter((s) => s === 200)).toHaveLength(20);
    expect(jwks.requests - fetchesBefore).toBeLessThanOrEqual(1);
    // Only the valid requests asked the PDP (a hot, cached token: at most 20 checks).
    expect((await pdpCalls(true)) - pdpBefore).toBeLessThanOrEqual(20);
  });
});

describe("key rotation, then the JWKS endpoint down", () => {
  let jwks: JwksServer;
  let rot: TestService;
  let rsa2: Key;
  beforeAll(async () => {
    rsa2 = await key("RS256", "rsa-2");
    jwks = await startJwksServer({ keys: [rsa.jwk] });
    rot = await startService(pdp.grpcTarget, { ...SERVICE, identity: { jwt: jwtConfig(jwks.url), ...IDENTITY_FALLBACKS } });
    await waitFor(async () => (await readyz(rot.adminPort)) === 200, { what: "readyz 200" });
  });
  afterAll(async () => {
    await rot?.stop();
    await jwks?.close();
  });

  it("accepts a new kid after exactly one refetch", async () => {
    expect((await ask(rot, "GET", "/api/items", bearer(await sign(rsa)))).status).toBe(200);
    const before = jwks.requests;
    jwks.setKeys([rsa.jwk, rsa2.jwk]);
    const res = await ask(rot, "GET", "/api/items", bearer(await sign(rsa2)));
    expect(res.status).toBe(200);
    expect(jwks.requests - before).toBe(1);
    // Within 30 s of that refetch another unknown kid costs no fetch.
    const r3 = await ask(rot, "GET", "/api/items", bearer(await sign({ ...attacker, kid: "rsa-3" })));
    expect(r3.status).toBe(401);
    expect(jwks.requests - before).toBe(1);
  });

  it("keeps verifying known kids with the last good keys while the endpoint is down", async () => {
    await jwks.stop();
    for (const k of [rsa, rsa2]) {
      const res = await ask(rot, "GET", "/api/items", bearer(await sign(k))); // fresh tokens: no cache hit
      expect(res.status).toBe(200);
    }
    const unknown = await ask(rot, "GET", "/api/items", bearer(await sign({ ...attacker, kid: "rsa-9" })));
    expect(unknown.status).toBe(401);
    expect(unknown.header("www-authenticate")).toBe('Bearer error="invalid_token"');
    expect(await readyz(rot.adminPort)).toBe(200);
  });
});

describe("JWKS endpoint down since start", () => {
  let jwks: JwksServer;
  let down: TestService;
  beforeAll(async () => {
    jwks = await startJwksServer({ keys: [rsa.jwk] });
    jwks.mode = "error";
    down = await startService(pdp.grpcTarget, { ...SERVICE, identity: { jwt: jwtConfig(jwks.url) } });
  });
  afterAll(async () => {
    await down?.stop();
    await jwks?.close();
  });

  it("answers 503 (not 401) to a valid token and keeps /readyz 503, then recovers by itself", async () => {
    await jwks.waitForRequests(2); // the first load and at least one background retry failed
    const before = await pdpCalls();
    const token = await sign(rsa);
    const res = await ask(down, "GET", "/api/items", bearer(token));
    expect(res.status).toBe(503);
    expect(res.header("retry-after")).toBe("1");
    expect(JSON.parse(res.body)).toEqual({ error: "unavailable", requestId: res.header("x-request-id") });
    expect(await readyz(down.adminPort)).toBe(503);
    // What needs no key is still judged: malformed → 401, no token → 401 Bearer.
    expect((await ask(down, "GET", "/api/items", bearer("not-a-jwt"))).status).toBe(401);
    const none = await ask(down, "GET", "/api/items");
    expect(none.status).toBe(401);
    expect(none.header("www-authenticate")).toBe("Bearer");
    expect(await pdpCalls(true)).toBe(before);

    jwks.mode = "ok";
    await waitFor(async () => (await readyz(down.adminPort)) === 200, { what: "readyz 200 after the JWKS came back" });
    expect((await ask(down, "GET", "/api/items", bearer(token))).status).toBe(200);
  });
});

describe("cookie token and jwksFile", () => {
  let fileSvc: TestService;
  beforeAll(async () => {
    writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys: [rsa.jwk, ec.jwk] }));
    const { jwksUrl: _, ...jwt } = jwtConfig("");
    fileSvc = await startService(pdp.grpcTarget, { ...SERVICE, identity: { jwt: { ...jwt, jwksFile: join(dir, "jwks.json"), cookie: "access_token" } } });
  });
  afterAll(() => fileSvc?.stop());

  it("reads the token from the named cookie and verifies it against the file's keys", async () => {
    await waitFor(async () => (await readyz(fileSvc.adminPort)) === 200, { what: "readyz 200" });
    const token = await sign(ec);
    expect((await ask(fileSvc, "GET", "/api/items", [["Cookie", `theme=dark; access_token=${token}`]])).status).toBe(200);
    // Two Cookie lines are joined with "; ": the cookie is still found.
    expect((await ask(fileSvc, "GET", "/api/items", [["Cookie", "theme=dark"], ["Cookie", `access_token=${token}`]])).status).toBe(200);
    expect((await ask(fileSvc, "GET", "/api/items", [["Cookie", `access_token=${token}; access_token=${token}`]])).status).toBe(400);
    expect((await ask(fileSvc, "GET", "/api/items", [["Cookie", "access_token=garbage"]])).status).toBe(401);
    // The Authorization header is not a token source here.
    const res = await ask(fileSvc, "GET", "/api/items", bearer(token));
    expect(res.status).toBe(401);
    expect(res.header("www-authenticate")).toBe("Bearer");
  });
});
