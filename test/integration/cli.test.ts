/**
 * The CLI as operators run it: --check, embedded mode, and process lifetime on SIGTERM/SIGKILL.
 * Runs the built dist/src/cli.js (npm test builds first).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { forwarded, rawRequest } from "../support/http.js";
import { childrenOf, isAlive, runCli, type CliProcess } from "../support/process.js";
import { waitFor } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const running: CliProcess[] = [];

afterEach(async () => {
  for (const p of running.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGKILL");
      await p.exited;
    }
  }
});

function writeConfig(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "cfa-cli-"));
  const path = join(dir, "config.yaml");
  writeFileSync(path, text);
  return path;
}

const EMBEDDED = `
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
pdp:
  embedded:
    policies: ${policiesDir}
identity:
  trustedHeaders: { id: Remote-User, roles: Remote-Groups }
response:
  headers: { X-Auth-Principal: "{principal.id}" }
log: { decisions: none }
`;

async function startEmbedded(): Promise<{ proc: CliProcess; port: number; adminPort: number; pdpPid: number }> {
  const proc = runCli(["--config", writeConfig(EMBEDDED)]);
  running.push(proc);
  const ready = await waitFor(() => proc.logs().find((l) => l.msg === "cerbos-forwardauth listening"), {
    timeoutMs: 30_000,
    what: `service start (stderr: ${proc.stderr()})`,
  });
  const children = childrenOf(proc.child.pid!);
  expect(children).toHaveLength(1);
  return { proc, port: ready.port as number, adminPort: ready.admin as number, pdpPid: children[0]! };
}

const ALICE_API = forwarded("GET", "/api/items", undefined, [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
]);
const ALICE_ADMIN = forwarded("GET", "/admin/users", undefined, [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
]);

describe("--check", () => {
  it("prints every problem of a config with several mistakes and exits 1", async () => {
    const path = writeConfig(`
listen: 127.0.0.1:99999
pdp: { address: 127.0.0.1:3593, embedded: { policies: ./p } }
routes:
  - name: a
    resource: { kind: doc }
    action: read
  - name: a
    path: /x/:id
    resource: { kind: doc, id: "{params.nope}" }
    actions: { get: read }
metrics: { enabled: true }
`);
    const proc = runCli(["--config", path, "--check"]);
    const { code } = await proc.exited;
    expect(code).toBe(1);
    const err = proc.stderr();
    for (const expected of ["listen", "pdp", "routes[0].resource.id", "routes[1].name", "routes[1].resource.id", "routes[1].actions", "metrics"]) {
      expect(err, expected).toContain(expected);
    }
    expect(err.split("\n").filter((l) => l.trim()).length).toBeGreaterThanOrEqual(8);
  });

  it("accepts a valid config with exit 0, from CERBOS_FORWARDAUTH_CONFIG", async () => {
    const proc = runCli(["--check"], { CERBOS_FORWARDAUTH_CONFIG: writeConfig(EMBEDDED) });
    expect((await proc.exited).code).toBe(0);
    expect(proc.stdout()).toContain("valid");
  });

  it("validates the quickstart config", async () => {
    const quickstart = fileURLToPath(new URL("../../examples/quickstart/config.yaml", import.meta.url));
    const proc = runCli(["--config", quickstart, "--check"]);
    expect((await proc.exited).code, proc.stderr()).toBe(0);
  });
});

describe("embedded PDP", () => {
  it("starts, decides, and leaves no process behind after SIGTERM", async () => {
    const { proc, port, adminPort, pdpPid } = await startEmbedded();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200, { what: "readyz" });
    const allow = await rawRequest(port, { headers: ALICE_API });
    expect(allow.status).toBe(200);
    expect(allow.header("x-auth-principal")).toBe("alice");
    expect((await rawRequest(port, { headers: ALICE_ADMIN })).status).toBe(403);

    proc.child.kill("SIGTERM");
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    await waitFor(() => !isAlive(pdpPid), { what: "embedded PDP exit" });
  });

  it("leaves no process behind after SIGKILL of the service", async () => {
    const { proc, port, pdpPid } = await startEmbedded();
    expect((await rawRequest(port, { headers: ALICE_API })).status).toBe(200);
    proc.child.kill("SIGKILL");
    await proc.exited;
    await waitFor(() => !isAlive(pdpPid), { timeoutMs: 5000, what: "embedded PDP killed with its parent" });
  });

  it("answers every in-flight request on SIGTERM and exits 0", async () => {
    const { proc, port } = await startEmbedded();
    const inFlight = Array.from({ length: 50 }, (_, i) => rawRequest(port, { headers: i % 2 ? ALICE_API : ALICE_ADMIN }));
    proc.child.kill("SIGTERM");
    const answers = await Promise.allSettled(inFlight);
    // Requests that reached the listener before the signal get their real answer; later
    // connections are refused (the listener is closed) — never a wrong answer.
    for (const [i, a] of answers.entries()) {
      if (a.status === "fulfilled" && a.value.status !== 0 && a.value.status !== 503) expect(a.value.status).toBe(i % 2 ? 200 : 403);
    }
    expect(await proc.exited).toEqual({ code: 0, signal: null });
  });
});
