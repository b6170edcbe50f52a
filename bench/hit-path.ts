/**
 * The JavaScript of one cache hit, measured in-process: the service's own decide() and
 * writeVerdict() for the `hit` stream's requests, with the benchmark's service config. Headers
 * are copied into new strings per request, as the uWebSockets.js handler receives them, and the
 * response object only counts calls. No HTTP and no kernel: this isolates what a hit costs in
 * JavaScript above `hello`, which the full benchmark (bench/run.ts) cannot resolve below ±2 µs on
 * a shared machine.
 *
 *   npm run build && node dist/bench/hit-path.js [--iterations N] [--repeats N]
 *
 * Prints the median of the repeats in µs per request, less the header copies timed alone (the
 * handler gets its strings from native code, not from a copy). The cache is filled with
 * allow decisions for the hit requests first; afterwards the PDP side throws, so a request that
 * missed the cache stops the run instead of being counted, and every verdict must be a 200.
 */
import { parseArgs } from "node:util";
import { Registry } from "prom-client";
import { createServiceDecider } from "../src/app.js";
import { parseConfig } from "../src/config/load.js";
import { createChecker } from "../src/decision/checker.js";
import type { HeaderList } from "../src/decision/decide.js";
import { createDecisionCache } from "../src/decision/decision-cache.js";
import { writeVerdict } from "../src/http/responses.js";
import type { HttpResponse } from "../src/http/uws.js";
import { createIdentityResolver } from "../src/identity/resolve.js";
import { createLogger } from "../src/log.js";
import { createMetrics } from "../src/metrics.js";
import type { PdpChecker } from "../src/pdp/batcher.js";
import { forwardAuthHeaders, hitRequests } from "./scenarios.js";
import { configYaml, serviceConfig } from "./servers/service.js";

const { values } = parseArgs({ options: { iterations: { type: "string", default: "500000" }, repeats: { type: "string", default: "10" } } });
const iterations = Number(values.iterations);
const repeats = Number(values.repeats);

// The `hit` row's config, as bench/run.ts writes it (the PDP address is never dialled here).
const config = parseConfig(configYaml(serviceConfig({ kind: "service", protocol: "auto", cache: { allowTtlMs: 600_000 } }, "127.0.0.1:1")), {
  baseDir: process.cwd(),
});

let seeding = true;
const pdp: PdpChecker = {
  // Only while seeding: every hit request is allowed by the benchmark policy (scenarios.ts).
  check: () => (seeding ? Promise.resolve({ allowed: true }) : Promise.reject(new Error("a hit request missed the cache"))),
  pending: () => 0,
  setAuthzenAvailable() {},
};
const metrics = createMetrics(new Registry());
const decide = createServiceDecider(config, {
  identity: createIdentityResolver(config.identity),
  checker: createChecker(createDecisionCache(config.cache), pdp, metrics),
  metrics,
  logger: createLogger(config.log.level),
});

// The bytes the load worker sends, as uWS lists them: lower-case names, Host and Connection first.
const requests: HeaderList[] = hitRequests().map((r) => [
  ["host", "127.0.0.1:8080"],
  ["connection", "keep-alive"],
  ...Object.entries(forwardAuthHeaders(r)).map(([name, value]) => [name.toLowerCase(), value] as const),
]);
for (const headers of requests) await decide(headers, "seed", performance.now());
seeding = false;

let calls = 0;
const res = {
  writeStatus: () => calls++,
  writeHeader: () => calls++,
  end: () => calls++,
} as unknown as HttpResponse;

/** A new string with the same text (the handler gets new strings from uWS on every request). */
const fresh = (s: string) => (" " + s).slice(1);

function copyHeaders(headers: HeaderList): HeaderList {
  const copy: Array<readonly [string, string]> = [];
  for (const [name, value] of headers) copy.push([fresh(name), fresh(value)]);
  return copy;
}

let n = 0;
function hit(headers: HeaderList): void {
  const copy = copyHeaders(headers);
  const id = `bench.${(n++).toString(36)}`;
  const verdict = decide(copy, id, performance.now());
  if (verdict instanceof Promise || verdict.status !== 200) throw new Error("a hit request was not answered 200 from the cache");
  writeVerdict(res, verdict, id);
}

let copies = 0;
function copyOnly(headers: HeaderList): void {
  copies += copyHeaders(headers).length;
}

/** µs per request of `fn` over the hit requests: the median of `repeats` timed loops. */
function measure(fn: (headers: HeaderList) => void): number {
  const perRequest: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) fn(requests[i % requests.length]!);
    perRequest.push(((performance.now() - t0) * 1000) / iterations);
  }
  return perRequest.sort((a, b) => a - b)[Math.floor(perRequest.length / 2)]!;
}

const total = measure(hit);
const copying = measure(copyOnly);
process.stdout.write(
  `hit path in-process: ${(total - copying).toFixed(2)} µs per request for decide() + writeVerdict() ` +
    `(${total.toFixed(2)} µs with the header copies, which alone took ${copying.toFixed(2)} µs; ` +
    `medians of ${repeats} × ${iterations} requests, ${calls} response calls, ${copies} headers copied)\n`,
);
