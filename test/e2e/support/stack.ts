/**
 * What stands behind a gateway in the e2e tests: a real Cerbos PDP with the quickstart policies,
 * the built service (dist/src/cli.js, as deployed) with the quickstart configuration minus its
 * anonymous principal, and a recording backend. All on loopback: the PDP on unix sockets, the
 * service and the backend on ports chosen by the kernel.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { startPdp, type TestPdp } from "../../support/pdp.js";
import { runCli, type CliProcess } from "../../support/process.js";
import { waitFor } from "../../support/service.js";
import { startBackend, type RecordingBackend } from "./backend.js";

export const QUICKSTART_CONFIG = fileURLToPath(new URL("../../../examples/quickstart/config.yaml", import.meta.url));

export interface Stack {
  pdp: TestPdp;
  backend: RecordingBackend;
  service: CliProcess;
  authPort: number;
  adminPort: number;
  /** The service config as written (parsed YAML). */
  config: Record<string, unknown>;
  stop(): Promise<void>;
}

/**
 * The quickstart config (trusted headers Remote-User / Remote-Groups, response headers
 * X-Auth-Principal / X-Auth-Roles, the orders route, the generic mapping) with: no anonymous
 * principal (so a request without identity is a 401), the test PDP's address, kernel-chosen ports.
 */
export function e2eServiceConfig(pdpTarget: string): Record<string, unknown> {
  const quickstart = parse(readFileSync(QUICKSTART_CONFIG, "utf8")) as Record<string, unknown>;
  const identity = { ...(quickstart.identity as Record<string, unknown>) };
  delete identity.anonymous;
  return {
    ...quickstart,
    listen: "127.0.0.1:0",
    admin: { listen: "127.0.0.1:0" },
    pdp: { address: pdpTarget },
    identity,
    log: { level: "info", decisions: "all" },
  };
}

export async function startStack(): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), "cfa-e2e-"));
  const started: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of started.reverse()) await stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const pdp = await startPdp();
    started.push(() => pdp.stop());
    const backend = await startBackend();
    started.push(() => backend.stop());

    const config = e2eServiceConfig(pdp.grpcTarget);
    const configPath = join(dir, "config.yaml");
    writeFileSync(configPath, stringify(config));
    const service = runCli(["--config", configPath]);
    started.push(async () => {
      if (service.child.exitCode === null && service.child.signalCode === null) {
        process.kill(service.child.pid!, "SIGTERM");
        const killer = setTimeout(() => service.child.kill("SIGKILL"), 10_000);
        await service.exited;
        clearTimeout(killer);
      }
    });
    const ready = await waitFor(() => service.logs().find((l) => l.msg === "cerbos-forwardauth listening"), {
      timeoutMs: 30_000,
      what: `service start (stderr: ${service.stderr()})`,
    });
    return {
      pdp,
      backend,
      service,
      authPort: ready.port as number,
      adminPort: ready.admin as number,
      config,
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
