/**
 * The load generator, in its own process (forked by bench/run.ts and bench/soak.ts, driven over IPC), so its CPU
 * and garbage are never the server's.
 *
 * HTTP: autocannon with pipelining 1. Every response is checked against the status its request
 * must get (`BenchRequest.expected`): for a fixed request set each request entry has its own
 * `onResponse`; for generated streams every request is written from the stream as bytes by
 * `streamedRequests`, with its own `onResponse`. Anything else
 * — a 503, a 500, a 200 for a denial — is a wrong answer; connection errors and timeouts are
 * counted by autocannon. Latency is recorded per response in microseconds (autocannon's own
 * histogram has 1 ms resolution).
 *
 * Fixed rate: autocannon's `overallRate` hands each connection a budget per second that it
 * spends in one burst at the start of the second, so latency "at 2,000 requests/s" would be
 * measured inside bursts of all connections at once. Instead each connection is paced: its
 * sends are spaced `connections / rate` seconds apart, connections staggered evenly.
 *
 * PDP: `pdp-direct` drives the PDP itself with CheckResources calls of N resources, K calls in
 * flight, and checks every result (resource id in order, allow/deny as expected).
 *
 * Windows (the soak): a job with `windowSec` also reports every `windowSec` seconds what
 * happened since the last report — answers, wrong answers, 5xx, connection errors, timeouts,
 * p50/p99 — as `window` messages before its final result.
 *
 * The worker keeps its stream between phases (warm-up, then measurement), so "unique" ids are
 * never repeated. It exits when the harness goes away (IPC disconnect).
 */
import { randomBytes } from "node:crypto";
import { createHistogram, performance, type RecordableHistogram } from "node:perf_hooks";
import autocannon, { type Request } from "autocannon";
import { GRPC } from "@cerbos/grpc";
import {
  type BenchRequest,
  createPdpBatches,
  createStream,
  forwardAuthHeaders,
  hitRequests,
  type LoadSpec,
  type Stream,
  type Workload,
} from "./scenarios.js";

export interface WorkerJob {
  readonly phase: "warmup" | "measure";
  readonly load: LoadSpec;
  /** HTTP target port on 127.0.0.1 (http loads). */
  readonly port?: number;
  /** gRPC target of the PDP (pdp loads). */
  readonly grpcTarget?: string;
  readonly connections: number;
  /** Timed run; or `amount` requests in total. */
  readonly durationSec?: number;
  readonly amount?: number;
  readonly seed: number;
  /** HTTP loads: send a `window` message every this many seconds (absent: only the result). */
  readonly windowSec?: number;
}

export interface WrongAnswer {
  readonly expected: number;
  readonly got: number;
  readonly principal: string;
  readonly path: string;
}

export interface LoadResult {
  readonly phase: WorkerJob["phase"];
  /** Answers received and checked (for pdp: calls). */
  readonly responses: number;
  /** Decisions checked: responses, or calls × resources for pdp. */
  readonly checks: number;
  readonly elapsedSec: number;
  /** Right answers per second (pdp: right checks per second). */
  readonly perSec: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly p999: number; readonly max: number; readonly mean: number };
  readonly statusCounts: Record<string, number>;
  readonly errors: number;
  readonly timeouts: number;
  readonly wrongAnswers: number;
  readonly wrongSamples: readonly WrongAnswer[];
  readonly errorSamples: readonly string[];
  /** Paced runs: the offered rate and how many sends left more than 1 ms after their slot. */
  readonly offeredRate?: number;
  readonly lateSends?: number;
}

/** What happened during one window of a job with `windowSec`; times in s since the job started. */
export interface LoadWindow {
  readonly index: number;
  readonly startSec: number;
  readonly endSec: number;
  /** The last window, cut short by the end of the run. */
  readonly final: boolean;
  /** Answers received and checked. */
  readonly responses: number;
  /** Answers with another status than expected (5xx included). */
  readonly wrongAnswers: number;
  readonly status5xx: number;
  readonly statusCounts: Record<string, number>;
  /** Connection errors, timeouts not included. */
  readonly connectionErrors: number;
  readonly timeouts: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Paced runs: sends that left more than 1 ms after their slot. */
  readonly lateSends: number;
  readonly wrongSamples: readonly WrongAnswer[];
  readonly errorSamples: readonly string[];
}

export type WorkerMessage =
  | { type: "result"; result: LoadResult }
  | { type: "error"; message: string }
  | { type: "window"; window: LoadWindow };

const nonce = randomBytes(4).toString("hex");
const streams = new Map<Workload, Stream>();
const MAX_SAMPLES = 5;

