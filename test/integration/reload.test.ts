/**
 * SIGHUP reloads the config file: a valid new route applies to the next request; a broken file
 * keeps the old config in force and counts a failure.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwarded, rawRequest } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { runCli, type CliProcess } from "../support/process.js";
import { waitFor } from "../support/service.js";
import { fileURLToPath } from "node:url";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));

const config = (pdpTarget: string, routes: string) => `
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
pdp: { address: "${pdpTarget}" }
identity:
  trustedHeaders: { id: Remote-User, roles: Remote-Groups }
cache: { maxEntries: 0 }
unmatched: deny
${routes}
`;
const API_ROUTE = `routes:
  - name: api
    path: /api/*
    resource: { kind: route, id: "{path}" }
    action: "{method}"
`;
const API_AND_DOCS = `${API_ROUTE}  - name: documents
    path: /documents/:id
    resource: { kind: document, id: "{params.id}" }
    actions: { GET: read }
`;

const ALICE = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
] as const;

describe("SIGHUP reload", () => {
  let pdp: TestPdp;
  let proc: CliProcess;
  let path: string;
  let port: number;
  let adminPort: number;

  beforeAll(async () => {
    pdp = await startPdp({ policiesDir });
    path = join(mkdtempSync(join(tmpdir(), "cfa-reload-")), "config.yaml");
    writeFileSync(path, config(pdp.grpcTarget, API_ROUTE));
    proc = runCli(["--config", path]);
    const ready = await waitFor(() => proc.logs().find((l) => l.msg === "cerbos-forwardauth listening"), { timeoutMs: 30_000, what: "start" });
    port = ready.port as number;
    adminPort = ready.admin as number;
  });
  afterAll(async () => {
    if (proc && proc.child.exitCode === null) {
      proc.child.kill("SIGKILL");
      await proc.exited;
    }
    await pdp?.stop();
  });

  const reloads = async (result: "success" | "failure") => {
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    const m = new RegExp(`^cerbos_forwardauth_config_reloads_total\\{result="${result}"\\} (\\d+)`, "m").exec(text);
    return Number(m?.[1]);
  };

  it("applies a valid new route to the next request", async () => {
    expect((await rawRequest(port, { headers: forwarded("GET", "/documents/1", undefined, ALICE) })).status).toBe(403);
    writeFileSync(path, config(pdp.grpcTarget, API_AND_DOCS));
    proc.child.kill("SIGHUP");
    await waitFor(async () => (await reloads("success")) === 1, { what: "reload success" });
    expect((await rawRequest(port, { headers: forwarded("GET", "/documents/1", undefined, ALICE) })).status).toBe(200);
  });

  it("keeps the old config in force when the new file is broken, and counts a failure", async () => {
    writeFileSync(path, config(pdp.grpcTarget, API_AND_DOCS).replace("routes:", "routes:\n  - name: broken\n    resource: { kind: x }\n    action: read"));
    proc.child.kill("SIGHUP");
    await waitFor(async () => (await reloads("failure")) === 1, { what: "reload failure counted" });
    await waitFor(() => proc.logs().some((l) => String(l.msg).startsWith("configuration reload failed") && String(l.problems).includes("routes[0].resource.id")), {
      what: "reload failure logged with the problem",
    });
    expect((await rawRequest(port, { headers: forwarded("GET", "/documents/1", undefined, ALICE) })).status).toBe(200);
    expect((await rawRequest(port, { headers: forwarded("GET", "/api/items", undefined, ALICE) })).status).toBe(200);
    expect((await rawRequest(port, { headers: forwarded("GET", "/other", undefined, ALICE) })).status).toBe(403);
  });
});
