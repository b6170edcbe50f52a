/**
 * `npm run soak` — the soak run (issue 8).
 *
 *   npm run soak -- --minutes N [--rate R] [--out DIR] [--connections N]
 *
 * One real Cerbos PDP and the service (protocol auto, default cache), started like the benchmark
 * does (bench/run.ts: same policies, same generated config, same load worker in its own process).
 * Without `--rate`, a short `mixed` run first measures capacity (2 s warm-up + 10 s as fast as the
 * service answers, on a service process of its own); then a fresh service gets the `mixed` stream
 * at a fixed, paced offered rate of 70 % of that capacity (or `--rate`) for N minutes. Every answer
 * is checked against its expected status: a wrong answer (a 5xx included), a connection error or
 * a timeout is an error. The soak does not stop on errors; it counts them.
 *
 * Every 10 s the load worker reports its window (answers, p50/p99, errors) and the soak adds the
 * service's RSS (/proc/PID/status VmRSS), its V8 heap used, active handles and own RSS (its admin
 * /metrics), the PDP's calls in the window (the PDP's own metrics) and the PDP's RSS. Each sample
 * rewrites `<out>/soak-<timestamp>.json` and `.svg` (and `soak-latest.*`), so a killed run still
 * leaves its data. At the end: a summary (RSS and heap growth after warm-up, p99 drift, errors)
 * in the JSON and as Markdown on stdout.
 *
 * Exit codes: 0 the run completed without a single error, 1 errors or a failure (the files are
 * still written), 2 bad flags, 130 interrupted (SIGINT/SIGTERM; the files hold what was measured).
 */
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { EmbeddedPdp } from "../src/pdp/embedded.js";
import { escape } from "./chart.js";
import type { LoadResult, LoadWindow, WorkerJob, WrongAnswer } from "./load-worker.js";
import { type Machine, machine } from "./machine.js";
import { type PdpCounters, readPdpCounters, readServiceCounters, type ServiceCounters } from "./metrics.js";
import { askWorker, forkNode, rssMb, stopAll, type Tracked } from "./processes.js";
import { MEMORY_ENTRIES, MIXED, type Scenario, scenarios } from "./scenarios.js";
import { serviceConfig, type StartedService, startService } from "./servers/service.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const POLICIES = join(ROOT, "bench", "policies");
const WORKER = join(ROOT, "dist", "bench", "load-worker.js");
const DEFAULT_OUT = join(ROOT, "bench", "results");
/** The benchmark's seed: the same `mixed` stream as `npm run bench`. */
const SEED = 20_250_401;
const WINDOW_SEC = 10;
const CAPACITY_SEC = 10;
/** Offered load as a share of the measured capacity. */
const LOAD_SHARE = 0.7;
/** Warm-up: the first 10 minutes, or the first sixth of a shorter run. */
const WARMUP_MAX_SEC = 600;
const WARMUP_SHARE = 1 / 6;
/** Growth and drift compare the first and the last 10 % of the windows (at least one each). */
const COMPARE_SHARE = 0.1;
/** Issue 8's criteria (reported, not enforced). */
const MAX_MEMORY_GROWTH_PERCENT = 5;
const MAX_P99_DRIFT_PERCENT = 20;
const CRITERIA_MINUTES = 60;

const USAGE = `usage: npm run soak -- --minutes N [options]

  --minutes N       soak duration in minutes (required; may be fractional)
  --rate R          offered requests/s (default: ${LOAD_SHARE * 100} % of a ${CAPACITY_SEC} s capacity run)
  --out DIR         where the JSON and SVG go (default bench/results)
  --connections N   autocannon connections (default 50)
`;

interface Settings {
  readonly minutes: number;
  readonly rate?: number;
  readonly out: string;
  readonly connections: number;
}

function parseFlags(argv: string[]): Settings | string {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        minutes: { type: "string" },
        rate: { type: "string" },
        out: { type: "string" },
        connections: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    return (error as Error).message;
  }
  if (values.help) return "";
  const positive = (flag: string, raw: string | undefined, integer: boolean): number | string | undefined => {
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) return `--${flag} must be a positive ${integer ? "integer" : "number"}, got "${raw}"`;
    return n;
  };
  if (values.minutes === undefined) return "--minutes is required";
  const minutes = positive("minutes", values.minutes, false);
  const rate = positive("rate", values.rate, true);
  const connections = positive("connections", values.connections, true) ?? 50;
  for (const v of [minutes, rate, connections]) if (typeof v === "string") return v;
  if ((minutes as number) * 60 < 2 * WINDOW_SEC) return `--minutes must give at least two ${WINDOW_SEC} s windows (≥ ${(2 * WINDOW_SEC) / 60} min)`;
  return {
    minutes: minutes as number,
    ...(rate !== undefined ? { rate: rate as number } : {}),
    out: resolve(values.out ?? DEFAULT_OUT),
    connections: connections as number,
  };
}

// ---------------------------------------------------------------------------------------------
// Records

