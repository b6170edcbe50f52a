/**
 * `npm run bench` — the benchmark harness (SPEC §11, issue 4).
 *
 *   npm run bench [-- --scenario NAME[,NAME…]]… [--duration SEC] [--rounds N] [--connections N] [--rate N] [--smoke]
 *
 * One real Cerbos PDP (the packaged binary on private unix sockets, bench/policies), then for each
 * scenario slice, one after another: a fresh server process (hello, naive or the service), a fresh
 * load-generator process (bench/load-worker.ts), a warm-up, the PDP's counters, the measured run,
 * the PDP's counters again and the server's RSS. Each row's measured time is split into `--rounds`
 * slices run round-robin over the rows (bench/rounds.ts), so rows are compared over the same
 * stretch of a drifting machine. Every answer is checked against the status its request must
 * get; a wrong answer (503s included), an error or a timeout fails the run (exit 1).
 *
 * Output: a Markdown table on stdout, bench/results/latest.json (numbers, machine, settings) and
 * bench/results/latest.svg. `--smoke` runs each scenario once for 2 s to check answers only: it
 * makes no speed claims and writes its JSON to the temp dir, leaving bench/results/ alone.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { EmbeddedPdp } from "../src/pdp/embedded.js";
import { renderChart, type ChartRow } from "./chart.js";
import type { LoadResult, WorkerJob, WrongAnswer } from "./load-worker.js";
import { machine } from "./machine.js";
import { type PdpCounters, readServiceCounters, type ServiceCounters, settledPdpCounters } from "./metrics.js";
import { askWorker, cpuSeconds, forkNode, rssMb, spawnNode, stopAll, type Tracked, waitForLine } from "./processes.js";
import { isSliced, mergeSlices, plan, type SliceResult, type SliceSummary } from "./rounds.js";
import {
  DEFAULT_RATE,
  HIT,
  MEMORY_ENTRIES,
  MIXED,
  type Scenario,
  scenarios,
  selectScenarios,
  type ServerSpec,
  SHARED_PRINCIPALS,
  SMOKE_MEMORY_ENTRIES,
} from "./scenarios.js";
import { serviceConfig, startService } from "./servers/service.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DIST = join(ROOT, "dist");
const POLICIES = join(ROOT, "bench", "policies");
const RESULTS = join(ROOT, "bench", "results");
const HELLO = join(DIST, "bench", "servers", "hello.js");
const NAIVE = join(DIST, "bench", "servers", "naive.js");
const WORKER = join(DIST, "bench", "load-worker.js");
const SEED = 20_250_401;
const SMOKE_SECONDS = 2;
const DEFAULT_ROUNDS = 3;
/** The PDP deadline of smoke runs (answers only; the default 250 ms is for speed runs). */
const SMOKE_PDP_TIMEOUT_MS = 5_000;
const SMOKE_WARMUP_SECONDS = 0.5;
/** The memory row reads RSS again after this much idle time (V8 gives back some memory when idle). */
const MEMORY_SETTLE_MS = 3_000;

const USAGE = `usage: npm run bench -- [options]

  --scenario NAME   run only NAME (repeatable, or a comma list); a group name
                    (miss-unique, mixed, rate, memory) selects all its rows
  --duration SEC    measured seconds per scenario, over all its rounds (default 10)
  --rounds N        split each scenario's measured time into N slices, run round-robin over
                    the scenarios (default ${DEFAULT_ROUNDS}; the memory row runs once)
  --connections N   autocannon connections (default 50)
  --rate N          offered requests/s of the @rate rows (default ${DEFAULT_RATE})
  --profile DIR     write a V8 CPU profile of each service process into DIR (node --cpu-prof)
  --smoke           ${SMOKE_SECONDS} s per scenario in 1 round, answers checked, no speed claims, no files in bench/results
`;

