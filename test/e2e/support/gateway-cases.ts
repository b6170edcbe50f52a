/**
 * The cases every real gateway must pass, declared once and run by caddy.test.ts and
 * nginx.test.ts: client → gateway → (auth request) service → real PDP, and on a 2xx the gateway
 * → recording backend. Each case clears the backend's record first and reads it after.
 *
 * The gateways differ only in how they relay a refusal, described by GatewayBehaviour.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { rawRequest, type HeaderLines, type RawResponse } from "../../support/http.js";
import { waitFor } from "../../support/service.js";
import type { Gateway, GatewayTargets } from "./gateways.js";
import { startStack, type Stack } from "./stack.js";

export interface GatewayBehaviour {
  name: string;
  start(targets: GatewayTargets): Promise<Gateway>;
  /** What the client gets when the service answers 400 (planted header, malformed path). */
  badRequestStatus: number;
  /** What the client gets when the service answers 503 (PDP down). */
  unavailableStatus: number;
  /** Whether the service's JSON error body and X-Request-Id reach the client (else the gateway's own page). */
  relaysServiceBody: boolean;
}

/** Every character HTTP allows in a header name besides letters, digits and "-". */
export const ALIAS_CHARACTERS = [..."!#$%&'*+.^_`|~"];

const ALICE: HeaderLines = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
];
const ROOT: HeaderLines = [
  ["Remote-User", "root"],
  ["Remote-Groups", "admin"],
];