/** One 10 s window. Values the soak could not read are null. */
interface Sample {
  /** End of the window, s since the soak load started. */
  readonly t: number;
  readonly windowSec: number;
  /** Answers received (and checked) in the window, and per second. */
  readonly requests: number;
  readonly perSec: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly maxMs: number | null;
  /** wrongAnswers + connectionErrors + timeouts. */
  readonly errors: number;
  /** Answers with another status than expected, 5xx included. */
  readonly wrongAnswers: number;
  readonly status5xx: number;
  readonly connectionErrors: number;
  readonly timeouts: number;
  /** Paced sends that left more than 1 ms after their slot (the load generator fell behind). */
  readonly lateSends: number;
  /** Calls the PDP served in the window (its own metrics). */
  readonly pdpCalls: number | null;
  /** The service's PDP calls that did not end "OK" in the window. */
  readonly pdpFailedCalls: number | null;
  readonly cacheHitRatio: number | null;
  /** Service: /proc VmRSS; V8 heap used/total, active handles, process RSS from its /metrics. */
  readonly rssMb: number | null;
  readonly heapUsedMb: number | null;
  readonly heapTotalMb: number | null;
  readonly activeHandles: number | null;
  readonly processRssMb: number | null;
  readonly pdpRssMb: number | null;
  readonly wrongSamples?: readonly WrongAnswer[];
  readonly errorSamples?: readonly string[];
}

interface Change {
  /** Median of the first windows after warm-up. */
  readonly afterWarmup: number | null;
  /** Median of the last windows. */
  readonly end: number | null;
  readonly changePercent: number | null;
  /** Lowest value of the same two groups: for the V8 heap, the floor of its GC sawtooth (live data). */
  readonly afterWarmupFloor: number | null;
  readonly endFloor: number | null;
  readonly floorChangePercent: number | null;
  /** Over every window after warm-up. */
  readonly min: number | null;
  readonly max: number | null;
}

interface Criterion {
  readonly criterion: string;
  readonly measured: string;
  readonly met: boolean | null;
}

interface Summary {
  readonly complete: boolean;
  readonly plannedSec: number;
  readonly ranSec: number;
  readonly windows: number;
  readonly warmupSec: number;
  /** Windows after warm-up, and how many of them each end of the comparison takes. */
  readonly windowsAfterWarmup: number;
  readonly compareWindows: number;
  readonly rssMb: Change;
  readonly heapUsedMb: Change;
  readonly activeHandles: Change;
  readonly p99Ms: Change;
  readonly p50Ms: Change;
  /** Least-squares slope of the service RSS after warm-up. */
  readonly rssSlopeMbPerHour: number | null;
  readonly requests: number;
  readonly achievedPerSec: number | null;
  readonly lateSends: number;
  readonly errors: number;
  readonly wrongAnswers: number;
  readonly status5xx: number;
  readonly connectionErrors: number;
  readonly timeouts: number;
  readonly pdpCalls: number | null;
  readonly pdpFailedCalls: number | null;
  readonly cacheHitRatio: number | null;
  readonly criteria: Criterion[];
}

interface Capacity {
  readonly warmupSec: number;
  readonly durationSec: number;
  readonly perSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly wrongAnswers: number;
  readonly errors: number;
  readonly timeouts: number;
}

export interface Report {
  readonly kind: "soak";
  readonly startedAt: string;
  finishedAt: string | null;
  readonly command: string;
  readonly method: string;
  readonly machine: Machine & { loadAverageAtEnd?: number[] };
  readonly settings: {
    readonly minutes: number;
    readonly windowSec: number;
    readonly connections: number;
    readonly pipelining: 1;
    readonly workload: "mixed";
    readonly stream: typeof MIXED;
    readonly seed: number;
    readonly rate: number;
    readonly rateSource: "measured" | "--rate";
    readonly loadShare: number | null;
    readonly warmupSec: number;
  };
  readonly capacity: Capacity | null;
  readonly serviceConfig: Record<string, unknown>;
  /** The soak's service before the load: idle, connected to the PDP. */
  serviceAtStart: { rssMb: number | null; heapUsedMb: number | null; activeHandles: number | null } | null;
  readonly samples: Sample[];
  /** The load worker's own totals for the whole soak (absent when it did not finish). */
  totals: Pick<LoadResult, "responses" | "perSec" | "latencyMs" | "statusCounts" | "errors" | "timeouts" | "wrongAnswers" | "wrongSamples" | "errorSamples" | "offeredRate" | "lateSends"> | null;
  /** Why the run ended early, or a failure. */
  stopReason: string | null;
  summary: Summary | null;
}

// ---------------------------------------------------------------------------------------------
// Summary

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const percentChange = (from: number | null, to: number | null) => (from === null || to === null || from === 0 ? null : ((to - from) / from) * 100);

function warmupSec(plannedSec: number): number {
  return Math.min(WARMUP_MAX_SEC, plannedSec * WARMUP_SHARE);
}