interface Settings {
  /** Measured seconds per row, over all its slices. */
  readonly durationSec: number;
  /** Slices per row, one per round. */
  readonly rounds: number;
  readonly connections: number;
  readonly rate: number;
  readonly smoke: boolean;
  readonly memoryEntries: number;
  readonly names: string[];
  /** --profile: directory for the service processes' CPU profiles. */
  readonly profileDir?: string;
}

function parseFlags(argv: string[]): Settings | string {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        scenario: { type: "string", multiple: true },
        duration: { type: "string" },
        rounds: { type: "string" },
        connections: { type: "string" },
        rate: { type: "string" },
        smoke: { type: "boolean", default: false },
        profile: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    return (error as Error).message;
  }
  if (values.help) return "";
  const positive = (flag: string, raw: string | undefined, def: number, integer: boolean): number | string => {
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) return `--${flag} must be a positive ${integer ? "integer" : "number"}, got "${raw}"`;
    return n;
  };
  const smoke = values.smoke === true;
  const duration = positive("duration", values.duration, smoke ? SMOKE_SECONDS : 10, false);
  const rounds = positive("rounds", values.rounds, DEFAULT_ROUNDS, true);
  const connections = positive("connections", values.connections, 50, true);
  const rate = positive("rate", values.rate, DEFAULT_RATE, true);
  for (const v of [duration, rounds, connections, rate]) if (typeof v === "string") return v;
  return {
    durationSec: smoke ? SMOKE_SECONDS : (duration as number),
    rounds: smoke ? 1 : (rounds as number),
    connections: connections as number,
    rate: rate as number,
    smoke,
    memoryEntries: smoke ? SMOKE_MEMORY_ENTRIES : MEMORY_ENTRIES,
    names: (values.scenario ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean),
    ...(values.profile ? { profileDir: values.profile } : {}),
  };
}

/** Measured seconds of one slice of a row (the whole run's `--duration` over its rounds). */
const sliceSec = (settings: Settings): number => settings.durationSec / settings.rounds;

/** Seconds for humans: "10", "3.3". */
const seconds = (n: number): string => String(Math.round(n * 10) / 10);

/** How each row is measured, for the headers: "10 s per scenario" or "3 rounds × 3.3 s per scenario, interleaved". */
function perScenario(settings: Settings): string {
  if (settings.rounds === 1) return `${seconds(settings.durationSec)} s per scenario`;
  return `${settings.rounds} rounds × ${seconds(sliceSec(settings))} s per scenario, interleaved`;
}

/** Node flags that make a service process write its CPU profile on exit (--profile). */
function profileArgs(settings: Settings): string[] {
  return settings.profileDir ? ["--cpu-prof", `--cpu-prof-dir=${settings.profileDir}`] : [];
}

// ---------------------------------------------------------------------------------------------

/** A row's result: of one slice while the rounds run, then of all its slices (`rowResult`). */
interface ScenarioResult extends SliceResult {
  readonly name: string;
  readonly description: string;
  readonly unit: "req/s" | "checks/s";
  /** The service's generated config (service rows; the PDP socket path shown as PDP_SOCKET). */
  serviceConfig?: Record<string, unknown>;
  ok: boolean;
  /** Sliced rows: each slice's rate and p99, in round order. */
  rounds?: SliceSummary[];
  /**
   * The memory row: RSS idle before the fill, right after it, and after `MEMORY_SETTLE_MS` idle
   * (what the table shows, `rssMb`); bytes per entry from the settled RSS; the service's own
   * cache-entry gauge and V8 heap at the end.
   */
  memory?: {
    entries: number;
    rssBeforeMb?: number;
    rssAfterFillMb?: number;
    rssSettledMb?: number;
    bytesPerEntry?: number;
    cacheEntries?: number;
    heapUsedMb?: number;
    heapTotalMb?: number;
  };
  ratioToNaive?: number;
  ratioToHello?: number;
}

interface Context {
  readonly settings: Settings;
  readonly pdp: EmbeddedPdp;
  readonly tmp: string;
}

interface StartedServer {
  readonly proc: Tracked;
  readonly port: number;
  readonly adminPort?: number;
}

