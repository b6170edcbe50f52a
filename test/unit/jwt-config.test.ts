/** The `identity.jwt` config block: defaults, cross-field rules, paths relative to the config file. */
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";

const BASE = "/srv/fa";

function parse(jwt: string, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(`pdp:\n  address: 127.0.0.1:3593\nidentity:\n  jwt:\n${jwt.replace(/^/gm, "    ")}\n`, { baseDir: BASE, env });
}

function problems(jwt: string): readonly string[] {
  try {
    parse(jwt);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

const URL_BASE = "jwksUrl: https://idp.example.com/jwks.json\nissuer: https://idp.example.com/\n";

describe("identity.jwt", () => {
  it("fills in the defaults", () => {
    expect(parse(`${URL_BASE}algorithms: [RS256]`).identity.jwt).toEqual({
      jwksUrl: "https://idp.example.com/jwks.json",
      issuer: "https://idp.example.com/",
      algorithms: ["RS256"],
      clockToleranceSec: 30,
      principal: { id: "sub", roles: "roles", attr: [] },
      forwardToken: false,
      jwksTimeoutMs: 2000,
      jwksRefreshIntervalMs: 300_000,
      tokenCacheEntries: 10_000,
    });
  });

  it("accepts the SPEC example, Keycloak and Auth0 shapes", () => {
    const c = parse(
      `header: Authorization\njwksUrl: https://idp.example.com/.well-known/jwks.json\njwksCa: ./idp-ca.pem\nissuer: https://idp.example.com/\naudience: my-api\nalgorithms: [RS256, ES256]\nclockToleranceSec: 30\nprincipal:\n  id: sub\n  roles: realm_access.roles\n  attr: [email, tenant]\nforwardToken: false`,
    );
    expect(c.identity.jwt).toMatchObject({ audience: "my-api", principal: { roles: "realm_access.roles", attr: ["email", "tenant"] } });
    const auth0 = parse(`${URL_BASE}audience: [api-a, api-b]\nalgorithms: [RS256]\nprincipal:\n  roles: "https://example.com/roles"\n  attr: { tenant: "https://example.com/tenant" }\n  defaultRoles: [member]`);
    expect(auth0.identity.jwt?.principal).toEqual({ id: "sub", roles: "https://example.com/roles", attr: { tenant: "https://example.com/tenant" }, defaultRoles: ["member"] });
  });

  it("never accepts none, nor an unknown algorithm, nor an empty or repeated list", () => {
    expect(problems(`${URL_BASE}algorithms: [RS256, none]`)).toEqual([`identity.jwt.algorithms[1]: "none" is never accepted`]);
    expect(problems(`${URL_BASE}algorithms: [None]`)).toEqual([`identity.jwt.algorithms[0]: "none" is never accepted`]);
    expect(problems(`${URL_BASE}algorithms: [RS1]`)[0]).toMatch(/^identity\.jwt\.algorithms\[0\]: unsupported algorithm "RS1"/);
    expect(problems(`${URL_BASE}algorithms: []`)).toEqual(["identity.jwt.algorithms: must not be empty"]);
    expect(problems(URL_BASE)).toEqual(["identity.jwt.algorithms: required"]);
    expect(problems(`${URL_BASE}algorithms: [RS256, RS256]`)).toEqual(["identity.jwt.algorithms: an algorithm is listed twice"]);
  });

  it("HS* only with an explicit hmacSecret, and a secret only with HS*", () => {
    expect(problems(`${URL_BASE}algorithms: [RS256, HS256]`)).toEqual(["identity.jwt.hmacSecret: algorithms HS256 need an explicit hmacSecret"]);
    expect(problems(`${URL_BASE}algorithms: [RS256]\nhmacSecret: "${"x".repeat(32)}"`)).toEqual(["identity.jwt.hmacSecret: hmacSecret is set but no HS* algorithm is listed"]);
    expect(problems(`issuer: i\nalgorithms: [HS256]\nhmacSecret: short`)).toEqual(["identity.jwt.hmacSecret: must have at least 32 characters"]);
    const c = parse(`issuer: i\nalgorithms: [HS256]\nhmacSecret: \${SECRET}`, { SECRET: "s".repeat(40) });
    expect(c.identity.jwt?.hmacSecret).toBe("s".repeat(40));
  });

  it("needs exactly one key set for asymmetric algorithms, and none without them", () => {
    expect(problems(`issuer: i\nalgorithms: [RS256]`)).toEqual(["identity.jwt: algorithms RS256 need a key set: jwksUrl or jwksFile"]);
    expect(problems(`${URL_BASE}jwksFile: ./jwks.json\nalgorithms: [RS256]`)).toEqual(["identity.jwt: at most one of jwksUrl and jwksFile"]);
    expect(problems(`${URL_BASE}algorithms: [HS256]\nhmacSecret: "${"x".repeat(32)}"`)).toEqual([
      "identity.jwt.jwksUrl: no asymmetric algorithm is listed, so the key set would never be used",
    ]);
  });

  it("checks the JWKS URL and its CA", () => {
    expect(problems(`jwksUrl: ftp://idp/jwks\nissuer: i\nalgorithms: [RS256]`)).toEqual(["identity.jwt.jwksUrl: expected an http:// or https:// URL"]);
    expect(problems(`jwksUrl: not a url\nissuer: i\nalgorithms: [RS256]`)).toEqual(["identity.jwt.jwksUrl: expected an http:// or https:// URL"]);
    expect(problems(`jwksUrl: https://u:p@idp/jwks\nissuer: i\nalgorithms: [RS256]`)).toEqual(["identity.jwt.jwksUrl: credentials in the URL are not supported"]);
    expect(problems(`jwksUrl: http://idp/jwks\njwksCa: ca.pem\nissuer: i\nalgorithms: [RS256]`)).toEqual(["identity.jwt.jwksCa: jwksCa needs an https:// jwksUrl"]);
    expect(problems(`jwksFile: k.json\njwksCa: ca.pem\nissuer: i\nalgorithms: [RS256]`)).toEqual(["identity.jwt.jwksCa: jwksCa needs an https:// jwksUrl"]);
  });

  it("takes a header or a cookie, not both", () => {
    expect(parse(`${URL_BASE}algorithms: [RS256]\ncookie: access_token`).identity.jwt?.cookie).toBe("access_token");
    expect(problems(`${URL_BASE}algorithms: [RS256]\ncookie: at\nheader: Authorization`)).toEqual([
      "identity.jwt: at most one of header and cookie (the default is the Authorization header)",
    ]);
    expect(problems(`${URL_BASE}algorithms: [RS256]\ncookie: "a b"`)).toEqual([`identity.jwt.cookie: expected a cookie name, got "a b"`]);
  });

  it("reports unknown keys and every problem at once", () => {
    expect(problems(`${URL_BASE}algorithms: [none]\njku: x\nprincipal:\n  name: x\nclockToleranceSec: -1`)).toEqual(
      expect.arrayContaining([
        `identity.jwt.algorithms[0]: "none" is never accepted`,
        "identity.jwt.jku: unknown key",
        "identity.jwt.principal.name: unknown key",
        "identity.jwt.clockToleranceSec: must be at least 0",
      ]),
    );
  });

  it("resolves jwksFile and jwksCa against the config folder", () => {
    expect(parse(`jwksFile: ./keys/jwks.json\nissuer: i\nalgorithms: [ES256]`).identity.jwt?.jwksFile).toBe("/srv/fa/keys/jwks.json");
    expect(parse(`jwksFile: /etc/jwks.json\nissuer: i\nalgorithms: [ES256]`).identity.jwt?.jwksFile).toBe("/etc/jwks.json");
    expect(parse(`jwksUrl: https://idp/jwks\njwksCa: ca/idp.pem\nissuer: i\nalgorithms: [ES256]`).identity.jwt?.jwksCa).toBe("/srv/fa/ca/idp.pem");
  });
});
