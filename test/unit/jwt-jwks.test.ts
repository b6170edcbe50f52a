/**
 * Key sets: the remote JWKS fetcher (timeout, CA, size, status), the refetch discipline
 * (unknown kid at most once per cooldown per key set, shared in-flight fetch, last good keys
 * kept, never-loaded → unavailable) and the file key set.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errors, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configSchema } from "../../src/config/schema.js";
import { fileKeySet, httpJwksFetch, KeysUnavailable, RemoteKeySet, sanitizeJwks } from "../../src/identity/jwks.js";
import { createJwtSource } from "../../src/identity/jwt.js";
import type { ForwardedRequest, Identity } from "../../src/model.js";
import { startJwksServer, waitUntil as waitFor, type JwksServer } from "../support/jwks-server.js";

interface Pair {
  privateKey: CryptoKey;
  jwk: JWK;
}

async function pair(alg: "RS256" | "ES256", kid: string): Promise<Pair> {
  const k = await generateKeyPair(alg, { extractable: true });
  return { privateKey: k.privateKey, jwk: { ...(await exportJWK(k.publicKey)), kid, alg } };
}

const header = (kid: string) => ({ alg: "RS256", kid });

/** A fetch whose answers the test controls: each call waits for the next answer. */
function controlledFetch() {
  let calls = 0;
  const queue: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void }> = [];
  return {
    get calls() {
      return calls;
    },
    fetch: () => {
      calls++;
      return new Promise<unknown>((resolve, reject) => queue.push({ resolve, reject }));
    },
    async answer(value: unknown | Error) {
      await waitFor(() => queue.length > 0, { what: "a pending fetch" });
      const next = queue.shift()!;
      if (value instanceof Error) next.reject(value);
      else next.resolve(value);
    },
  };
}

let a: Pair;
let b: Pair;
let c: Pair;

beforeAll(async () => {
  [a, b, c] = await Promise.all([pair("RS256", "a"), pair("RS256", "b"), pair("RS256", "c")]);
});

describe("sanitizeJwks", () => {
  it("keeps public signature keys and drops private, symmetric and encryption keys", async () => {
    const priv = await generateKeyPair("RS256", { extractable: true });
    const privateJwk = { ...(await exportJWK(priv.privateKey)), kid: "p" };
    const { jwks, dropped } = sanitizeJwks({
      keys: [a.jwk, privateJwk, { kty: "oct", k: "c2VjcmV0", kid: "s" }, { ...b.jwk, use: "enc" }, "junk", { ...c.jwk, kid: 7 }],
    });
    expect(jwks.keys.map((k) => k.kid)).toEqual(["a"]);
    expect(dropped).toBe(5);
  });

  it("refuses documents that are not key sets or hold no usable key", () => {
    for (const doc of [null, [], "x", {}, { keys: {} }, { keys: [] }, { keys: [{ kty: "oct", k: "eA" }] }]) {
      expect(() => sanitizeJwks(doc)).toThrow();
    }
  });
});