async function startServer(spec: ServerSpec, name: string, ctx: Context): Promise<StartedServer | undefined> {
  switch (spec.kind) {
    case "none":
      return undefined;
    case "hello": {
      const proc = spawnNode("hello server", HELLO, []);
      const line = await waitForLine(proc, (l) => l.msg === "hello listening" && typeof l.port === "number");
      return { proc, port: line.port as number };
    }
    case "naive": {
      const proc = spawnNode("naive server", NAIVE, [ctx.pdp.grpcTarget]);
      const line = await waitForLine(proc, (l) => l.msg === "naive listening" && typeof l.port === "number");
      return { proc, port: line.port as number };
    }
    case "service": {
      const file = join(ctx.tmp, `${name.replace(/[^A-Za-z0-9.-]/g, "_")}.yaml`);
      // Smoke runs check answers only, often on a busy CI machine: a generous PDP deadline keeps
      // a slow moment from turning into a 503 (which the run would count as a wrong answer).
      return await startService(serviceConfig(spec, ctx.pdp.grpcTarget, ctx.settings.smoke ? SMOKE_PDP_TIMEOUT_MS : undefined), file, profileArgs(ctx.settings));
    }
  }
}

function describeProblems(phase: string, r: LoadResult, failures: string[]): void {
  if (r.wrongAnswers > 0) {
    failures.push(`${phase}: ${r.wrongAnswers} wrong answers of ${r.responses}, e.g. ${r.wrongSamples.map(formatWrong).join("; ")}`);
  }
  if (r.errors > 0 || r.timeouts > 0) {
    failures.push(`${phase}: ${r.errors} errors (${r.timeouts} timeouts)${r.errorSamples.length ? `, e.g. ${[...new Set(r.errorSamples)].join("; ")}` : ""}`);
  }
  if (r.responses === 0) failures.push(`${phase}: no answers at all`);
}

function formatWrong(w: WrongAnswer): string {
  return `${w.principal} GET ${w.path}: expected ${w.expected}, got ${w.got}`;
}