export function gatewayCases(gw: GatewayBehaviour): void {
  let stack: Stack;
  let gateway: Gateway;

  beforeAll(async () => {
    stack = await startStack();
    try {
      gateway = await gw.start({ authPort: stack.authPort, backendPort: stack.backend.port });
    } catch (error) {
      await stack.stop();
      throw error;
    }
  });
  afterAll(async () => {
    await gateway?.stop();
    await stack?.stop();
  });
  beforeEach(() => stack.backend.clear());

  const send = async (method: string, path: string, headers: HeaderLines = []): Promise<RawResponse> => {
    const res = await rawRequest(gateway.port, { method, path, headers, host: "app.example.com", timeoutMs: 15_000 });
    if (res.status === 0) throw new Error(`${gw.name} closed the connection without answering ${method} ${path}\n${gateway.output()}`);
    return res;
  };

  /** The refusal came from the service through the gateway: its body (when relayed) names the error. */
  const expectServiceError = (res: RawResponse, error: string) => {
    if (!gw.relaysServiceBody) return;
    expect(JSON.parse(res.body)).toEqual({ error, requestId: res.header("x-request-id") });
    expect(res.header("cache-control")).toBe("no-store");
  };

  describe(`${gw.name} in front of the service`, () => {
    it("an allowed request reaches the backend with the identity headers the service set", async () => {
      const res = await send("GET", "/api/items?limit=5&sort=name", [
        ["Remote-User", "alice"],
        ["Remote-Groups", "user, auditor"],
      ]);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ backend: "ok", url: "/api/items?limit=5&sort=name" });
      expect(stack.backend.requests).toHaveLength(1);
      const seen = stack.backend.requests[0]!;
      expect(seen.method).toBe("GET");
      expect(seen.url).toBe("/api/items?limit=5&sort=name");
      expect(seen.headers["x-auth-principal"]).toBe("alice");
      expect(seen.headers["x-auth-roles"]).toBe("user,auditor");
      // Exactly one value each: the gateway replaced, not appended.
      expect(seen.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === "x-auth-principal")).toHaveLength(1);
    });

    it("the service judges the original method: an admin may DELETE in the admin area, a user may not POST to the API", async () => {
      const del = await send("DELETE", "/admin/users/7", ROOT);
      expect(del.status).toBe(200);
      expect(stack.backend.requests.map((r) => [r.method, r.url, r.headers["x-auth-principal"], r.headers["x-auth-roles"]])).toEqual([
        ["DELETE", "/admin/users/7", "root", "admin"],
      ]);
      stack.backend.clear();
      const post = await send("POST", "/api/items", ALICE);
      expect(post.status).toBe(403);
      expect(stack.backend.requests).toEqual([]);
    });

    it("a denied request gets 403 from the gateway and the backend records nothing", async () => {
      const res = await send("GET", "/admin/users", ALICE);
      expect(res.status).toBe(403);
      expectServiceError(res, "forbidden");
      expect(stack.backend.requests).toEqual([]);
    });

    it("a request without identity gets 401 with the Bearer challenge and the backend records nothing", async () => {
      const res = await send("GET", "/api/items");
      expect(res.status).toBe(401);
      expect(res.header("www-authenticate")).toBe("Bearer");
      expectServiceError(res, "unauthenticated");
      expect(stack.backend.requests).toEqual([]);
    });

    it("a client-planted identity header never reaches the backend and the request is refused", async () => {
      const planted: HeaderLines[] = [
        [...ALICE, ["X-Auth-Principal", "root"]],
        [...ALICE, ["x-auth-roles", "admin"]],
        [...ALICE, ["X-AUTH-PRINCIPAL", "root"], ["X-Auth-Roles", "admin"]],
        [["X-Auth-Principal", "root"], ["X-Auth-Roles", "admin"]], // no identity at all: still refused
      ];
      for (const headers of planted) {
        for (const path of ["/api/items", "/admin/users"]) {
          const res = await send("GET", path, headers);
          expect(res.status, `${path} ${JSON.stringify(headers)}`).toBe(gw.badRequestStatus);
          expectServiceError(res, "bad_request");
        }
      }
      expect(stack.backend.requests).toEqual([]);
    });

    it("aliases of the identity headers (X_Auth_Principal, X.Auth.Principal, …) are dropped by the gateway: answered at once, never seen by the backend", async () => {
      const started = Date.now();
      const results = await Promise.all(
        ALIAS_CHARACTERS.map(async (c) => {
          const aliasHeaders: HeaderLines = [
            [`X${c}Auth${c}Principal`, "root"],
            [`X${c}Auth${c}Roles`, "admin"],
            [`Remote${c}User`, "root"],
          ];
          const api = await send("GET", `/api/items/alias-${ALIAS_CHARACTERS.indexOf(c)}`, [...ALICE, ...aliasHeaders]);
          const admin = await send("GET", `/admin/alias-${ALIAS_CHARACTERS.indexOf(c)}`, [...ALICE, ...aliasHeaders]);
          return { c, api: api.status, admin: admin.status };
        }),
      );
      // Without the gateway dropping them, each of these waits for a timeout (5 s or more).
      expect(Date.now() - started).toBeLessThan(4000);
      expect(results).toEqual(ALIAS_CHARACTERS.map((c) => ({ c, api: 200, admin: 403 })));
      expect(stack.backend.requests).toHaveLength(ALIAS_CHARACTERS.length);
      for (const seen of stack.backend.requests) {
        expect(seen.headers["x-auth-principal"]).toBe("alice");
        expect(seen.headers["x-auth-roles"]).toBe("user");
        const names = seen.rawHeaders.filter((_, i) => i % 2 === 0);
        expect(names.filter((n) => !/^[A-Za-z0-9-]+$/.test(n)), seen.url).toEqual([]);
      }
    });

    it("a query string cannot satisfy a path rule", async () => {
      for (const path of ["/admin/users?x=/api/items", "/admin/users?/api/items", "/admin/users?path=%2Fapi%2Fitems"]) {
        const res = await send("GET", path, ALICE);
        expect(res.status, path).toBe(403);
      }
      expect(stack.backend.requests).toEqual([]);
      const ok = await send("GET", "/api/items?next=/admin/users", ALICE);
      expect(ok.status).toBe(200);
      expect(stack.backend.requests.map((r) => r.url)).toEqual(["/api/items?next=/admin/users"]);
    });

    it("client-sent X-Forwarded-* headers cannot change what the service judges", async () => {
      const res = await send("GET", "/admin/users", [
        ...ALICE,
        ["X-Forwarded-Uri", "/api/items"],
        ["X-Forwarded-Method", "GET"],
        ["X-Forwarded-Host", "trusted.example.com"],
        ["X-Forwarded-Proto", "https"],
      ]);
      expect(res.status).toBe(403);
      expect(stack.backend.requests).toEqual([]);
    });

    it("paths the backend could resolve differently (dot segments, encoded slashes, //) are refused", async () => {
      for (const path of ["/api/../admin/users", "/api/%2e%2e/admin/users", "/api/%2E%2E/admin/users", "/admin%2Fusers", "/api//items"]) {
        const res = await send("GET", path, ROOT);
        expect(res.status, path).toBe(gw.badRequestStatus);
      }
      // An encoded NUL: refused by the service (Caddy relays its 400) or by nginx itself (400).
      expect((await send("GET", "/api/items%00", ROOT)).status).toBe(400);
      expect(stack.backend.requests).toEqual([]);
    });

    it("with the PDP stopped the gateway answers an error and the backend records nothing; checks succeed again once it is back", async () => {
      await stack.pdp.stop();
      try {
        for (const path of ["/api/outage-1", "/admin/outage-2"]) {
          const res = await send("GET", path, path.startsWith("/admin") ? ROOT : ALICE);
          expect(res.status, path).toBe(gw.unavailableStatus);
          if (gw.relaysServiceBody) {
            expectServiceError(res, "unavailable");
            expect(res.header("retry-after")).toBe("1");
          }
        }
        expect(stack.backend.requests).toEqual([]);
      } finally {
        await stack.pdp.start();
      }
      let attempt = 0;
      await waitFor(async () => (await send("GET", `/api/after-outage-${attempt++}`, ALICE)).status === 200, {
        timeoutMs: 10_000,
        intervalMs: 100,
        what: "an allowed request after the PDP came back",
      });
      expect(stack.backend.requests.length).toBeGreaterThanOrEqual(1);
    });
  });
}