describe("RemoteKeySet", () => {
  it("is not ready and answers KeysUnavailable until the first load, then recovers by itself", async () => {
    const f = controlledFetch();
    const set = new RemoteKeySet({ url: "t", fetch: f.fetch, retryMinMs: 5, retryMaxMs: 20 });
    try {
      expect(set.ready()).toBe(false);
      await f.answer(new Error("connection refused"));
      await waitFor(() => set.stats.failures === 1);
      await expect(set.getKey(header("a"), {} as never)).rejects.toBeInstanceOf(KeysUnavailable);
      await f.answer(new Error("connection refused")); // background retry with backoff
      await f.answer({ keys: [a.jwk] });
      await set.whenReady();
      expect(set.ready()).toBe(true);
      await expect(set.getKey(header("a"), {} as never)).resolves.toBeDefined();
      expect(set.stats).toMatchObject({ fetches: 3, failures: 2 });
    } finally {
      set.close();
    }
  });

  it("lets a request that arrives during the first fetch wait for it", async () => {
    const f = controlledFetch();
    const set = new RemoteKeySet({ url: "t", fetch: f.fetch });
    try {
      const pending = set.getKey(header("a"), {} as never);
      await f.answer({ keys: [a.jwk] });
      await expect(pending).resolves.toBeDefined();
    } finally {
      set.close();
    }
  });

  it("refetches at most once per cooldown for 1,000 unknown kids, all waiting on one fetch", async () => {
    const f = controlledFetch();
    let clock = 0;
    const set = new RemoteKeySet({ url: "t", fetch: f.fetch, now: () => clock });
    try {
      await f.answer({ keys: [a.jwk] });
      await set.whenReady();
      const burst = Array.from({ length: 1000 }, (_, i) => set.getKey(header(`unknown-${i}`), {} as never).then(
        () => "key",
        (e: unknown) => (e instanceof errors.JWKSNoMatchingKey ? "no-key" : String(e)),
      ));
      // A known kid is unaffected while the refetch is in flight.
      await expect(set.getKey(header("a"), {} as never)).resolves.toBeDefined();
      await f.answer({ keys: [a.jwk] });
      expect(new Set(await Promise.all(burst))).toEqual(new Set(["no-key"]));
      expect(f.calls).toBe(2); // initial + one refetch
      expect(set.stats.unknownKidRefetches).toBe(1);

      // Within the cooldown: refused at once, no fetch.
      clock = 29_999;
      await expect(set.getKey(header("unknown-x"), {} as never)).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
      expect(f.calls).toBe(2);

      // After it: one more refetch, which finds a rotated-in key.
      clock = 30_000;
      const rotated = set.getKey(header("b"), {} as never);
      await f.answer({ keys: [a.jwk, b.jwk] });
      await expect(rotated).resolves.toBeDefined();
      expect(f.calls).toBe(3);
    } finally {
      set.close();
    }
  });

  it("keeps the last good keys when a refresh fails, and forgets removed keys on the next good one", async () => {
    const f = controlledFetch();
    let clock = 0;
    let changes = 0;
    const set = new RemoteKeySet({ url: "t", fetch: f.fetch, now: () => clock, onChange: () => changes++ });
    try {
      await f.answer({ keys: [a.jwk] });
      await set.whenReady();
      // Unknown kid → refetch → endpoint down: the known key still works, the unknown one is 401-ish.
      const unknown = set.getKey(header("b"), {} as never);
      await f.answer(new Error("HTTP 500"));
      await expect(unknown).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
      await expect(set.getKey(header("a"), {} as never)).resolves.toBeDefined();
      expect(set.ready()).toBe(true);
      // An answer that is not a usable key set is a failure too, not an empty set.
      clock = 60_000;
      const again = set.getKey(header("b"), {} as never);
      await f.answer({ keys: [] });
      await expect(again).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
      await expect(set.getKey(header("a"), {} as never)).resolves.toBeDefined();
      expect(changes).toBe(0);
      // Rotation that removes "a".
      clock = 120_000;
      const rotated = set.getKey(header("b"), {} as never);
      await f.answer({ keys: [b.jwk] });
      await expect(rotated).resolves.toBeDefined();
      expect(changes).toBe(1);
      await expect(set.getKey(header("a"), {} as never)).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
    } finally {
      set.close();
    }
  });

  it("refreshes on its interval", async () => {
    let calls = 0;
    const set = new RemoteKeySet({
      url: "t",
      fetch: async () => {
        calls++;
        return { keys: calls < 3 ? [a.jwk] : [a.jwk, b.jwk] };
      },
      refreshIntervalMs: 10,
    });
    try {
      await waitFor(() => calls >= 3, { what: "periodic refreshes" });
      await waitFor(() => set.getKey(header("b"), {} as never).then(() => true), { what: "the refreshed key" });
    } finally {
      set.close();
    }
  });

  it("accepts a token without kid only when exactly one key fits", async () => {
    const f = controlledFetch();
    const set = new RemoteKeySet({ url: "t", fetch: f.fetch });
    try {
      await f.answer({ keys: [a.jwk, b.jwk] });
      await set.whenReady();
      await expect(set.getKey({ alg: "RS256" }, {} as never)).rejects.toBeInstanceOf(errors.JWKSMultipleMatchingKeys);
      const es = set.getKey({ alg: "ES256" }, {} as never); // no fitting key: one refetch
      await f.answer({ keys: [a.jwk, b.jwk] });
      await expect(es).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
    } finally {
      set.close();
    }
  });
});