/** One slice of row `s` (the memory row: its one whole run), with its own server, load worker and warm-up. */
async function runScenario(s: Scenario, ctx: Context): Promise<ScenarioResult> {
  const { settings } = ctx;
  const result: ScenarioResult = {
    name: s.name,
    description: s.description,
    unit: s.load.kind === "pdp" ? "checks/s" : "req/s",
    ok: false,
    failures: [],
    ...(s.server.kind === "service" ? { serviceConfig: serviceConfig(s.server, "unix:PDP_SOCKET") } : {}),
  };
  let server: StartedServer | undefined;
  let worker: Tracked | undefined;
  try {
    server = await startServer(s.server, s.name, ctx);
    worker = forkNode("load worker", WORKER);
    const base = {
      load: s.load,
      connections: settings.connections,
      seed: SEED,
      grpcTarget: ctx.pdp.grpcTarget,
      ...(server ? { port: server.port } : {}),
    };
    const warmupSec = settings.smoke ? Math.min(s.warmupSec, SMOKE_WARMUP_SECONDS) : s.warmupSec;
    if (warmupSec > 0) {
      const warm = await askWorker(worker, { ...base, phase: "warmup", durationSec: warmupSec }, (warmupSec + 60) * 1000);
      result.warmup = { responses: warm.responses, wrongAnswers: warm.wrongAnswers, errors: warm.errors, timeouts: warm.timeouts };
      describeProblems("warm-up", warm, result.failures);
    }

    const pdpBefore = await settledPdpCounters(ctx.pdp.httpSocket);
    const svcBefore = await readServiceCounters(server?.adminPort);
    const rssBefore = server ? rssMb(server.proc.pid) : undefined;
    const cpuBefore = [cpuSeconds(server?.proc.pid), cpuSeconds(ctx.pdp.pid), cpuSeconds(worker.pid)];
    const t0 = performance.now();

    const job: WorkerJob =
      s.measure.kind === "memory"
        ? { ...base, phase: "measure", amount: s.measure.entries }
        : { ...base, phase: "measure", durationSec: sliceSec(settings) };
    const timeoutMs = s.measure.kind === "memory" ? 600_000 : (sliceSec(settings) + 60) * 1000;
    const measured = await askWorker(worker, job, timeoutMs);

    const wall = (performance.now() - t0) / 1000;
    const cpuAfter = [cpuSeconds(server?.proc.pid), cpuSeconds(ctx.pdp.pid), cpuSeconds(worker.pid)];
    const rssAfter = server ? rssMb(server.proc.pid) : undefined;
    // The answers first: they stand even if the counters below cannot be read.
    result.measured = measured;
    describeProblems("measurement", measured, result.failures);
    const pdpAfter = await settledPdpCounters(ctx.pdp.httpSocket);
    const svcAfter = await readServiceCounters(server?.adminPort);

    result.pdp = pdpDelta(pdpBefore, pdpAfter);
    if (s.load.kind === "http" && measured.responses > 0) result.pdpChecksPerRequest = result.pdp.checks / measured.responses;
    const cache = cacheDelta(svcBefore, svcAfter);
    if (cache) result.cache = cache;
    if (rssAfter !== undefined) result.rssMb = rssAfter;
    const pct = (i: number) => {
      const a = cpuBefore[i];
      const b = cpuAfter[i];
      return a !== undefined && b !== undefined && wall > 0 ? Math.round(((b - a) / wall) * 1000) / 10 : undefined;
    };
    result.cpuPercent = {
      ...(pct(0) !== undefined ? { server: pct(0) } : {}),
      ...(pct(1) !== undefined ? { pdp: pct(1) } : {}),
      ...(pct(2) !== undefined ? { loadGenerator: pct(2) } : {}),
    };
    if (s.measure.kind === "memory" && server) {
      const entries = s.measure.entries;
      await delay(settings.smoke ? 1_000 : MEMORY_SETTLE_MS);
      const settled = rssMb(server.proc.pid);
      const svc = (await readServiceCounters(server.adminPort)) ?? svcAfter;
      if (settled !== undefined) result.rssMb = settled;
      result.memory = {
        entries,
        ...(rssBefore !== undefined ? { rssBeforeMb: rssBefore } : {}),
        ...(rssAfter !== undefined ? { rssAfterFillMb: rssAfter } : {}),
        ...(settled !== undefined ? { rssSettledMb: settled } : {}),
        ...(rssBefore !== undefined && settled !== undefined ? { bytesPerEntry: Math.round(((settled - rssBefore) * 2 ** 20) / entries) } : {}),
        ...(svc ? { cacheEntries: svc.cacheEntries } : {}),
        ...(svc?.heapUsedMb !== undefined ? { heapUsedMb: svc.heapUsedMb } : {}),
        ...(svc?.heapTotalMb !== undefined ? { heapTotalMb: svc.heapTotalMb } : {}),
      };
      if (svc && svc.cacheEntries < entries) {
        result.failures.push(`memory: the service reports ${svc.cacheEntries} cached decisions after ${entries} distinct requests`);
      }
    }
  } catch (error) {
    result.failures.push((error as Error).message);
  } finally {
    await worker?.stop();
    await server?.proc.stop();
  }
  result.ok = result.failures.length === 0;
  return result;
}

/** The row of all its slices (a row that runs whole, the memory row, has one and stays as it is). */
function rowResult(s: Scenario, slices: readonly ScenarioResult[]): ScenarioResult {
  if (!isSliced(s)) return slices[0]!;
  const merged = mergeSlices(slices);
  merged.ok = merged.failures.length === 0;
  return merged;
}

function pdpDelta(before: PdpCounters, after: PdpCounters): NonNullable<ScenarioResult["pdp"]> {
  const calls = after.calls - before.calls;
  const checks = after.checks - before.checks;
  return {
    calls,
    checkResourcesCalls: after.callsByMethod.CheckResources - before.callsByMethod.CheckResources,
    accessEvaluationBatchCalls: after.callsByMethod.AccessEvaluationBatch - before.callsByMethod.AccessEvaluationBatch,
    checks,
    meanChecksPerCall: calls > 0 ? checks / calls : null,
  };
}

