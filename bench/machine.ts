/**
 * What the harnesses (bench/run.ts, bench/soak.ts) record about the machine a run happened on:
 * CPU, cores, memory, kernel, Node and Cerbos versions, the git commit, and how busy the CPUs
 * were just before the start.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, loadavg, release, totalmem } from "node:os";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { cerbosBinaryPath } from "../src/pdp/cerbos-binary.js";

/** The repository root (this file runs from dist/bench/). */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface Machine {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGb: number;
  readonly kernel: string;
  readonly node: string;
  readonly cerbos: string;
  readonly gitCommit: string;
  readonly gitDirty: boolean | "unknown";
  readonly loadAverageAtStart: number[];
  /** Share of all CPU time not idle during the second before the run: other work on the machine. */
  readonly busyBeforeStartPercent: number | null;
}

/** Non-idle share of all CPUs over `ms`, from /proc/stat (null where there is none). */
export async function cpuBusyPercent(ms: number): Promise<number | null> {
  const sample = (): { idle: number; total: number } | null => {
    try {
      const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
      const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0); // idle + iowait
      return { idle, total: cpu.reduce((a, b) => a + b, 0) };
    } catch {
      return null;
    }
  };
  const a = sample();
  await delay(ms);
  const b = sample();
  if (!a || !b || b.total === a.total) return null;
  return Math.round((1 - (b.idle - a.idle) / (b.total - a.total)) * 1000) / 10;
}

export async function machine(): Promise<Machine> {
  let cpuModel = "unknown";
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? "unknown";
  } catch {
    // not Linux
  }
  const git = (args: string[]): string | undefined => {
    try {
      return execFileSync("git", args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      return undefined;
    }
  };
  let cerbos = "unknown";
  try {
    cerbos = execFileSync(cerbosBinaryPath(), ["--version"], { encoding: "utf8" }).split("\n")[0]!.trim();
  } catch {
    // reported as unknown
  }
  const status = git(["status", "--porcelain", "--untracked-files=no"]);
  const loadAverageAtStart = loadavg().map((n) => Math.round(n * 100) / 100);
  const busyBeforeStartPercent = await cpuBusyPercent(1000);
  return {
    cpuModel,
    cores: availableParallelism(),
    memoryGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    cerbos,
    gitCommit: git(["rev-parse", "HEAD"]) ?? "unknown",
    gitDirty: status === undefined ? "unknown" : status.length > 0,
    loadAverageAtStart,
    busyBeforeStartPercent,
  };
}
