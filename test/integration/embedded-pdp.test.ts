// The embedded PDP against the real Cerbos binary: decisions over its unix socket, restart after a
// crash, clean stop, policy reload, extra config, and no orphan when the parent Node process dies.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { GRPC } from "@cerbos/grpc";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { cerbosBinaryPath, writeCerbosConfig } from "../../src/pdp/cerbos-binary.js";
import { EmbeddedPdp, type PdpLog } from "../../src/pdp/embedded.js";
import { QUICKSTART_POLICIES, startPdp, type TestPdp } from "../support/pdp.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/", import.meta.url));

/** Polls cond until it holds; fails after timeoutMs. */
async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Gone, or a zombie (dead, waiting to be reaped by whoever inherited it). */
function processDead(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}

function parentPid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

function client(target: string): GRPC {
  // Short reconnect backoff: the restart test must not wait out grpc-js's default (up to 120 s).
  return new GRPC(target, {
    tls: false,
    channelOptions: { "grpc.initial_reconnect_backoff_ms": 50, "grpc.max_reconnect_backoff_ms": 250 },
  });
}

const route = (path: string) => ({
  kind: "route",
  id: path,
  attr: { method: "GET", host: "app.example.com", path, scheme: "https", ip: "203.0.113.7", query: {} },
});
const alice = { id: "alice", roles: ["user"] };
const bob = { id: "bob", roles: ["user"] };
const anonymous = { id: "anonymous", roles: ["anonymous"] };

async function apiGetAllowed(c: GRPC): Promise<boolean | undefined> {
  const r = await c.checkResource({ principal: alice, resource: route("/api/items/1"), actions: ["GET"] });
  return r.isAllowed("GET");
}