export function summarize(samples: readonly Sample[], plannedSec: number, complete: boolean, totals: Report["totals"]): Summary {
  const warmup = warmupSec(plannedSec);
  // Full windows (a last window cut short by the end of the run counts for errors only).
  const full = samples.filter((s) => s.windowSec >= WINDOW_SEC / 2);
  const after = full.filter((s) => s.t - s.windowSec >= warmup - 0.5);
  const k = Math.max(1, Math.round(full.length * COMPARE_SHARE));
  const change = (get: (s: Sample) => number | null, keep: (s: Sample) => boolean = () => true): Change => {
    const values = (list: readonly Sample[]) => list.filter(keep).map(get).filter((v): v is number => v !== null);
    const all = values(after);
    const first = values(after.slice(0, k));
    const last = values(after.slice(-k));
    // With fewer than two windows after warm-up there is nothing to compare.
    const comparable = after.length >= 2;
    const a = comparable ? median(first) : null;
    const b = comparable ? median(last) : null;
    const fa = comparable && first.length ? Math.min(...first) : null;
    const fb = comparable && last.length ? Math.min(...last) : null;
    return {
      afterWarmup: a,
      end: b,
      changePercent: percentChange(a, b),
      afterWarmupFloor: fa,
      endFloor: fb,
      floorChangePercent: percentChange(fa, fb),
      min: all.length ? Math.min(...all) : null,
      max: all.length ? Math.max(...all) : null,
    };
  };
  const answered = (s: Sample) => s.requests > 0;
  const rss = after.filter((s) => s.rssMb !== null);
  let slope: number | null = null;
  // A slope over a few minutes would extrapolate warm-up noise: only from 5 minutes after warm-up.
  if (rss.length >= 3 && rss[rss.length - 1]!.t - rss[0]!.t >= 300) {
    const xs = rss.map((s) => s.t / 3600);
    const ys = rss.map((s) => s.rssMb!);
    const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
    const my = ys.reduce((a, b) => a + b, 0) / ys.length;
    const sxx = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
    slope = sxx > 0 ? xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / sxx : null;
  }
  const sum = (get: (s: Sample) => number) => samples.reduce((a, s) => a + get(s), 0);
  const sumOrNull = (get: (s: Sample) => number | null) => (samples.some((s) => get(s) === null) ? null : sum((s) => get(s)!));
  const ranSec = samples.length ? samples[samples.length - 1]!.t : 0;
  // The worker's totals when it finished (they include a last window too short to report).
  const status5xx = totals ? Object.entries(totals.statusCounts).reduce((n, [st, c]) => (Number(st) >= 500 ? n + c : n), 0) : sum((s) => s.status5xx);
  const wrongAnswers = totals ? totals.wrongAnswers : sum((s) => s.wrongAnswers);
  const timeouts = totals ? totals.timeouts : sum((s) => s.timeouts);
  // autocannon counts a timeout as an error too.
  const connectionErrors = totals ? totals.errors - totals.timeouts : sum((s) => s.connectionErrors);
  const requests = totals ? totals.responses : sum((s) => s.requests);
  const errors = wrongAnswers + connectionErrors + timeouts;
  const hits = samples.filter((s) => s.cacheHitRatio !== null);

  const summary: Omit<Summary, "criteria"> = {
    complete,
    plannedSec,
    ranSec,
    windows: samples.length,
    warmupSec: warmup,
    windowsAfterWarmup: after.length,
    compareWindows: k,
    rssMb: change((s) => s.rssMb),
    heapUsedMb: change((s) => s.heapUsedMb),
    activeHandles: change((s) => s.activeHandles),
    p99Ms: change((s) => s.p99Ms, answered),
    p50Ms: change((s) => s.p50Ms, answered),
    rssSlopeMbPerHour: slope,
    requests,
    achievedPerSec: totals ? totals.perSec : ranSec > 0 ? requests / ranSec : null,
    lateSends: totals?.lateSends ?? sum((s) => s.lateSends),
    errors,
    wrongAnswers,
    status5xx,
    connectionErrors,
    timeouts,
    pdpCalls: sumOrNull((s) => s.pdpCalls),
    pdpFailedCalls: sumOrNull((s) => s.pdpFailedCalls),
    cacheHitRatio: hits.length ? median(hits.map((s) => s.cacheHitRatio!)) : null,
  };
  return { ...summary, criteria: criteria(summary) };
}

