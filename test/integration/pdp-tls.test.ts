/**
 * A TLS target: the real Cerbos binary serving gRPC over TLS with a certificate made here; the
 * service verifies it against `pdp.tls.ca` with `serverName`, and refuses a server it cannot verify.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cerbosBinaryPath } from "../../src/pdp/cerbos-binary.js";
import { createPool } from "../../src/pdp/pool.js";
import { forwarded, rawRequest } from "../support/http.js";
import { startService, waitFor } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));
const ADMIN = forwarded("DELETE", "/admin/tls", undefined, [
  ["Remote-User", "root"],
  ["Remote-Groups", "admin"],
]);

describe("TLS to the PDP", () => {
  let dir: string;
  let child: ChildProcess;
  let target: string;
  const certFor = (name: string) => {
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", join(dir, `${name}.key`), "-out", join(dir, `${name}.pem`), "-days", "2",
      "-subj", `/CN=${name}`, "-addext", `subjectAltName=DNS:${name}`,
    ], { stdio: "ignore" });
    return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "cfa-tls-"));
    const { cert, key } = certFor("pdp.test");
    certFor("other.test");
    const config = join(dir, "cerbos.yaml");
    writeFileSync(
      config,
      [
        "server:",
        `  grpcListenAddr: "unix:${join(dir, "grpc.sock")}"`,
        `  httpListenAddr: "unix:${join(dir, "http.sock")}"`,
        "  tls:",
        `    cert: ${cert}`,
        `    key: ${key}`,
        "storage:",
        "  driver: disk",
        "  disk:",
        `    directory: ${policiesDir}`,
        "    watchForChanges: false",
        "audit:",
        "  enabled: false",
        "telemetry:",
        "  disabled: true",
        "",
      ].join("\n"),
    );
    child = spawn(cerbosBinaryPath(), ["server", `--config=${config}`], { stdio: "ignore", env: { ...process.env, CERBOS_NO_TELEMETRY: "1" } });
    target = `unix:${join(dir, "grpc.sock")}`;
    const probe = createPool({ target, tls: { ca: cert, serverName: "pdp.test" }, connections: 1, timeoutMs: 1000 });
    try {
      await waitFor(() => probe.healthy(), { timeoutMs: 20_000, what: "TLS PDP healthy" });
    } finally {
      probe.close();
    }
  });
  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("decides over a verified TLS connection", async () => {
    const svc = await startService(target, {
      identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } },
      pdp: { tls: { ca: join(dir, "pdp.test.pem"), serverName: "pdp.test" } },
    });
    try {
      expect((await rawRequest(svc.port, { headers: ADMIN })).status).toBe(200);
    } finally {
      await svc.stop();
    }
  });

  it("refuses a PDP whose certificate it cannot verify, and plain text to a TLS server (503, never 2xx)", async () => {
    for (const tls of [{ ca: join(dir, "other.test.pem"), serverName: "pdp.test" }, false] as const) {
      const svc = await startService(target, { identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups" } }, pdp: { tls } });
      try {
        const res = await rawRequest(svc.port, { headers: ADMIN });
        expect(res.status).toBe(503);
      } finally {
        await svc.stop();
      }
    }
  });
});