describe("EmbeddedPdp", () => {
  let pdp: EmbeddedPdp;
  let grpc: GRPC;
  const logs: { level: string; msg: string }[] = [];
  const log: PdpLog = (level, msg) => logs.push({ level, msg });

  beforeAll(async () => {
    pdp = new EmbeddedPdp({ policiesDir: QUICKSTART_POLICIES, log });
    const t0 = performance.now();
    await pdp.start();
    console.info(`embedded PDP healthy after ${Math.round(performance.now() - t0)} ms`);
    grpc = client(pdp.grpcTarget);
  });
  afterAll(async () => {
    grpc?.close();
    await pdp?.stop();
  });

  it("listens on unix sockets in a private temp dir", () => {
    expect(pdp.grpcTarget).toBe(`unix:${join(pdp.dir, "grpc.sock")}`);
    expect(pdp.httpSocket).toBe(join(pdp.dir, "http.sock"));
    expect(existsSync(pdp.httpSocket)).toBe(true);
  });

  it("answers ALLOW and DENY from the quickstart policies", async () => {
    const api = await grpc.checkResource({ principal: alice, resource: route("/api/items/1"), actions: ["GET", "POST"] });
    expect(api.isAllowed("GET")).toBe(true);
    expect(api.isAllowed("POST")).toBe(false);

    const anon = await grpc.checkResource({ principal: anonymous, resource: route("/api/items/1"), actions: ["GET"] });
    expect(anon.isAllowed("GET")).toBe(false);

    const order = { kind: "order", id: "1001", attr: { owner: "alice" } };
    const own = await grpc.checkResource({ principal: alice, resource: order, actions: ["read", "update"] });
    const other = await grpc.checkResource({ principal: bob, resource: order, actions: ["read", "update"] });
    expect([own.isAllowed("read"), own.isAllowed("update")]).toEqual([true, true]);
    expect([other.isAllowed("read"), other.isAllowed("update")]).toEqual([true, false]);
  });

  it("streams the binary's JSON logs to the log callback at debug level", () => {
    expect(logs.some((l) => l.level === "debug" && l.msg.startsWith("cerbos: Starting gRPC server"))).toBe(true);
  });

  it("restarts the binary after it is SIGKILLed, on the same sockets", async () => {
    const oldPid = pdp.pid!;
    expect(oldPid).toBeGreaterThan(0);
    process.kill(oldPid, "SIGKILL");
    await waitFor("the old PDP to die", () => processDead(oldPid));
    await waitFor("a new PDP process", async () => pdp.pid !== undefined && pdp.pid !== oldPid && (await pdp.healthy()));
    await waitFor("checks to work again", async () => (await apiGetAllowed(grpc).catch(() => undefined)) === true);
    expect(logs.some((l) => l.level === "error" && /killed by SIGKILL; restarting/.test(l.msg))).toBe(true);
  });

  it("stop() leaves no process and removes the temp dir; no restart afterwards", async () => {
    const other = new EmbeddedPdp({ policiesDir: QUICKSTART_POLICIES, watch: false });
    await other.start();
    const pid = other.pid!;
    const dir = other.dir;
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    await other.stop();
    expect(existsSync(`/proc/${pid}`)).toBe(false); // exited and reaped
    expect(existsSync(dir)).toBe(false);
    expect(other.pid).toBeUndefined();
    await other.stop(); // idempotent
    await expect(other.start()).rejects.toThrow(/start\(\) called while stopped/);
  });

  it("start() rejects with the binary's stderr when the policies are broken, leaving nothing behind", async () => {
    const tmp = await mkdtemp(join(tmpdir(), "embedded-test-"));
    try {
      await cp(QUICKSTART_POLICIES, tmp, { recursive: true });
      await writeFile(join(tmp, "order.yaml"), `${await readFile(join(tmp, "order.yaml"), "utf8")}\ngarbage: [\n`);
      const broken = new EmbeddedPdp({ policiesDir: tmp, watch: false });
      await expect(broken.start()).rejects.toThrow(/exited with code 1 before becoming healthy[\s\S]*failed to create store/);
      expect(broken.pid).toBeUndefined();
      expect(() => broken.dir).not.toThrow();
      expect(existsSync(broken.dir)).toBe(false);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe("EmbeddedPdp start-up failures", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "embedded-fail-"));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("cerbosBinaryPath() finds the packaged binary; CERBOS_BINARY overrides; a missing one is a clear error", () => {
    expect(cerbosBinaryPath({})).toMatch(/node_modules\/@cerbos\/cerbos-linux-x64\/cerbos-linux-x64$/);
    expect(cerbosBinaryPath({ CERBOS_BINARY: "/bin/true" })).toBe("/bin/true");
    expect(() => cerbosBinaryPath({ CERBOS_BINARY: join(tmp, "nope") })).toThrow(/missing or not executable/);
  });

  it("start() gives up at the deadline and kills a binary that never becomes healthy", async () => {
    const hang = join(tmp, "hang.sh");
    await writeFile(hang, "#!/bin/sh\necho 'pretending to start' >&2\nexec sleep 60\n");
    await chmod(hang, 0o755);
    const pdp = new EmbeddedPdp({ policiesDir: QUICKSTART_POLICIES, binary: hang, startTimeoutMs: 300 });
    let pid: number | undefined;
    const started = pdp.start();
    await waitFor("the fake binary to run", () => (pid = pdp.pid) !== undefined);
    await expect(started).rejects.toThrow(/not healthy within 300 ms[\s\S]*pretending to start/);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(existsSync(pdp.dir)).toBe(false);
  });
});

describe("EmbeddedPdp policy watching", () => {
  let tmp: string;
  let pdp: EmbeddedPdp | undefined;
  let grpc: GRPC | undefined;
  afterAll(async () => {
    grpc?.close();
    await pdp?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  it("applies a changed policy file without a restart (watchForChanges)", async () => {
    tmp = await mkdtemp(join(tmpdir(), "embedded-watch-"));
    await cp(QUICKSTART_POLICIES, tmp, { recursive: true });
    pdp = new EmbeddedPdp({ policiesDir: tmp }); // watch defaults to true
    await pdp.start();
    const pid = pdp.pid;
    grpc = client(pdp.grpcTarget);
    const anonApi = async () =>
      (await grpc!.checkResource({ principal: anonymous, resource: route("/api/x"), actions: ["GET"] })).isAllowed("GET");
    expect(await anonApi()).toBe(false);
    const policy = join(tmp, "route.yaml");
    await writeFile(policy, (await readFile(policy, "utf8")).replace('roles: ["user", "admin"]', 'roles: ["user", "admin", "anonymous"]'));
    await waitFor("the changed policy to apply", async () => (await anonApi()) === true, 20_000);
    expect(pdp.pid).toBe(pid);
  });
});

describe("extra Cerbos config", () => {
  let tmp: string;
  let pdp: EmbeddedPdp | undefined;
  let grpc: GRPC | undefined;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "embedded-extra-"));
  });
  afterAll(async () => {
    grpc?.close();
    await pdp?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  it("is deep-merged over the defaults, but the listen addresses stay ours", async () => {
    const extra = join(tmp, "extra.yaml");
    await writeFile(
      extra,
      "server:\n  grpcListenAddr: 127.0.0.1:3593\n  requestLimits:\n    maxResourcesPerRequest: 2\nstorage:\n  disk:\n    watchForChanges: true\n",
    );
    const files = writeCerbosConfig(tmp, { policiesDir: QUICKSTART_POLICIES, watch: false, extraConfigFile: extra });
    const written = parse(await readFile(files.configPath, "utf8"));
    expect(written).toEqual({
      server: {
        grpcListenAddr: `unix:${join(tmp, "grpc.sock")}`,
        httpListenAddr: `unix:${join(tmp, "http.sock")}`,
        requestLimits: { maxResourcesPerRequest: 2 },
      },
      storage: { driver: "disk", disk: { directory: QUICKSTART_POLICIES, watchForChanges: true } },
      audit: { enabled: false },
      telemetry: { disabled: true },
    });
    expect(files).toEqual({ configPath: join(tmp, "cerbos.yaml"), grpcSocket: join(tmp, "grpc.sock"), httpSocket: join(tmp, "http.sock") });
  });

  it("reaches the running binary (a request limit from the extra file is enforced)", async () => {
    const extra = join(tmp, "limits.yaml");
    await writeFile(extra, "server:\n  requestLimits:\n    maxResourcesPerRequest: 2\n");
    pdp = new EmbeddedPdp({ policiesDir: QUICKSTART_POLICIES, extraConfigFile: extra, watch: false });
    await pdp.start();
    grpc = client(pdp.grpcTarget);
    const resources = (n: number) => Array.from({ length: n }, (_, i) => ({ resource: route(`/api/${i}`), actions: ["GET"] }));
    await expect(grpc.checkResources({ principal: alice, resources: resources(2) })).resolves.toBeDefined();
    await expect(grpc.checkResources({ principal: alice, resources: resources(3) })).rejects.toMatchObject({ code: 3 }); // INVALID_ARGUMENT
  });

  it("rejects an extra file that is not a YAML mapping", async () => {
    const extra = join(tmp, "list.yaml");
    await writeFile(extra, "- a\n- b\n");
    expect(() => writeCerbosConfig(tmp, { policiesDir: QUICKSTART_POLICIES, watch: false, extraConfigFile: extra })).toThrow(/must be a YAML mapping/);
  });
});

// The parent-death case needs a separate Node process running EmbeddedPdp. Rather than build
// dist/ first, the child imports the TypeScript source through test/fixtures/ts-hooks.mjs (module
// hooks that transpile .ts with the project's own `typescript`), so it always runs the current
// source and needs no build step.
describe("no orphan PDP when the parent Node process is SIGKILLed", () => {
  let node: ChildProcess | undefined;
  let cerbos: { pid: number; dir: string } | undefined;

  afterEach(async () => {
    if (node?.pid !== undefined && node.exitCode === null && node.signalCode === null) node.kill("SIGKILL");
    if (cerbos && !processDead(cerbos.pid)) process.kill(cerbos.pid, "SIGKILL");
    if (cerbos) await rm(cerbos.dir, { recursive: true, force: true });
  });

  it("the kernel kills the PDP (setpriv --pdeathsig)", async () => {
    expect(existsSync("/usr/bin/setpriv"), "util-linux setpriv is needed for this guarantee").toBe(true);
    const hooks = pathToFileURL(join(FIXTURES, "ts-hooks.mjs")).href;
    const register = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(hooks)});`;
    const child = spawn(process.execPath, ["--import", register, join(FIXTURES, "embedded-pdp-child.mjs"), QUICKSTART_POLICIES], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    node = child;
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

    const firstLine = new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once("line", resolve));
    let timer: NodeJS.Timeout | undefined;
    const line = await Promise.race([
      firstLine,
      exited.then(() => Promise.reject(new Error(`child exited early: ${stderr}`))),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no PID within 20 s: ${stderr}`)), 20_000))),
    ]).finally(() => clearTimeout(timer));
    cerbos = JSON.parse(line) as { pid: number; dir: string };

    expect(processDead(cerbos.pid)).toBe(false);
    expect(parentPid(cerbos.pid)).toBe(child.pid); // setpriv exec'd the binary: a direct child

    child.kill("SIGKILL"); // no exit handlers, no stop(): only the kernel can clean up now
    await exited;
    await waitFor(`Cerbos PID ${cerbos.pid} to die with its parent`, () => processDead(cerbos!.pid), 5_000);
  });
});