class Checker {
  /** A second checker that sees every answer too (the current window). */
  tee: Checker | undefined;
  responses = 0;
  wrong = 0;
  readonly samples: WrongAnswer[] = [];
  readonly statusCounts: Record<string, number> = {};
  readonly histogram: RecordableHistogram = createHistogram();

  check(r: BenchRequest, status: number): void {
    this.responses++;
    this.statusCounts[status] = (this.statusCounts[status] ?? 0) + 1;
    if (status !== r.expected) {
      this.wrong++;
      if (this.samples.length < MAX_SAMPLES) this.samples.push({ expected: r.expected, got: status, principal: r.principal, path: r.path });
    }
    this.tee?.check(r, status);
  }

  /** Records one latency in ms (kept in µs, at least 1). */
  latency(ms: number): void {
    this.histogram.record(Math.max(1, Math.round(ms * 1000)));
    this.tee?.latency(ms);
  }

  latencyMs(): LoadResult["latencyMs"] {
    const h = this.histogram;
    if (h.count === 0) return { p50: 0, p99: 0, p999: 0, max: 0, mean: 0 };
    return { p50: h.percentile(50) / 1000, p99: h.percentile(99) / 1000, p999: h.percentile(99.9) / 1000, max: h.max / 1000, mean: h.mean / 1000 };
  }
}

/** The stream of a generated workload, kept by the worker across phases. */
function streamOf(workload: Workload, seed: number): Stream {
  let stream = streams.get(workload);
  if (!stream) {
    stream = createStream(workload, seed, nonce);
    streams.set(workload, stream);
  }
  return stream;
}

const PLACEHOLDER: BenchRequest = { principal: "(placeholder, never sent)", roles: "", method: "GET", path: "/", expected: 403 };

function httpRequests(workload: Workload, checker: Checker): Request[] {
  if (workload === "hit") {
    // A fixed set: prebuilt request bytes, each entry checks its own answers.
    return hitRequests().map((r) => ({
      method: r.method,
      path: "/",
      headers: forwardAuthHeaders(r),
      onResponse: (status: number) => checker.check(r, status),
    }));
  }
  // A placeholder: autocannon builds it, but `streamedRequests` replaces it (and every later
  // request) with the stream's before the connection sends anything. Were it ever sent, its
  // answer (400: no forwarded headers) would count as a wrong one.
  return [{ method: "GET", path: "/", onResponse: (status: number) => checker.check(PLACEHOLDER, status) }];
}

/** The autocannon client internals the pacer and `streamedRequests` use (autocannon 9 lib/httpClient.js, lib/requestIterator.js). */
interface AutocannonClient {
  destroyed: boolean;
  _doRequest: (...args: unknown[]) => unknown;
  requestIterator: {
    currentRequest: { requestBuffer: Buffer; onResponse: (status: number) => void };
    resetted: boolean;
    nextRequest: () => unknown;
  };
}

/**
 * A `setupClient` hook for generated streams: the connection's next request is written from the
 * stream as bytes directly, in place of autocannon's per-request builder (object merges, header
 * scans and a string join: ~10 µs of the load generator's CPU per request, measured with a CPU
 * profile, on a machine the servers share). The bytes are what that builder writes for the
 * same request; each request checks its own answer, as before.
 */
function streamedRequests(stream: Stream, port: number, checker: Checker): (client: unknown) => void {
  const head = `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: keep-alive\r\n`;
  return (raw) => {
    const iterator = (raw as AutocannonClient).requestIterator;
    iterator.nextRequest = () => {
      const r = stream.next();
      let text = head;
      for (const [name, value] of Object.entries(forwardAuthHeaders(r))) text += `${name}: ${value}\r\n`;
      iterator.resetted = false;
      iterator.currentRequest = { requestBuffer: Buffer.from(text + "\r\n"), onResponse: (status) => checker.check(r, status) };
      return iterator.currentRequest;
    };
    // The hook runs before the connection's first send, which takes the current request.
    iterator.nextRequest();
  };
}

/**
 * A `setupClient` hook that paces one autocannon connection: each send waits for its slot,
 * slots `connections / rate` s apart, connections staggered evenly across one interval. It wraps
 * the client's `_doRequest` (autocannon 9 internals: the method that writes the next request,
 * called on connect and after each answer). Latency still runs from the actual write; a send
 * more than 1 ms after its slot counts in `late` (the load generator could not keep up), and a
 * late connection catches up on its schedule rather than drifting.
 */
