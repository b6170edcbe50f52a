/**
 * The embedded PDP (SPEC §4 `pdp.embedded`, §6, §10): the packaged Cerbos binary run as a child
 * process on unix sockets in a private temp dir, health-checked, restarted with backoff when it
 * dies, stopped on shutdown — and never left behind.
 *
 * No orphans, in three layers:
 * 1. `stop()`: SIGTERM, SIGKILL after 3 s, wait for the exit.
 * 2. A process 'exit' handler SIGKILLs every live child (covers process.exit() without stop()).
 * 3. On Linux the binary is started through `setpriv --pdeathsig KILL --` (util-linux), so the
 *    kernel kills it when its parent dies, even by SIGKILL or a crash. setpriv execs the binary,
 *    so the child PID is the Cerbos PID. The death signal fires when the *thread* that spawned
 *    the child ends: start the PDP from the main thread, not from a worker_thread.
 *
 * The child runs in its own process group (`detached`), so a terminal's Ctrl-C reaches only the
 * service, which then shuts down in order (in-flight checks finish before the PDP goes). Neither
 * the child nor its timers keep the event loop alive on their own.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { cerbosBinaryPath, cerbosHealthy, type CerbosConfigFiles, writeCerbosConfig } from "./cerbos-binary.js";

export type PdpLogLevel = "debug" | "info" | "warn" | "error";
/**
 * Log sink. Fields: `pdpPid` (the Cerbos PID: not `pid`, which pino uses for our own), and for
 * lines of the binary `stream` ("stdout" | "stderr") plus `cerbos` (the parsed JSON log record)
 * or `line` (raw text).
 */
export type PdpLog = (level: PdpLogLevel, msg: string, fields?: Record<string, unknown>) => void;

export interface EmbeddedPdpOptions {
  /** Policy directory (disk store). */
  policiesDir: string;
  /** Optional Cerbos config file merged over the defaults (see writeCerbosConfig). */
  extraConfigFile?: string;
  /** Receives our lifecycle messages and every line the binary prints (its JSON logs, at debug). */
  log?: PdpLog;
  /** Reload policies when files in policiesDir change. Default true (SPEC: "watched for changes"). */
  watch?: boolean;
  /** Restart the binary with backoff when it exits unexpectedly. Default true. */
  restart?: boolean;
  /** How long start() — and each restart attempt — waits for a healthy PDP, in ms. Default 20000. */
  startTimeoutMs?: number;
  /**
   * Directory for the config and sockets. Default: a fresh private temp dir (mode 0700), removed
   * by stop(). A directory given here belongs to the caller: stop() leaves it in place.
   */
  dir?: string;
  /** The cerbos executable. Default cerbosBinaryPath(). */
  binary?: string;
}

const SETPRIV = "/usr/bin/setpriv";
/** Restart delay: starts at 100 ms, doubles per consecutive failure up to 5 s. */
const BACKOFF_INITIAL_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/** A child that stayed healthy this long resets the backoff to its initial delay. */
const BACKOFF_RESET_AFTER_MS = 30_000;
/** stop(): grace period between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 3_000;
const HEALTH_POLL_MS = 25;
const STDERR_TAIL_LINES = 20;

type State = "idle" | "starting" | "running" | "stopping" | "stopped";
interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}
interface Running {
  child: ChildProcess;
  exited: Promise<ExitInfo>;
  /** Resolves once its stdout/stderr are drained too ('close' comes after 'exit'). */
  closed: Promise<void>;
}

