/**
 * Child processes of the harness: started in their own process group (a terminal's Ctrl-C
 * reaches only the harness, which then stops them in order), with the kernel's parent-death
 * signal where `setpriv` exists (a harness killed by SIGKILL leaves nothing behind), tracked in
 * one registry so every exit path can stop them by PID. /proc readers for RSS and CPU time.
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { LoadResult, LoadWindow, WorkerJob, WorkerMessage } from "./load-worker.js";

const SETPRIV = "/usr/bin/setpriv";
const KILL_GRACE_MS = 3_000;
const TAIL_LINES = 30;

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Tracked {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitInfo>;
  /** The last lines it printed (stdout and stderr), for error messages. */
  tail(): string;
  /** Subscribes to its stdout lines; returns the unsubscribe function. */
  onStdoutLine(fn: (line: string) => void): () => void;
  /** SIGTERM, SIGKILL after 3 s, waits for the exit. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<Tracked>();
let exitHook = false;

/** Stops every tracked process (in parallel); used by the harness's finally and signal paths. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  // Last resort for process.exit() paths: nothing may outlive the harness.
  process.on("exit", () => {
    for (const p of live) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

function track(name: string, child: ChildProcess): Tracked {
  if (child.pid === undefined) throw new Error(`${name}: could not be started`);
  installExitHook();
  const lines: string[] = [];
  const subscribers = new Set<(line: string) => void>();
  const keep = (line: string) => {
    lines.push(line);
    if (lines.length > TAIL_LINES) lines.shift();
  };
  // One reader per stream, drained for the whole life of the process (a full pipe would block it).
  if (child.stdout) {
    createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (line) => {
      keep(line);
      for (const fn of subscribers) fn(line);
    });
  }
  if (child.stderr) createInterface({ input: child.stderr, crlfDelay: Infinity }).on("line", keep);
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.on("error", () => resolve({ code: null, signal: null }));
  });
  let stopping: Promise<void> | undefined;
  const tracked: Tracked = {
    name,
    child,
    pid: child.pid,
    exited,
    tail: () => lines.join("\n"),
    onStdoutLine(fn) {
      subscribers.add(fn);
      return () => subscribers.delete(fn);
    },
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          const killer = setTimeout(() => child.kill("SIGKILL"), KILL_GRACE_MS);
          await exited;
          clearTimeout(killer);
        }
        live.delete(tracked);
      })();
      return stopping;
    },
  };
  live.add(tracked);
  void exited.then(() => live.delete(tracked));
  return tracked;
}

/** Runs `node script ...args` as a tracked server process; stdout/stderr are piped and read. */
export function spawnNode(name: string, script: string, args: string[], nodeArgs: string[] = []): Tracked {
  const useSetpriv = existsSync(SETPRIV);
  const cmd = useSetpriv ? SETPRIV : process.execPath;
  const node = [...nodeArgs, script, ...args];
  const argv = useSetpriv ? ["--pdeathsig", "KILL", "--", process.execPath, ...node] : node;
  // setpriv execs node: the child PID is node's PID.
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], detached: true, env: process.env });
  return track(name, child);
}

/** Forks `script` with an IPC channel (the load worker); its stderr is piped and read. */
export function forkNode(name: string, script: string): Tracked {
  const useSetpriv = existsSync(SETPRIV);
  const child = fork(script, [], {
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true,
    ...(useSetpriv ? { execPath: SETPRIV, execArgv: ["--pdeathsig", "KILL", "--", process.execPath] } : {}),
  });
  return track(name, child);
}

/**
 * Resolves with the first JSON line on stdout that `match` accepts; rejects when the process
 * exits first or after `timeoutMs`, with the tail of its output.
 */
export function waitForLine(proc: Tracked, match: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      unsubscribe();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new Error(`${proc.name}: no listening line within ${timeoutMs} ms\n${proc.tail()}`))), timeoutMs);
    const unsubscribe = proc.onStdoutLine((line) => {
      if (!line.startsWith("{")) return;
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (match(parsed)) done(() => resolve(parsed));
    });
    void proc.exited.then((info) =>
      done(() => reject(new Error(`${proc.name} exited (code ${info.code}, signal ${info.signal}) before listening\n${proc.tail()}`))),
    );
  });
}

/**
 * Sends one job to the load worker and waits for its result (or its death, or a deadline).
 * `onWindow` receives the interim `window` reports of a job with `windowSec` (the soak).
 */
export function askWorker(worker: Tracked, job: WorkerJob, timeoutMs: number, onWindow?: (window: LoadWindow) => void): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = worker.child;
    const timer = setTimeout(() => finish(() => reject(new Error(`load worker: no result within ${Math.round(timeoutMs / 1000)} s`))), timeoutMs);
    const onMessage = (msg: WorkerMessage) => {
      if (msg.type === "window") {
        onWindow?.(msg.window);
        return;
      }
      finish(() => (msg.type === "result" ? resolve(msg.result) : reject(new Error(`load worker failed: ${msg.message}`))));
    };
    const onExit = () => finish(() => reject(new Error(`load worker exited\n${worker.tail()}`)));
    function finish(fn: () => void) {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
      fn();
    }
    child.on("message", onMessage);
    child.on("exit", onExit);
    child.send(job);
  });
}

/** Resident set size in MB from /proc/PID/status (VmRSS), or undefined when gone. */
export function rssMb(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** User + system CPU seconds of a process from /proc/PID/stat (clock ticks at 100 Hz), or undefined. */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // Fields after the command: state(0) ppid(1) … utime(11) stime(12).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}