function pacer(rate: number, connections: number, late: { count: number }): (client: unknown) => void {
  const intervalMs = (connections * 1000) / rate;
  const start = performance.now() + 20;
  let index = 0;
  return (raw) => {
    const client = raw as AutocannonClient;
    let slot = start + (index++ * intervalMs) / connections;
    const send = client._doRequest;
    const sendAtSlot = (args: unknown[]) => {
      if (client.destroyed) return;
      if (performance.now() - slot > 1) late.count++;
      slot += intervalMs;
      send.apply(client, args);
    };
    client._doRequest = (...args: unknown[]) => {
      const wait = slot - performance.now();
      if (wait <= 0) sendAtSlot(args);
      else setTimeout(() => sendAtSlot(args), wait);
    };
  };
}

/** One `setupClient` hook running the given ones in order. */
function clientHooks(hooks: ReadonlyArray<((client: unknown) => void) | undefined>): (client: unknown) => void {
  const present = hooks.filter((h) => h !== undefined);
  return (client) => {
    for (const hook of present) hook(client);
  };
}

/**
 * Sends each request of the fixed hit set once, one after another, checking each answer: every
 * connection walks the set from its start, so a short or paced warm-up alone would not reach
 * all of it.
 */
async function prime(port: number, checker: Checker): Promise<void> {
  for (const r of hitRequests()) {
    const res = await fetch(`http://127.0.0.1:${port}/`, { headers: forwardAuthHeaders(r) });
    await res.arrayBuffer();
    checker.check(r, res.status);
  }
}