/** Children alive in this process, SIGKILLed by one shared 'exit' handler. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of liveChildren) c.kill("SIGKILL");
    });
  }
  liveChildren.add(child);
}

const noLog: PdpLog = () => {};

export class EmbeddedPdp {
  readonly #opts: EmbeddedPdpOptions;
  readonly #log: PdpLog;
  readonly #restartEnabled: boolean;
  readonly #startTimeoutMs: number;
  #state: State = "idle";
  #dir: string | undefined;
  #ownsDir = false;
  #files: CerbosConfigFiles | undefined;
  #launchArgs: { cmd: string; args: string[] } | undefined;
  #current: Running | undefined;
  #launching = false;
  #restartTimer: NodeJS.Timeout | undefined;
  #backoffMs = BACKOFF_INITIAL_MS;
  #healthySince = 0;
  #stderrTail: string[] = [];
  #stopping: Promise<void> | undefined;

  constructor(opts: EmbeddedPdpOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? noLog;
    this.#restartEnabled = opts.restart ?? true;
    this.#startTimeoutMs = opts.startTimeoutMs ?? 20_000;
  }

  /** gRPC target of the PDP: `unix:/…/grpc.sock`. Available once start() was called. */
  get grpcTarget(): string {
    return `unix:${this.#requireFiles().grpcSocket}`;
  }

  /** Path of the HTTP unix socket (`GET /_cerbos/health`, `/_cerbos/metrics`). */
  get httpSocket(): string {
    return this.#requireFiles().httpSocket;
  }

  /** Directory holding the config and the sockets. */
  get dir(): string {
    if (this.#dir === undefined) throw new Error("EmbeddedPdp: not started");
    return this.#dir;
  }

  /** PID of the running Cerbos process, undefined between a crash and its restart. */
  get pid(): number | undefined {
    return this.#current?.child.pid;
  }

  /** True when GET /_cerbos/health answers 200 within timeoutMs (default 1000). */
  async healthy(timeoutMs = 1000): Promise<boolean> {
    return this.#files !== undefined && (await cerbosHealthy(this.#files.httpSocket, timeoutMs));
  }

  /**
   * Writes the config, starts the binary and resolves once `GET /_cerbos/health` answers 200.
   * Rejects — with the tail of the binary's stderr — if it exits first or is not healthy within
   * startTimeoutMs; nothing is left running or on disk then. May be called once.
   */
  async start(): Promise<void> {
    if (this.#state !== "idle") throw new Error(`EmbeddedPdp: start() called while ${this.#state}`);
    this.#state = "starting";
    try {
      const binary = this.#opts.binary ?? cerbosBinaryPath();
      if (this.#opts.dir !== undefined) {
        this.#dir = this.#opts.dir;
      } else {
        this.#dir = await mkdtemp(join(tmpdir(), "cerbos-pdp-")); // mode 0700
        this.#ownsDir = true;
      }
      if (this.#stopRequested()) throw new Error("EmbeddedPdp: stopped during start");
      this.#files = writeCerbosConfig(this.#dir, {
        policiesDir: this.#opts.policiesDir,
        watch: this.#opts.watch ?? true,
        ...(this.#opts.extraConfigFile !== undefined ? { extraConfigFile: this.#opts.extraConfigFile } : {}),
      });
      const serverArgs = ["server", `--config=${this.#files.configPath}`];
      if (existsSync(SETPRIV)) {
        this.#launchArgs = { cmd: SETPRIV, args: ["--pdeathsig", "KILL", "--", binary, ...serverArgs] };
      } else {
        this.#launchArgs = { cmd: binary, args: serverArgs };
        this.#log("warn", `${SETPRIV} not found: the Cerbos PDP may outlive this process if it is killed`, {});
      }
      await this.#launch();
    } catch (err) {
      // The child (if any) is gone by now: #launch waits for its exit before rejecting.
      if (!this.#stopRequested()) this.#state = "stopped";
      this.#removeOwnDir();
      throw err;
    }
    if (this.#stopRequested()) throw new Error("EmbeddedPdp: stopped during start");
    this.#state = "running";
    this.#log("info", "embedded Cerbos PDP ready", { pdpPid: this.pid, grpc: this.grpcTarget });
  }

  /**
   * Stops the PDP: SIGTERM, SIGKILL after 3 s, waits for the exit, removes the temp dir (when
   * it created it). No restart happens afterwards. Idempotent; safe before or during start().
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#doStop();
    return this.#stopping;
  }

  async #doStop(): Promise<void> {
    this.#state = "stopping";
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const running = this.#current;
    if (running) {
      running.child.kill("SIGTERM");
      // Ref'd on purpose: keeps the event loop alive until the child is gone.
      const killer = setTimeout(() => running.child.kill("SIGKILL"), KILL_GRACE_MS);
      await running.exited;
      clearTimeout(killer);
    }
    this.#removeOwnDir();
    this.#state = "stopped";
    this.#log("info", "embedded Cerbos PDP stopped", {});
  }

  /** A method, not an inline comparison: TypeScript would narrow #state across awaits. */
  #stopRequested(): boolean {
    return this.#state === "stopping" || this.#state === "stopped";
  }

  #removeOwnDir(): void {
    if (this.#ownsDir && this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
    this.#ownsDir = false;
  }

  #requireFiles(): CerbosConfigFiles {
    if (this.#files === undefined) throw new Error("EmbeddedPdp: not started");
    return this.#files;
  }

  /** Spawns the binary and waits until it is healthy; on failure kills it and rejects. */
  async #launch(): Promise<void> {
    const files = this.#requireFiles();
    const { cmd, args } = this.#launchArgs!;
    // Synchronous up to the spawn: stop() cannot slip in between and miss the child.
    for (const socket of [files.grpcSocket, files.httpSocket]) rmSync(socket, { force: true });
    this.#stderrTail = [];
    this.#launching = true;
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, CERBOS_NO_TELEMETRY: "1" },
      detached: true,
    });
    trackChild(child);
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once("exit", (code, signal) => resolve({ code, signal }));
      // `on`, not `once`: a later failed kill() also emits 'error', which must not go unhandled.
      child.on("error", (error) => resolve({ code: null, signal: null, error }));
    });
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    const running: Running = { child, exited, closed };
    this.#current = running;
    void exited.then((info) => this.#onExit(running, info));
    this.#pipeLines(child, "stdout");
    this.#pipeLines(child, "stderr");
    child.unref();

    try {
      await this.#waitHealthy(running);
      this.#healthySince = Date.now();
    } catch (err) {
      child.kill("SIGKILL");
      // The child is unref'd: ref it while we wait, or an otherwise idle process would end here
      // (exit code 0) before the failure reaches the caller.
      child.ref();
      await exited;
      throw err;
    } finally {
      this.#launching = false;
    }
  }

  async #waitHealthy(running: Running): Promise<void> {
    const deadline = Date.now() + this.#startTimeoutMs;
    let exit: ExitInfo | undefined;
    void running.exited.then((info) => (exit = info));
    for (;;) {
      if (this.#stopRequested()) throw new Error("EmbeddedPdp: stopped during start");
      if (exit) {
        // Its last stderr lines (the reason) may still be in the pipe.
        await Promise.race([running.closed, delay(1000)]);
        throw new Error(`Cerbos PDP ${describeExit(exit)} before becoming healthy${this.#stderrText()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Cerbos PDP not healthy within ${this.#startTimeoutMs} ms${this.#stderrText()}`);
      }
      if (await cerbosHealthy(this.#files!.httpSocket, Math.min(1000, left))) return;
      await Promise.race([delay(HEALTH_POLL_MS), running.exited]);
    }
  }

  #onExit(running: Running, info: ExitInfo): void {
    liveChildren.delete(running.child);
    if (this.#current === running) this.#current = undefined;
    // During a launch the launch itself reports the failure; after stop() an exit is expected.
    if (this.#launching || this.#state !== "running") return;
    const fields = { pdpPid: running.child.pid, code: info.code, signal: info.signal, stderr: this.#stderrTail.slice(-5) };
    if (!this.#restartEnabled) {
      this.#log("error", `Cerbos PDP ${describeExit(info)}; restart is disabled`, fields);
      return;
    }
    if (Date.now() - this.#healthySince >= BACKOFF_RESET_AFTER_MS) this.#backoffMs = BACKOFF_INITIAL_MS;
    this.#log("error", `Cerbos PDP ${describeExit(info)}; restarting in ${this.#backoffMs} ms`, fields);
    this.#scheduleRestart();
  }

  #scheduleRestart(): void {
    const wait = this.#backoffMs;
    this.#backoffMs = Math.min(this.#backoffMs * 2, BACKOFF_MAX_MS);
    this.#restartTimer = setTimeout(() => void this.#restart(), wait);
    this.#restartTimer.unref();
  }

  async #restart(): Promise<void> {
    this.#restartTimer = undefined;
    if (this.#state !== "running") return;
    try {
      await this.#launch();
      this.#log("info", "embedded Cerbos PDP restarted", { pdpPid: this.pid });
    } catch (err) {
      if (this.#state !== "running") return;
      this.#log("error", `Cerbos PDP restart failed; retrying in ${this.#backoffMs} ms`, { error: (err as Error).message });
      this.#scheduleRestart();
    }
  }

  #pipeLines(child: ChildProcess, stream: "stdout" | "stderr"): void {
    const input = child[stream];
    if (!input) return;
    (input as { unref?: () => void }).unref?.();
    const pid = child.pid;
    createInterface({ input, crlfDelay: Infinity }).on("line", (line) => {
      if (stream === "stderr") {
        this.#stderrTail.push(line);
        if (this.#stderrTail.length > STDERR_TAIL_LINES) this.#stderrTail.shift();
      }
      let parsed: Record<string, unknown> | undefined;
      if (line.startsWith("{")) {
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          parsed = undefined;
        }
      }
      const message = typeof parsed?.message === "string" ? parsed.message : line;
      // All at debug: Cerbos logs an error line per refused request, which would flood our logs.
      // Its own level stays visible in fields.cerbos["log.level"].
      this.#log("debug", `cerbos: ${message}`, { pdpPid: pid, stream, ...(parsed ? { cerbos: parsed } : { line }) });
    });
  }

  #stderrText(): string {
    return this.#stderrTail.length > 0 ? `; its stderr ends with:\n${this.#stderrTail.join("\n")}` : "";
  }
}

function describeExit(info: ExitInfo): string {
  if (info.error) return `could not be started (${info.error.message})`;
  return info.signal ? `was killed by ${info.signal}` : `exited with code ${info.code}`;
}
