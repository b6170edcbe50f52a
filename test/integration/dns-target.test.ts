/**
 * `pdp.address: dns:///host:port`: the name is resolved by grpc-js and calls are spread
 * round-robin over its addresses. Here "localhost", served only on 127.0.0.1 (where it also
 * resolves to ::1, that address refuses): the pool must decide through the address that answers.
 */
import { lookup } from "node:dns/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService } from "../support/service.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));

describe("dns:/// targets", () => {
  let pdp: TestPdp;
  let proxy: TcpProxy;
  beforeAll(async () => {
    pdp = await startPdp({ policiesDir });
    proxy = await startTcpProxy(pdp.grpcTarget.slice("unix:".length));
  });
  afterAll(async () => {
    await proxy?.close();
    await pdp?.stop();
  });

  it("resolves the name and decides through the addresses that answer", async () => {
    const addresses = await lookup("localhost", { all: true });
    expect(addresses.some((a) => a.address === "127.0.0.1")).toBe(true);
    const svc = await startService(`dns:///localhost:${proxy.port}`, {
      identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } },
      cache: { maxEntries: 0 },
    });
    try {
      const who = [
        ["Remote-User", "alice"],
        ["Remote-Groups", "user"],
      ] as const;
      for (let i = 0; i < 5; i++) {
        expect((await rawRequest(svc.port, { headers: forwarded("GET", `/api/items/${i}`, undefined, who) })).status).toBe(200);
        expect((await rawRequest(svc.port, { headers: forwarded("GET", `/admin/${i}`, undefined, who) })).status).toBe(403);
      }
      expect(proxy.accepted()).toBeGreaterThan(0);
    } finally {
      await svc.stop();
    }
  });
});