function cacheDelta(before: ServiceCounters | undefined, after: ServiceCounters | undefined): ScenarioResult["cache"] {
  if (!before || !after) return undefined;
  const hits = after.cacheHits - before.cacheHits;
  const misses = after.cacheMisses - before.cacheMisses;
  return { hits, misses, hitRatio: hits + misses > 0 ? hits / (hits + misses) : null, entries: after.cacheEntries };
}

// ---------------------------------------------------------------------------------------------
// Reporting

const isThroughputRow = (r: ScenarioResult) => r.unit === "req/s" && !r.name.includes("@") && r.memory === undefined;

function addRatios(results: ScenarioResult[]): void {
  const naive = results.find((r) => r.name === "naive" && r.ok)?.measured?.perSec;
  const hello = results.find((r) => r.name === "hello" && r.ok)?.measured?.perSec;
  for (const r of results) {
    if (!isThroughputRow(r) || !r.measured) continue;
    if (naive) r.ratioToNaive = r.measured.perSec / naive;
    if (hello) r.ratioToHello = r.measured.perSec / hello;
  }
}

const fmt = {
  rate: (n: number | undefined) => (n === undefined ? "—" : Math.round(n).toLocaleString("en-US")),
  ms: (n: number | undefined) => (n === undefined ? "—" : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)),
  int: (n: number | undefined) => (n === undefined ? "—" : Math.round(n).toLocaleString("en-US")),
  ratio: (n: number | undefined) => (n === undefined ? "—" : `${n.toFixed(2)}×`),
  pct: (n: number | null | undefined) => (n === undefined || n === null ? "—" : `${(n * 100).toFixed(1)} %`),
  mb: (n: number | undefined) => (n === undefined ? "—" : n.toFixed(0)),
  batch: (n: number | null | undefined) => (n === undefined || n === null ? "—" : n.toFixed(1)),
  /** The slowest and the fastest slice of a row, when it has more than one. */
  spread: (rounds: readonly SliceSummary[] | undefined) => {
    if (!rounds || rounds.length < 2) return "—";
    const rates = rounds.map((x) => x.perSec);
    return `${fmt.rate(Math.min(...rates))}–${fmt.rate(Math.max(...rates))}`;
  },
};