function criteria(s: Omit<Summary, "criteria">): Criterion[] {
  const growth = (name: string, c: Change, limit: number): Criterion => ({
    criterion: `${name} after warm-up < ${limit} %`,
    measured: c.changePercent === null ? "not enough windows" : `${signed(c.changePercent)} % (${fmt1(c.afterWarmup)} → ${fmt1(c.end)})`,
    met: c.changePercent === null ? null : c.changePercent < limit,
  });
  return [
    { criterion: "ran for the planned duration", measured: `${minutesText(s.ranSec)} of ${minutesText(s.plannedSec)}`, met: s.complete },
    growth("RSS growth", s.rssMb, MAX_MEMORY_GROWTH_PERCENT),
    growth("V8 heap growth", s.heapUsedMb, MAX_MEMORY_GROWTH_PERCENT),
    growth("p99 drift", s.p99Ms, MAX_P99_DRIFT_PERCENT),
    {
      criterion: "no errors (wrong answers, 5xx, connection errors, timeouts)",
      measured: `${int(s.errors)} of ${int(s.requests)}`,
      met: s.errors === 0,
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Formatting

const int = (n: number | null | undefined) => (n === null || n === undefined ? "—" : Math.round(n).toLocaleString("en-US"));
const fmt1 = (n: number | null | undefined) => (n === null || n === undefined ? "—" : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const signed = (n: number) => `${n >= 0 ? "+" : "−"}${Math.abs(n).toFixed(1)}`;
const pctCell = (n: number | null) => (n === null ? "—" : `${signed(n)} %`);
const clock = (sec: number) => `${Math.floor(sec / 60)}:${String(Math.round(sec % 60)).padStart(2, "0")}`;
const minutesText = (sec: number) => (sec % 60 === 0 ? `${sec / 60} min` : sec >= 60 ? `${(sec / 60).toFixed(1)} min` : `${Math.round(sec)} s`);

function markdown(report: Report, files: string[]): string {
  const s = report.summary!;
  const m = report.machine;
  const set = report.settings;
  const cap = report.capacity;
  const lines: string[] = [];
  const offered = cap
    ? `${int(set.rate)} req/s offered (${LOAD_SHARE * 100} % of ${int(cap.perSec)} req/s measured in ${cap.durationSec} s)`
    : `${int(set.rate)} req/s offered (--rate)`;
  lines.push(
    `Soak: ${minutesText(s.ranSec)}${s.complete ? "" : ` of ${minutesText(s.plannedSec)} planned (${report.stopReason ?? "stopped early"})`} of \`mixed\` at ${offered}, ` +
      `${set.connections} connections, pipelining 1, windows of ${set.windowSec} s — ${m.cpuModel}, ${m.cores} cores, Node ${m.node}, Cerbos ${m.cerbos}, ` +
      `commit ${m.gitCommit.slice(0, 12)}${m.gitDirty === true ? " (+ uncommitted changes)" : ""}.`,
  );
  lines.push("");
  lines.push(`| | after warm-up | end | change | min … max after warm-up |`);
  lines.push(`|:--|--:|--:|--:|--:|`);
  const row = (name: string, c: Change, f: (n: number | null) => string = fmt1, absolute = false) => {
    const delta = c.afterWarmup === null || c.end === null ? "—" : absolute ? `${c.end - c.afterWarmup >= 0 ? "+" : "−"}${f(Math.abs(c.end - c.afterWarmup))}` : pctCell(c.changePercent);
    lines.push(`| ${name} | ${f(c.afterWarmup)} | ${f(c.end)} | ${delta} | ${f(c.min)} … ${f(c.max)} |`);
  };
  row("service RSS (MB)", s.rssMb);
  row("V8 heap used (MB)", s.heapUsedMb);
  row("active handles", s.activeHandles, int, true);
  row("p99 (ms)", s.p99Ms);
  row("p50 (ms)", s.p50Ms);
  lines.push("");
  lines.push(
    `Warm-up: the first ${minutesText(s.warmupSec)} (10 min, or 1/6 of a shorter run). "after warm-up" is the median of the first ` +
      `${s.compareWindows} window${s.compareWindows > 1 ? "s" : ""} after it, "end" the median of the last ${s.compareWindows} ` +
      `(10 % of the windows); ${s.windowsAfterWarmup} window${s.windowsAfterWarmup === 1 ? "" : "s"} after warm-up. RSS slope after warm-up: ` +
      `${s.rssSlopeMbPerHour === null ? "— (needs 5 min after warm-up)" : `${signed(s.rssSlopeMbPerHour)} MB/h`}. ` +
      `V8 heap floor (lowest sample of each group, the live data under the GC sawtooth): ` +
      `${fmt1(s.heapUsedMb.afterWarmupFloor)} → ${fmt1(s.heapUsedMb.endFloor)} MB (${pctCell(s.heapUsedMb.floorChangePercent)}).`,
  );
  lines.push(
    `Answers: ${int(s.requests)} (${int(s.achievedPerSec)} req/s, ${int(s.lateSends)} late sends); ` +
      `PDP calls ${int(s.pdpCalls)}${s.pdpFailedCalls ? ` (${int(s.pdpFailedCalls)} failed)` : ""}; cache hits ${s.cacheHitRatio === null ? "—" : `${(s.cacheHitRatio * 100).toFixed(1)} %`} (median of windows).`,
  );
  lines.push(
    `Errors: ${int(s.errors)} (wrong answers ${int(s.wrongAnswers)}, of which 5xx ${int(s.status5xx)}; connection errors ${int(s.connectionErrors)}; timeouts ${int(s.timeouts)}).`,
  );
  const firstErrors = report.samples.filter((x) => x.errors > 0).slice(0, 3);
  for (const x of firstErrors) {
    const examples = [...(x.wrongSamples ?? []).map((w) => `${w.principal} GET ${w.path}: expected ${w.expected}, got ${w.got}`), ...(x.errorSamples ?? [])];
    lines.push(`- at ${clock(x.t)}: ${x.errors} errors${examples.length ? `, e.g. ${examples.slice(0, 2).join("; ")}` : ""}`);
  }
  lines.push("");
  lines.push(
    `Issue 8 criteria (reported, not enforced${s.plannedSec < CRITERIA_MINUTES * 60 ? `; they are meant for a ${CRITERIA_MINUTES}-minute run, this one is indicative only` : ""}):`,
  );
  for (const c of s.criteria) lines.push(`- ${c.met === null ? "n/a    " : c.met ? "met    " : "NOT met"}  ${c.criterion}: ${c.measured}`);
  lines.push("");
  lines.push(`Files: ${files.join(", ")}`);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Chart: two panels (service RSS and V8 heap used in MB; p99 and p50 in ms) over minutes.

const CHART = { width: 960, left: 64, right: 24, top: 76, panelH: 200, gap: 62, bottom: 62 } as const;
const COLORS = { rss: "#3b6fb6", heap: "#5aa469", p99: "#d9822b", p50: "#8a8f98", error: "#c62828", warmup: "#f1f1f1" } as const;

function niceStep(range: number, ticks: number): number {
  const raw = range / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
}

export function renderSoakChart(report: Report): string {
  const { width, left, right, top, panelH, gap, bottom } = CHART;
  const height = top + 2 * panelH + gap + bottom;
  const plotW = width - left - right;
  const samples = report.samples;
  const plannedSec = report.settings.minutes * 60;
  const xMax = Math.max(plannedSec, ...samples.map((s) => s.t), 1);
  const x = (t: number) => left + (t / xMax) * plotW;
  const warmup = report.summary?.warmupSec ?? warmupSec(plannedSec);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  const m = report.machine;
  const s = report.summary;
  const title = `cerbos-forwardauth soak — ${report.startedAt.slice(0, 16).replace("T", " ")} UTC, ${minutesText(plannedSec)} of mixed at ${int(report.settings.rate)} req/s`;
  const subtitle =
    `${m.cpuModel}, ${m.cores} cores · Node ${m.node} · Cerbos ${m.cerbos} · ${report.settings.connections} connections · commit ${m.gitCommit.slice(0, 12)}` +
    (report.capacity ? ` · ${LOAD_SHARE * 100} % of ${int(report.capacity.perSec)} req/s measured` : "");
  out.push(`<text x="10" y="20" font-size="15" font-weight="600" fill="#222">${escape(title)}</text>`);
  out.push(`<text x="10" y="38" fill="#555">${escape(subtitle)}</text>`);

  // x ticks: minutes, or m:ss for short runs.
  const stepSec = [10, 30, 60, 120, 300, 600, 900, 1800, 3600].find((st) => xMax / st <= 12) ?? 7200;
  const xTicks: number[] = [];
  for (let t = 0; t <= xMax + 1e-9; t += stepSec) xTicks.push(t);
  const xLabel = (t: number) => (stepSec >= 60 ? String(t / 60) : clock(t));

  const panel = (
    index: number,
    heading: string,
    series: { name: string; color: string; get: (s: Sample) => number | null; dash?: string; marker?: boolean }[],
    unit: string,
    errorsMarks: boolean,
  ) => {
    const y0 = top + index * (panelH + gap);
    const values = samples.flatMap((smp) => series.map((se) => se.get(smp))).filter((v): v is number => v !== null && Number.isFinite(v));
    const vMax = Math.max(...values, 0);
    const step = niceStep(vMax > 0 ? vMax * 1.1 : 1, 5);
    const yMax = Math.max(step, Math.ceil((vMax * 1.05) / step) * step);
    const y = (v: number) => y0 + panelH - (v / yMax) * panelH;
    const decimals = step >= 1 ? 0 : Math.ceil(-Math.log10(step) - 1e-9);
    out.push(`<text x="${left}" y="${y0 - 10}" font-weight="600" fill="#222">${escape(heading)}</text>`);
    let lx = left + 8 + heading.length * 6.6 + 16;
    for (const se of series) {
      out.push(
        se.marker
          ? `<circle cx="${(lx + 9).toFixed(1)}" cy="${y0 - 14}" r="4" fill="${se.color}"/>`
          : `<line x1="${lx.toFixed(1)}" y1="${y0 - 14}" x2="${(lx + 18).toFixed(1)}" y2="${y0 - 14}" stroke="${se.color}" stroke-width="2"${se.dash ? ` stroke-dasharray="${se.dash}"` : ""}/>`,
      );
      out.push(`<text x="${(lx + 22).toFixed(1)}" y="${y0 - 10}" fill="#444">${escape(se.name)}</text>`);
      lx += 22 + se.name.length * 6.4 + 18;
    }
    // Warm-up band, grid, axes.
    out.push(`<rect x="${left}" y="${y0}" width="${(x(Math.min(warmup, xMax)) - left).toFixed(1)}" height="${panelH}" fill="${COLORS.warmup}"/>`);
    if (index === 0) out.push(`<text x="${left + 4}" y="${y0 + 14}" fill="#999" font-size="11">warm-up</text>`);
    for (let v = 0; v <= yMax + 1e-9; v += step) {
      const yy = y(v).toFixed(1);
      out.push(`<line x1="${left}" y1="${yy}" x2="${width - right}" y2="${yy}" stroke="#e3e3e3"/>`);
      out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${v.toFixed(decimals)}</text>`);
    }
    for (const t of xTicks) {
      const xx = x(t).toFixed(1);
      out.push(`<line x1="${xx}" y1="${y0 + panelH}" x2="${xx}" y2="${y0 + panelH + 4}" stroke="#999"/>`);
      out.push(`<text x="${xx}" y="${y0 + panelH + 16}" text-anchor="middle" fill="#555">${escape(xLabel(t))}</text>`);
    }
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panelH}" fill="none" stroke="#999"/>`);
    out.push(`<text x="14" y="${y0 + panelH / 2}" fill="#555" transform="rotate(-90 14 ${y0 + panelH / 2})" text-anchor="middle">${escape(unit)}</text>`);
    // Lines, broken where a value is missing.
    for (const se of series) {
      let segment: string[] = [];
      const flush = () => {
        if (segment.length === 1) out.push(`<circle cx="${segment[0]!.split(",")[0]}" cy="${segment[0]!.split(",")[1]}" r="2" fill="${se.color}"/>`);
        if (segment.length > 1) {
          out.push(`<polyline fill="none" stroke="${se.color}" stroke-width="1.8"${se.dash ? ` stroke-dasharray="${se.dash}"` : ""} points="${segment.join(" ")}"/>`);
        }
        segment = [];
      };
      for (const smp of samples) {
        const v = se.get(smp);
        if (v === null || !Number.isFinite(v)) flush();
        else segment.push(`${x(smp.t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      flush();
    }
    if (errorsMarks) {
      for (const smp of samples.filter((e) => e.errors > 0)) {
        const cx = x(smp.t).toFixed(1);
        out.push(
          `<circle cx="${cx}" cy="${y0 + 6}" r="4" fill="${COLORS.error}"><title>${escape(`${clock(smp.t)}: ${smp.errors} errors (${smp.wrongAnswers} wrong answers, ${smp.status5xx} 5xx, ${smp.connectionErrors} connection errors, ${smp.timeouts} timeouts)`)}</title></circle>`,
        );
      }
    }
  };
  panel(
    0,
    "service memory (MB)",
    [
      { name: "RSS (VmRSS)", color: COLORS.rss, get: (smp) => smp.rssMb },
      { name: "V8 heap used", color: COLORS.heap, get: (smp) => smp.heapUsedMb, dash: "5 3" },
    ],
    "MB",
    false,
  );
  panel(
    1,
    `latency per ${report.settings.windowSec} s window (ms)`,
    [
      { name: "p99", color: COLORS.p99, get: (smp) => (smp.requests > 0 ? smp.p99Ms : null) },
      { name: "p50", color: COLORS.p50, get: (smp) => (smp.requests > 0 ? smp.p50Ms : null) },
      ...(samples.some((smp) => smp.errors > 0) ? [{ name: "window with errors", color: COLORS.error, get: () => null, marker: true }] : []),
    ],
    "ms",
    true,
  );
  const foot = top + 2 * panelH + gap + 36;
  out.push(`<text x="${left + plotW / 2}" y="${foot}" text-anchor="middle" fill="#555">${stepSec >= 60 ? "minutes" : "m:ss"} since the soak load started</text>`);
  const footText = s
    ? `RSS ${pctCell(s.rssMb.changePercent)}, V8 heap ${pctCell(s.heapUsedMb.changePercent)} after warm-up · p99 drift ${pctCell(s.p99Ms.changePercent)} · ` +
      `${int(s.requests)} answers, ${int(s.errors)} errors${s.complete ? "" : ` · stopped early: ${report.stopReason ?? "?"}`}`
    : `running: ${samples.length} windows so far${report.stopReason ? ` · ${report.stopReason}` : ""}`;
  out.push(`<text x="10" y="${foot + 20}" fill="#777" font-size="11">${escape(footText)}</text>`);
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------
// Files

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

class Output {
  readonly json: string;
  readonly svg: string;
  readonly latestJson: string;
  readonly latestSvg: string;

  constructor(dir: string, stamp: string) {
    mkdirSync(dir, { recursive: true });
    this.json = join(dir, `soak-${stamp}.json`);
    this.svg = join(dir, `soak-${stamp}.svg`);
    this.latestJson = join(dir, "soak-latest.json");
    this.latestSvg = join(dir, "soak-latest.svg");
  }

  write(report: Report): void {
    writeAtomic(this.json, `${JSON.stringify(report, null, 2)}\n`);
    writeAtomic(this.svg, renderSoakChart(report));
    copyFileSync(this.json, this.latestJson);
    copyFileSync(this.svg, this.latestSvg);
  }

  files(): string[] {
    return [this.json, this.svg, this.latestJson, this.latestSvg].map((f) => {
      const rel = relative(process.cwd(), f);
      return rel.startsWith("..") ? f : rel;
    });
  }
}

// ---------------------------------------------------------------------------------------------

const log = (msg: string) => process.stderr.write(`soak: ${msg}\n`);

function problems(r: LoadResult): string {
  return `${r.wrongAnswers} wrong answers, ${r.errors} errors (${r.timeouts} timeouts)`;
}

/** The `mixed` row of the benchmark: its server spec (protocol auto, default cache), stream and warm-up. */
function mixedScenario(): Scenario {
  const s = scenarios({ rate: 1, memoryEntries: MEMORY_ENTRIES }).find((x) => x.name === "mixed/auto");
  if (!s || s.server.kind !== "service" || s.load.kind !== "http") throw new Error("bench/scenarios.ts has no mixed/auto service row");
  return s;
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv);
  if (typeof parsed === "string") {
    process.stderr.write(parsed ? `${parsed}\n${USAGE}` : USAGE);
    return parsed ? 2 : 0;
  }
  const settings = parsed;
  const plannedSec = Math.round(settings.minutes * 60);
  const mixed = mixedScenario();
  if (mixed.server.kind !== "service" || mixed.load.kind !== "http") throw new Error("unreachable");
  const host = await machine();
  const started = new Date();
  const stamp = started.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
  log(
    `${minutesText(plannedSec)} of mixed at ${settings.rate !== undefined ? `${settings.rate} req/s` : `${LOAD_SHARE * 100} % of measured capacity`}, ` +
      `${settings.connections} connections; ${host.cpuModel}, ${host.cores} cores, Node ${host.node}, Cerbos ${host.cerbos}, ` +
      `load average ${host.loadAverageAtStart.join(" ")}, CPU busy before start ${host.busyBeforeStartPercent ?? "?"} %`,
  );
  if ((host.busyBeforeStartPercent ?? 0) > 10) {
    log(`warning: the machine is not quiet (${host.busyBeforeStartPercent} % CPU busy before the start): capacity and latency will be low and noisy`);
  }

  const tmp = await mkdtemp(join(tmpdir(), "cerbos-fa-soak-"));
  const pdp = new EmbeddedPdp({
    policiesDir: POLICIES,
    restart: false,
    watch: false,
    log: (level, msg) => {
      if (level === "warn" || level === "error") log(`PDP ${level}: ${msg}`);
    },
  });
  let worker: Tracked | undefined;
  let service: StartedService | undefined;
  let report: Report | undefined;
  let output: Output | undefined;
  let stopReason: string | null = null;
  let interrupted = false;
  let soakDone = false;

  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) {
      // A second signal: leave at once (the exit hooks SIGKILL every child).
      process.exit(130);
    }
    interrupted = true;
    stopReason = `interrupted by ${signal}`;
    log(`${signal}: stopping the load, then every process started by the soak (again to leave at once)`);
    void worker?.stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let failed = false;
  try {
    await pdp.start();
    worker = forkNode("load worker", WORKER);
    const base = { connections: settings.connections, seed: SEED, grpcTarget: pdp.grpcTarget } as const;

    // 1. Capacity: the bench's mixed row, on a service process of its own.
    let capacity: Capacity | null = null;
    let rate = settings.rate;
    if (rate === undefined) {
      log(`capacity: mixed as fast as the service answers, ${mixed.warmupSec} s warm-up + ${CAPACITY_SEC} s …`);
      const probe = await startService(serviceConfig(mixed.server, pdp.grpcTarget), join(tmp, "capacity.yaml"));
      const job = { ...base, load: mixed.load, port: probe.port };
      const warm = await askWorker(worker, { ...job, phase: "warmup", durationSec: mixed.warmupSec }, (mixed.warmupSec + 60) * 1000);
      const measured = await askWorker(worker, { ...job, phase: "measure", durationSec: CAPACITY_SEC }, (CAPACITY_SEC + 60) * 1000);
      await probe.proc.stop();
      if (interrupted) throw new Error(stopReason ?? "interrupted");
      capacity = {
        warmupSec: mixed.warmupSec,
        durationSec: CAPACITY_SEC,
        perSec: measured.perSec,
        p50Ms: measured.latencyMs.p50,
        p99Ms: measured.latencyMs.p99,
        wrongAnswers: warm.wrongAnswers + measured.wrongAnswers,
        errors: warm.errors + measured.errors,
        timeouts: warm.timeouts + measured.timeouts,
      };
      if (capacity.wrongAnswers + capacity.errors > 0) log(`warning: the capacity run had problems: ${problems(measured)} (warm-up: ${problems(warm)})`);
      if (measured.perSec <= 0) throw new Error(`capacity run: no right answers (${problems(measured)})`);
      rate = Math.max(1, Math.round(measured.perSec * LOAD_SHARE));
      log(`capacity: ${int(measured.perSec)} req/s (p99 ${fmt1(measured.latencyMs.p99)} ms) → soak at ${int(rate)} req/s`);
    }

    // 2. The soak: a fresh service, the mixed stream paced at `rate`.
    const config = serviceConfig(mixed.server, pdp.grpcTarget);
    const svc = await startService(config, join(tmp, "soak.yaml"));
    service = svc;
    output = new Output(settings.out, stamp);
    const r: Report = {
      kind: "soak",
      startedAt: started.toISOString(),
      finishedAt: null,
      command: `npm run soak -- ${argv.join(" ")}`.trim(),
      method:
        "One real Cerbos PDP (unix sockets, bench/policies) and the service (generated config: protocol auto, default cache); " +
        "the load worker (autocannon, pipelining 1, its own process) sends the bench's mixed stream paced at a fixed offered rate; " +
        "every answer checked against its expected status; a sample every window from the worker, /proc and the service's and the PDP's metrics.",
      machine: host,
      settings: {
        minutes: settings.minutes,
        windowSec: WINDOW_SEC,
        connections: settings.connections,
        pipelining: 1,
        workload: "mixed",
        stream: MIXED,
        seed: SEED,
        rate,
        rateSource: capacity ? "measured" : "--rate",
        loadShare: capacity ? LOAD_SHARE : null,
        warmupSec: warmupSec(plannedSec),
      },
      capacity,
      serviceConfig: serviceConfig(mixed.server, "unix:PDP_SOCKET"),
      serviceAtStart: null,
      samples: [],
      totals: null,
      stopReason: null,
      summary: null,
    };
    report = r;
    output.write(r);
    log(`writing ${output.files()[0]} every ${WINDOW_SEC} s`);

    void svc.proc.exited.then((info) => {
      if (soakDone) return;
      stopReason = `the service exited (code ${info.code}, signal ${info.signal})`;
      log(`${stopReason}\n${svc.proc.tail()}`);
      void worker?.stop();
    });

    let lastPdp: PdpCounters | undefined = await readPdpCounters(pdp.httpSocket).catch(() => undefined);
    let lastSvc: ServiceCounters | undefined = await readServiceCounters(svc.adminPort);
    r.serviceAtStart = {
      rssMb: rssMb(svc.proc.pid) ?? null,
      heapUsedMb: lastSvc?.heapUsedMb ?? null,
      activeHandles: lastSvc?.activeHandles ?? null,
    };
    const takeSample = async (w: LoadWindow) => {
      const rss = rssMb(svc.proc.pid);
      const pdpRss = pdp.pid !== undefined ? rssMb(pdp.pid) : undefined;
      const svcNow = await readServiceCounters(svc.adminPort);
      const pdpNow = await readPdpCounters(pdp.httpSocket).catch(() => undefined);
      const windowSec = w.endSec - w.startSec;
      const hits = svcNow && lastSvc ? svcNow.cacheHits - lastSvc.cacheHits : undefined;
      const misses = svcNow && lastSvc ? svcNow.cacheMisses - lastSvc.cacheMisses : undefined;
      const round = (n: number | undefined | null, digits = 3) => (n === undefined || n === null ? null : Math.round(n * 10 ** digits) / 10 ** digits);
      const sample: Sample = {
        t: Math.round(w.endSec * 10) / 10,
        windowSec: Math.round(windowSec * 100) / 100,
        requests: w.responses,
        perSec: windowSec > 0 ? round(w.responses / windowSec, 1)! : 0,
        p50Ms: w.responses > 0 ? w.latencyMs.p50 : null,
        p99Ms: w.responses > 0 ? w.latencyMs.p99 : null,
        maxMs: w.responses > 0 ? w.latencyMs.max : null,
        errors: w.wrongAnswers + w.connectionErrors + w.timeouts,
        wrongAnswers: w.wrongAnswers,
        status5xx: w.status5xx,
        connectionErrors: w.connectionErrors,
        timeouts: w.timeouts,
        lateSends: w.lateSends,
        pdpCalls: pdpNow && lastPdp ? pdpNow.calls - lastPdp.calls : null,
        pdpFailedCalls: svcNow && lastSvc ? svcNow.pdpFailedCalls - lastSvc.pdpFailedCalls : null,
        cacheHitRatio: hits !== undefined && misses !== undefined && hits + misses > 0 ? round(hits / (hits + misses), 4) : null,
        rssMb: round(rss),
        heapUsedMb: round(svcNow?.heapUsedMb),
        heapTotalMb: round(svcNow?.heapTotalMb),
        activeHandles: svcNow?.activeHandles ?? null,
        processRssMb: round(svcNow?.processRssMb),
        pdpRssMb: round(pdpRss),
        ...(w.wrongSamples.length ? { wrongSamples: w.wrongSamples } : {}),
        ...(w.errorSamples.length ? { errorSamples: w.errorSamples } : {}),
      };
      if (pdpNow) lastPdp = pdpNow;
      if (svcNow) lastSvc = svcNow;
      r.samples.push(sample);
      output!.write(r);
      log(
        `${clock(sample.t)}  ${int(sample.perSec)} req/s  p50 ${fmt1(sample.p50Ms)} ms  p99 ${fmt1(sample.p99Ms)} ms  RSS ${fmt1(sample.rssMb)} MB  ` +
          `heap ${fmt1(sample.heapUsedMb)} MB  handles ${int(sample.activeHandles)}  PDP calls ${int(sample.pdpCalls)}  errors ${sample.errors}`,
      );
    };
    let chain = Promise.resolve();
    const onWindow = (w: LoadWindow) => {
      chain = chain.then(() => takeSample(w)).catch((error: unknown) => void log(`sample failed: ${(error as Error).message}`));
    };

    log(`load: ${minutesText(plannedSec)} at ${int(rate)} req/s offered …`);
    const job: WorkerJob = {
      ...base,
      phase: "measure",
      load: { ...mixed.load, rate },
      port: svc.port,
      durationSec: plannedSec,
      windowSec: WINDOW_SEC,
    };
    try {
      const result = await askWorker(worker, job, (plannedSec + 60) * 1000, onWindow);
      r.totals = {
        responses: result.responses,
        perSec: result.perSec,
        latencyMs: result.latencyMs,
        statusCounts: result.statusCounts,
        errors: result.errors,
        timeouts: result.timeouts,
        wrongAnswers: result.wrongAnswers,
        wrongSamples: result.wrongSamples,
        errorSamples: result.errorSamples,
        ...(result.offeredRate !== undefined ? { offeredRate: result.offeredRate } : {}),
        ...(result.lateSends !== undefined ? { lateSends: result.lateSends } : {}),
      };
    } catch (error) {
      stopReason ??= (error as Error).message;
      failed = true;
    }
    await chain;
  } catch (error) {
    stopReason ??= (error as Error).message;
    failed = true;
    if (!interrupted) log(`failed: ${(error as Error)?.stack ?? error}`);
  } finally {
    soakDone = true;
    await worker?.stop();
    await service?.proc.stop();
    await stopAll();
    await pdp.stop();
    await rm(tmp, { recursive: true, force: true });
  }

  if (!report || !output) {
    log(`no soak data: ${stopReason ?? "failed before the soak started"}`);
    return interrupted ? 130 : 1;
  }
  report.finishedAt = new Date().toISOString();
  report.stopReason = stopReason;
  report.machine.loadAverageAtEnd = loadavg().map((n) => Math.round(n * 100) / 100);
  const complete = !failed && !interrupted && report.totals !== null;
  report.summary = summarize(report.samples, plannedSec, complete, report.totals);
  output.write(report);
  process.stdout.write(`${markdown(report, output.files())}\n`);
  if (interrupted) return 130;
  return complete && report.summary.errors === 0 ? 0 : 1;
}

// Run when executed (`node dist/bench/soak.js`), not when imported (e.g. to redraw a chart).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    async (error: unknown) => {
      log(`${(error as Error)?.stack ?? error}`);
      await stopAll();
      process.exit(1);
    },
  );
}