describe("httpJwksFetch", () => {
  let server: JwksServer;
  beforeAll(async () => {
    server = await startJwksServer({ keys: [a.jwk] });
  });
  afterAll(() => server.close());

  it("fetches and parses the key set", async () => {
    const { fetch } = httpJwksFetch(server.url, { timeoutMs: 2000 });
    await expect(fetch()).resolves.toEqual({ keys: [a.jwk] });
  });

  it("fails on a non-200 status, a hang past the timeout, a body that is too large or not JSON", async () => {
    const { fetch } = httpJwksFetch(server.url, { timeoutMs: 200, maxBytes: 4096 });
    try {
      server.mode = "error";
      await expect(fetch()).rejects.toThrow(/HTTP 500/);
      server.mode = "hang";
      const started = performance.now();
      await expect(fetch()).rejects.toThrow(/timed out after 200 ms/);
      expect(performance.now() - started).toBeLessThan(2000);
      server.mode = "ok";
      server.setBody(JSON.stringify({ keys: [a.jwk], pad: "x".repeat(5000) }));
      await expect(fetch()).rejects.toThrow(/larger than 4096/);
      server.setBody("<html>");
      await expect(fetch()).rejects.toThrow(/not JSON/);
    } finally {
      server.mode = "ok";
      server.setKeys([a.jwk]);
    }
  });

  it("does not follow redirects", async () => {
    const { fetch } = httpJwksFetch(server.url.replace("/.well-known/jwks.json", "/redirect"), { timeoutMs: 2000 });
    await expect(fetch()).rejects.toThrow(/HTTP 302/);
  });

  it("fails fast on connection refused", async () => {
    const gone = await startJwksServer({ keys: [a.jwk] });
    await gone.stop();
    const { fetch } = httpJwksFetch(gone.url, { timeoutMs: 2000 });
    await expect(fetch()).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe("https with jwksCa", () => {
  let dir: string;
  let server: JwksServer | undefined;
  let ca = "";
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "jwks-tls-"));
    try {
      execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
    } catch {
      return; // no openssl: the tests below are skipped
    }
    const { readFileSync } = await import("node:fs");
    ca = readFileSync(join(dir, "cert.pem"), "utf8");
    server = await startJwksServer({ keys: [a.jwk] }, { tls: { key: readFileSync(join(dir, "key.pem"), "utf8"), cert: ca } });
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("trusts the configured CA and only it", async (ctx) => {
    if (!server) ctx.skip();
    await expect(httpJwksFetch(server!.url, { timeoutMs: 2000, ca }).fetch()).resolves.toEqual({ keys: [a.jwk] });
    await expect(httpJwksFetch(server!.url, { timeoutMs: 2000 }).fetch()).rejects.toThrow(/self.signed|certificate/i);
  });

  it("reads jwksCa from the config through the JWT source", async (ctx) => {
    if (!server) ctx.skip();
    writeFileSync(join(dir, "ca.pem"), ca);
    const cfg = configSchema.parse({
      pdp: { address: "127.0.0.1:3593" },
      identity: { jwt: { jwksUrl: server!.url, jwksCa: join(dir, "ca.pem"), issuer: "i", algorithms: ["RS256"] } },
    }).identity.jwt!;
    const src = createJwtSource(cfg);
    try {
      await src.whenReady();
      const token = await new SignJWT({ sub: "u", roles: ["r"], iss: "i", exp: Math.floor(Date.now() / 1000) + 60 }).setProtectedHeader(header("a")).sign(a.privateKey);
      const req = { method: "GET", scheme: "http", host: "h", path: "/", rawQuery: "", query: {}, ip: "", headers: new Map([["authorization", `Bearer ${token}`]]) } satisfies ForwardedRequest;
      expect(((await src.resolve(req)) as Identity).principal.id).toBe("u");
    } finally {
      src.close();
    }
  });
});

describe("fileKeySet", () => {
  it("reads a JWKS file and refuses an unusable one with the path in the message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "jwks-file-"));
    try {
      writeFileSync(join(dir, "good.json"), JSON.stringify({ keys: [a.jwk] }));
      writeFileSync(join(dir, "empty.json"), JSON.stringify({ keys: [] }));
      writeFileSync(join(dir, "bad.json"), "{");
      const set = fileKeySet(join(dir, "good.json"));
      expect(set.ready()).toBe(true);
      await expect(set.getKey(header("a"), {} as never)).resolves.toBeDefined();
      expect(() => fileKeySet(join(dir, "empty.json"))).toThrow(/empty\.json.*no usable/);
      expect(() => fileKeySet(join(dir, "bad.json"))).toThrow(/bad\.json/);
      expect(() => fileKeySet(join(dir, "missing.json"))).toThrow(/missing\.json/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the JWT source over a real JWKS endpoint", () => {
  it("empties the verified-token cache when the key set changes (a removed key stops verifying)", async () => {
    const server = await startJwksServer({ keys: [a.jwk] });
    const cfg = configSchema.parse({
      pdp: { address: "127.0.0.1:3593" },
      identity: { jwt: { jwksUrl: server.url, issuer: "i", algorithms: ["RS256"] } },
    }).identity.jwt!;
    const src = createJwtSource(cfg);
    const req = (token: string): ForwardedRequest => ({ method: "GET", scheme: "http", host: "h", path: "/", rawQuery: "", query: {}, ip: "", headers: new Map([["authorization", `Bearer ${token}`]]) });
    const sign = (p: Pair) => new SignJWT({ sub: "u", roles: ["r"], iss: "i", exp: Math.floor(Date.now() / 1000) + 60 }).setProtectedHeader(header(p.jwk.kid!)).sign(p.privateKey);
    try {
      await src.whenReady();
      const tokenA = await sign(a);
      await src.resolve(req(tokenA));
      expect(src.resolve(req(tokenA))).not.toBeInstanceOf(Promise); // cached
      server.setKeys([b.jwk]); // "a" revoked, "b" rotated in
      expect(((await src.resolve(req(await sign(b)))) as Identity).principal.id).toBe("u"); // one refetch
      expect(server.requests).toBe(2);
      await expect(src.resolve(req(tokenA))).rejects.toMatchObject({ code: "invalid_token" });
    } finally {
      src.close();
      await server.close();
    }
  });
});