async function runHttp(job: WorkerJob): Promise<LoadResult> {
  if (job.load.kind !== "http" || job.port === undefined) throw new Error("http job without port");
  const load = job.load;
  const port = job.port;
  const checker = new Checker();
  if (job.phase === "warmup" && load.workload === "hit") await prime(job.port, checker);
  const late = { count: 0 };
  const errorSamples: string[] = [];
  const started = performance.now();
  let lastResponse = started;
  const windows = job.windowSec !== undefined && job.windowSec > 0 ? startWindows(job.windowSec, checker, late, started) : undefined;
  return await new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${job.port}`,
        connections: job.connections,
        pipelining: 1,
        timeout: 10,
        // autocannon stops at its sampling tick: 100 ms ticks keep short runs close to their duration.
        sampleInt: 100,
        ...(job.amount !== undefined ? { amount: job.amount } : { duration: job.durationSec ?? 10 }),
        requests: httpRequests(load.workload, checker),
        setupClient: clientHooks([
          load.workload === "hit" ? undefined : streamedRequests(streamOf(load.workload, job.seed), port, checker),
          load.rate !== undefined ? pacer(load.rate, job.connections, late) : undefined,
        ]),
      },
      (err, result) => {
        windows?.stop();
        if (err) {
          reject(err);
          return;
        }
        const elapsedSec = (lastResponse - started) / 1000;
        resolve({
          phase: job.phase,
          responses: checker.responses,
          checks: checker.responses,
          elapsedSec,
          // Only right answers count as throughput.
          perSec: elapsedSec > 0 ? (checker.responses - checker.wrong) / elapsedSec : 0,
          latencyMs: checker.latencyMs(),
          statusCounts: checker.statusCounts,
          errors: result.errors,
          timeouts: result.timeouts,
          wrongAnswers: checker.wrong,
          wrongSamples: checker.samples,
          errorSamples,
          ...(load.rate !== undefined ? { offeredRate: load.rate, lateSends: late.count } : {}),
        });
      },
    );
    // A connection's first answer also carries its TCP connect (all connections open at once):
    // counted and checked, but kept out of the latency percentiles.
    const connected = new WeakSet<object>();
    instance.on("response", (client: object, _status: number, _bytes: number, ms: number) => {
      lastResponse = performance.now();
      if (connected.has(client)) checker.latency(ms);
      else connected.add(client);
    });
    instance.on("reqError", (error: Error) => {
      if (errorSamples.length < MAX_SAMPLES) errorSamples.push(error.message);
      windows?.error(error);
    });
  });
}

/** autocannon reports a timeout as a `reqError` with this message (autocannon 9 lib/run.js). */
const TIMEOUT_MESSAGE = "request timed out";

/**
 * Window reports for `runHttp`: every `windowSec` a fresh tee checker takes over and the last
 * one is sent as a `window` message; `stop()` sends the last, shorter window (if it lasted at
 * least 1 s or saw a problem) and ends the timer.
 */
function startWindows(windowSec: number, checker: Checker, late: { count: number }, started: number) {
  let index = 0;
  let windowStart = started;
  let lateAtStart = late.count;
  let connectionErrors = 0;
  let timeouts = 0;
  let errorSamples: string[] = [];
  checker.tee = new Checker();
  const emit = (final: boolean) => {
    const now = performance.now();
    const w = checker.tee!;
    checker.tee = new Checker();
    const problems = w.wrong + connectionErrors + timeouts;
    if (!final || now - windowStart >= 1000 || problems > 0) {
      const h = w.histogram;
      const pct = (p: number) => (h.count ? h.percentile(p) / 1000 : 0);
      const window: LoadWindow = {
        index: index++,
        startSec: (windowStart - started) / 1000,
        endSec: (now - started) / 1000,
        final,
        responses: w.responses,
        wrongAnswers: w.wrong,
        status5xx: Object.entries(w.statusCounts).reduce((n, [status, count]) => (Number(status) >= 500 ? n + count : n), 0),
        statusCounts: w.statusCounts,
        connectionErrors,
        timeouts,
        latencyMs: { p50: pct(50), p99: pct(99), max: h.count ? h.max / 1000 : 0 },
        lateSends: late.count - lateAtStart,
        wrongSamples: w.samples,
        errorSamples,
      };
      process.send!({ type: "window", window } satisfies WorkerMessage);
    }
    windowStart = now;
    lateAtStart = late.count;
    connectionErrors = 0;
    timeouts = 0;
    errorSamples = [];
  };
  const timer = setInterval(() => emit(false), windowSec * 1000);
  let stopped = false;
  return {
    error(error: Error) {
      if (error.message === TIMEOUT_MESSAGE) timeouts++;
      else connectionErrors++;
      if (errorSamples.length < MAX_SAMPLES) errorSamples.push(error.message);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      emit(true);
      checker.tee = undefined;
    },
  };
}

async function runPdp(job: WorkerJob): Promise<LoadResult> {
  if (job.load.kind !== "pdp" || job.grpcTarget === undefined) throw new Error("pdp job without grpcTarget");
  const { concurrency, resourcesPerCall } = job.load;
  const batches = createPdpBatches(resourcesPerCall, `${nonce}-${job.phase}`);
  const client = new GRPC(job.grpcTarget, { tls: false });
  const histogram = createHistogram();
  const errorSamples: string[] = [];
  const wrongSamples: WrongAnswer[] = [];
  let calls = 0;
  let checks = 0;
  let wrong = 0;
  let errors = 0;
  const started = performance.now();
  const until = started + (job.durationSec ?? 10) * 1000;
  const loop = async () => {
    while (performance.now() < until) {
      const batch = batches.next();
      const t0 = performance.now();
      try {
        const response = await client.checkResources({
          principal: { id: batch.principal, roles: ["user"] },
          resources: batch.ids.map((id) => ({ resource: { kind: "route", id, attr: { method: "GET", path: id } }, actions: ["GET"] })),
        });
        histogram.record(Math.max(1, Math.round((performance.now() - t0) * 1000)));
        calls++;
        checks += batch.ids.length;
        for (let k = 0; k < batch.ids.length; k++) {
          const result = response.results[k];
          const allowed = result !== undefined && result.resource.id === batch.ids[k] && result.isAllowed("GET") === true;
          if (allowed !== batch.expected[k] || response.results.length !== batch.ids.length) {
            wrong++;
            if (wrongSamples.length < MAX_SAMPLES) {
              wrongSamples.push({ expected: batch.expected[k] ? 200 : 403, got: allowed ? 200 : 403, principal: batch.principal, path: batch.ids[k]! });
            }
          }
        }
      } catch (error) {
        errors++;
        if (errorSamples.length < MAX_SAMPLES) errorSamples.push((error as Error).message);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, loop));
  } finally {
    client.close();
  }
  const elapsedSec = (performance.now() - started) / 1000;
  const pct = (p: number) => (histogram.count ? histogram.percentile(p) / 1000 : 0);
  return {
    phase: job.phase,
    responses: calls,
    checks,
    elapsedSec,
    perSec: (checks - wrong) / elapsedSec,
    latencyMs: { p50: pct(50), p99: pct(99), p999: pct(99.9), max: histogram.count ? histogram.max / 1000 : 0, mean: histogram.count ? histogram.mean / 1000 : 0 },
    statusCounts: {},
    errors,
    timeouts: 0,
    wrongAnswers: wrong,
    wrongSamples,
    errorSamples,
  };
}

process.on("disconnect", () => process.exit(0));
process.on("message", (job: WorkerJob) => {
  const run = job.load.kind === "pdp" ? runPdp(job) : runHttp(job);
  run.then(
    (result) => process.send!({ type: "result", result } satisfies WorkerMessage),
    (error: unknown) => process.send!({ type: "error", message: (error as Error)?.stack ?? String(error) } satisfies WorkerMessage),
  );
});