function markdownTable(results: ScenarioResult[], smoke: boolean): string {
  // Smoke numbers are no measurements: no spread, no ratios.
  const head = ["scenario", "req/s", ...(smoke ? [] : ["spread"]), "p50 ms", "p99 ms", "p99.9 ms", "errors", "wrong answers", "PDP calls", "checks/call", "cache hits", "RSS MB"];
  if (!smoke) head.push("× naive", "× hello");
  const rows = results.map((r) => {
    const m = r.measured;
    const cells = [
      r.ok ? r.name : `${r.name} FAILED`,
      m ? (r.unit === "checks/s" ? `${fmt.rate(m.perSec)} checks/s` : fmt.rate(m.perSec)) : "—",
      ...(smoke ? [] : [fmt.spread(r.rounds)]),
      fmt.ms(m?.latencyMs.p50),
      fmt.ms(m?.latencyMs.p99),
      fmt.ms(m?.latencyMs.p999),
      m ? fmt.int(m.errors + m.timeouts) : "—",
      m ? fmt.int(m.wrongAnswers) : "—",
      r.name === "hello" || r.name === "hello@rate" ? "—" : fmt.int(r.pdp?.calls),
      fmt.batch(r.pdp?.meanChecksPerCall),
      fmt.pct(r.cache?.hitRatio),
      fmt.mb(r.rssMb),
    ];
    if (!smoke) cells.push(fmt.ratio(r.ratioToNaive), fmt.ratio(r.ratioToHello));
    return cells;
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const numeric = (i: number) => i > 0;
  const line = (cells: string[]) => `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (numeric(i) ? `${"-".repeat(w + 1)}:` : `:${"-".repeat(w + 1)}`)).join("|")}|`;
  return [line(head), rule, ...rows.map(line)].join("\n");
}

interface Target {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean;
}

/** Issue 4's targets against this run (reported, never enforced). */
function targets(results: ScenarioResult[], memoryName: string): Target[] {
  const get = (name: string) => results.find((r) => r.name === name && r.ok);
  const out: Target[] = [];
  const hello = get("hello")?.measured;
  const naive = get("naive")?.measured;
  const hit = get("hit")?.measured;
  if (hit && hello) out.push({ target: "hit ≥ 0.8 × hello req/s", measured: `${(hit.perSec / hello.perSec).toFixed(2)}×`, met: hit.perSec >= 0.8 * hello.perSec });
  const hitRate = get("hit@rate")?.measured;
  const helloRate = get("hello@rate")?.measured;
  if (hitRate && helloRate) {
    out.push({
      target: "hit@rate p99 ≤ hello@rate p99 + 1 ms",
      measured: `${fmt.ms(hitRate.latencyMs.p99)} vs ${fmt.ms(helloRate.latencyMs.p99)} ms`,
      met: hitRate.latencyMs.p99 <= helloRate.latencyMs.p99 + 1,
    });
  }
  if (naive) {
    const against = (name: string, factor: number) => {
      const m = get(name)?.measured;
      if (m) out.push({ target: `${name} ≥ ${factor} × naive`, measured: `${(m.perSec / naive.perSec).toFixed(2)}×`, met: m.perSec >= factor * naive.perSec });
    };
    against("miss-shared", 4);
    for (const p of ["auto", "checkresources", "authzen"]) against(`miss-unique/${p}`, 1);
    for (const p of ["auto", "checkresources"]) against(`mixed/${p}`, 5);
  }
  // Issue 5 (AuthZEN batches across principals).
  const uniqueAuto = get("miss-unique/auto")?.measured;
  if (uniqueAuto && naive) {
    out.push({ target: "miss-unique/auto ≥ 4 × naive (issue 5)", measured: `${(uniqueAuto.perSec / naive.perSec).toFixed(2)}×`, met: uniqueAuto.perSec >= 4 * naive.perSec });
  }
  const versus = (name: string, base: string, factor: number) => {
    const a = get(name)?.measured;
    const b = get(base)?.measured;
    if (a && b) out.push({ target: `${name} ≥ ${factor} × ${base} (issue 5)`, measured: `${(a.perSec / b.perSec).toFixed(2)}×`, met: a.perSec >= factor * b.perSec });
  };
  versus("mixed/auto", "mixed/checkresources", 1);
  versus("miss-shared", "miss-shared/checkresources", 0.95);
  const shared = get("miss-shared")?.measured;
  const direct = get("pdp-direct")?.measured;
  if (shared && direct) {
    out.push({ target: "miss-shared vs pdp-direct (report only)", measured: `${((shared.perSec / direct.perSec) * 100).toFixed(0)} % of ${fmt.rate(direct.perSec)} checks/s`, met: true });
  }
  const mem = get(memoryName);
  const rss = mem?.memory?.rssSettledMb;
  if (mem?.memory && rss !== undefined && mem.memory.entries >= MEMORY_ENTRIES) {
    const heap = mem.memory.heapUsedMb !== undefined ? `, V8 heap used ${mem.memory.heapUsedMb.toFixed(0)} MB` : "";
    out.push({
      target: `RSS ≤ 250 MB with ${mem.memory.entries.toLocaleString("en-US")} cached decisions`,
      measured: `${rss.toFixed(0)} MB (${mem.memory.rssBeforeMb?.toFixed(0) ?? "?"} MB before the fill${heap})`,
      met: rss <= 250,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv);
  if (typeof parsed === "string") {
    process.stderr.write(parsed ? `${parsed}\n${USAGE}` : USAGE);
    return parsed ? 2 : 0;
  }
  const settings = parsed;
  const all = scenarios({ rate: settings.rate, memoryEntries: settings.memoryEntries });
  let selected: Scenario[];
  try {
    selected = selectScenarios(all, settings.names);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    return 2;
  }
  const memoryName = all.find((s) => s.measure.kind === "memory")!.name;
  const host = await machine();
  const started = new Date();
  process.stderr.write(
    `bench: ${selected.length} scenarios, ${perScenario(settings)}, ${settings.connections} connections` +
      `${settings.smoke ? " (smoke: answers checked, no speed claims)" : ""}\n` +
      `bench: ${host.cpuModel}, ${host.cores} cores, Node ${host.node}, Cerbos ${host.cerbos}, load average ${host.loadAverageAtStart.join(" ")}, ` +
      `CPU busy before start ${host.busyBeforeStartPercent ?? "?"} %\n`,
  );
  if (!settings.smoke && (host.busyBeforeStartPercent ?? 0) > 10) {
    process.stderr.write(`bench: warning: the machine is not quiet (${host.busyBeforeStartPercent} % CPU busy before the start): numbers will be low and noisy\n`);
  }

  const tmp = await mkdtemp(join(tmpdir(), "cerbos-fa-bench-"));
  const pdp = new EmbeddedPdp({
    policiesDir: POLICIES,
    restart: false,
    watch: false,
    log: (level, msg) => {
      if (level === "warn" || level === "error") process.stderr.write(`bench: PDP ${level}: ${msg}\n`);
    },
  });
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nbench: ${signal}: stopping every process started by the harness\n`);
    void (async () => {
      await stopAll();
      await pdp.stop();
      await rm(tmp, { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const slices = new Map<string, ScenarioResult[]>(selected.map((s) => [s.name, []]));
  const rounds = plan(selected, settings.rounds);
  try {
    await pdp.start();
    for (const [i, round] of rounds.entries()) {
      for (const s of round) {
        if (interrupted) break;
        if (pdp.pid === undefined) {
          slices.get(s.name)!.push({ name: s.name, description: s.description, unit: "req/s", ok: false, failures: ["not run: the PDP is down"] });
          continue;
        }
        process.stderr.write(`bench: ${rounds.length > 1 ? `round ${i + 1}/${rounds.length}: ` : ""}${s.name} …`);
        const r = await runScenario(s, { settings, pdp, tmp });
        slices.get(s.name)!.push(r);
        const m = r.measured;
        process.stderr.write(
          r.ok ? ` ${fmt.rate(m?.perSec)} ${r.unit}, p99 ${fmt.ms(m?.latencyMs.p99)} ms\n` : ` FAILED\n${r.failures.map((f) => `  ${f}`).join("\n")}\n`,
        );
      }
    }
  } finally {
    await stopAll();
    await pdp.stop();
    await rm(tmp, { recursive: true, force: true });
  }
  if (interrupted) return 130;

  const results = selected.map((s) => rowResult(s, slices.get(s.name)!));
  addRatios(results);
  const failed = results.filter((r) => !r.ok);
  const report = {
    generatedAt: started.toISOString(),
    smoke: settings.smoke,
    ok: failed.length === 0,
    method:
      "Each scenario slice: a fresh server process and a fresh autocannon process (pipelining 1) on the same machine, " +
      "one after another, against one real Cerbos PDP on unix sockets; every answer checked against its expected status. " +
      "Each row's measured time is split into `rounds` slices, run round-robin over the rows (round 1 of every row, then round 2, …) " +
      "so that the rows of a ratio are measured over the same stretch of the machine's drifting speed.",
    machine: { ...host, loadAverageAtEnd: loadavg().map((n) => Math.round(n * 100) / 100) },
    settings: {
      durationSec: settings.durationSec,
      rounds: settings.rounds,
      sliceSec: sliceSec(settings),
      warmupSec: Object.fromEntries(selected.map((s) => [s.name, settings.smoke ? Math.min(s.warmupSec, SMOKE_WARMUP_SECONDS) : s.warmupSec])),
      connections: settings.connections,
      pipelining: 1,
      rate: settings.rate,
      memoryEntries: settings.memoryEntries,
      seed: SEED,
      streams: { hit: HIT, sharedPrincipals: SHARED_PRINCIPALS, mixed: MIXED, denials: "every 10th request of the miss streams; mixed: 10 % at random" },
      scenarios: selected.map((s) => s.name),
    },
    scenarios: results,
    targets: settings.smoke ? [] : targets(results, memoryName),
  };

  const lines: string[] = [];
  lines.push(
    settings.smoke
      ? `Benchmark smoke run (${settings.durationSec} s per scenario): answers checked only — these numbers are not measurements.`
      : `Benchmark: ${host.cpuModel}, ${host.cores} cores, Node ${host.node}, Cerbos ${host.cerbos}, commit ${host.gitCommit.slice(0, 12)}` +
          `${host.gitDirty === true ? " (+ uncommitted changes)" : ""}; ${perScenario(settings)}, ${settings.connections} connections, pipelining 1.`,
  );
  lines.push("");
  lines.push(markdownTable(results, settings.smoke));
  lines.push("");
  if (!settings.smoke) {
    lines.push(
      "req/s counts right answers only. pdp-direct: checks/s, latency per 50-resource call. @rate rows: fixed offered rate " +
        `(${settings.rate} req/s, paced per connection). cache hits: the service's own counters. checks/call: the PDP's own counters.`,
    );
    if (settings.rounds > 1) {
      lines.push(
        `Each row is measured in ${settings.rounds} slices of ${seconds(sliceSec(settings))} s, one per round, each with its own server and warm-up: ` +
          "req/s = right answers of all slices ÷ their measured seconds, spread = the slowest and fastest slice, " +
          "p50/p99/p99.9 = the median of the slices' values, counts summed, RSS the highest.",
      );
    }
    const t = report.targets;
    if (t.length > 0) {
      lines.push("");
      lines.push("Issue 4 targets (measured, not enforced):");
      for (const x of t) lines.push(`- ${x.met ? "met    " : "NOT met"}  ${x.target}: ${x.measured}`);
    }
  }
  if (failed.length > 0) {
    lines.push("");
    lines.push(`FAILED: ${failed.length} of ${results.length} scenarios`);
    for (const r of failed) for (const f of r.failures) lines.push(`- ${r.name}: ${f}`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);

  const json = `${JSON.stringify(report, null, 2)}\n`;
  if (settings.smoke || failed.length > 0) {
    const file = join(tmpdir(), `cerbos-forwardauth-bench-${settings.smoke ? "smoke" : "failed"}.json`);
    writeFileSync(file, json);
    process.stderr.write(`bench: results written to ${file}${failed.length > 0 ? " (bench/results/ left unchanged: the run failed)" : ""}\n`);
  } else {
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, "latest.json"), json);
    const chartRows: ChartRow[] = results
      .filter((r) => r.measured && r.memory === undefined)
      .map((r) => ({ name: r.name, perSec: r.measured!.perSec, p99Ms: r.measured!.latencyMs.p99, unit: r.unit }));
    const title = `cerbos-forwardauth benchmark — ${started.toISOString().slice(0, 10)}`;
    const subtitle = `${host.cpuModel}, ${host.cores} cores · Node ${host.node} · Cerbos ${host.cerbos} · ${perScenario(settings)}, ${settings.connections} connections · commit ${host.gitCommit.slice(0, 12)}`;
    writeFileSync(join(RESULTS, "latest.svg"), renderChart(chartRows, title, subtitle));
    process.stderr.write(`bench: wrote bench/results/latest.json and bench/results/latest.svg\n`);
  }
  return failed.length > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  async (error: unknown) => {
    process.stderr.write(`bench: ${(error as Error)?.stack ?? error}\n`);
    await stopAll();
    process.exit(1);
  },
);