describe("test harness (test/support/pdp.ts)", () => {
  let pdp: TestPdp | undefined;
  let grpc: GRPC | undefined;
  afterAll(async () => {
    grpc?.close();
    await pdp?.stop();
  });

  it("counts CheckResources calls over every status code, across stop() and start() on the same sockets", async () => {
    pdp = await startPdp();
    const { grpcTarget, httpSocket, dir } = pdp;
    grpc = client(grpcTarget);
    expect(await pdp.checkCalls()).toBe(0);
    for (let i = 0; i < 3; i++) expect(await apiGetAllowed(grpc)).toBe(true);
    // 51 resources: over the default request limit, answered INVALID_ARGUMENT (a second status line).
    const tooMany = Array.from({ length: 51 }, (_, i) => ({ resource: route(`/api/${i}`), actions: ["GET"] }));
    await expect(grpc.checkResources({ principal: alice, resources: tooMany })).rejects.toMatchObject({ code: 3 });
    expect(await pdp.settledCheckCalls()).toBe(4);
    expect(await pdp.checkCalls("AccessEvaluationBatch")).toBe(0);

    const pid = pdp.pid!;
    await pdp.stop("SIGKILL");
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(pdp.pid).toBeUndefined();
    expect(existsSync(dir)).toBe(false);
    await expect(apiGetAllowed(grpc)).rejects.toBeDefined(); // down: no auto-restart

    await pdp.start();
    expect([pdp.grpcTarget, pdp.httpSocket, pdp.dir]).toEqual([grpcTarget, httpSocket, dir]);
    expect(pdp.pid).not.toBe(pid);
    await waitFor("checks to work again", async () => (await apiGetAllowed(grpc!).catch(() => undefined)) === true);
    expect(await pdp.checkCalls()).toBeGreaterThanOrEqual(5);
  });
});
