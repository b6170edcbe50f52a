/**
 * Counters read from Prometheus text: the PDP's own (`/_cerbos/metrics` on its HTTP unix
 * socket) and, when the service exports them, the service's cache counters (admin `/metrics`).
 */
import { request } from "node:http";
import { performance } from "node:perf_hooks";
import { setTimeout as delay } from "node:timers/promises";
import { cerbosHttpGet } from "../src/pdp/cerbos-binary.js";

export const PDP_METHODS = {
  CheckResources: "cerbos.svc.v1.CerbosService/CheckResources",
  AccessEvaluationBatch: "authzen.authorization.v1.AuthorizationService/AccessEvaluationBatch",
} as const;

/**
 * Sums every sample of `name` whose labels include all of `labels` (`{}`: every sample).
 * Summing matters: `rpc_server_call_duration_seconds_count` has one line per status code.
 */
export function sumSamples(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    let labelText = "";
    let valueText: string;
    if (rest.startsWith("{")) {
      const end = rest.indexOf("}");
      labelText = rest.slice(1, end);
      valueText = rest.slice(end + 1);
    } else if (rest.startsWith(" ")) {
      valueText = rest;
    } else {
      continue; // a longer metric name with the same prefix
    }
    const have = labelText.split(",");
    if (wanted.every((w) => have.includes(w))) total += Number(valueText.trim().split(" ")[0]);
  }
  return total;
}

export interface PdpCounters {
  /** CheckResources + AccessEvaluationBatch calls served, every status. */
  readonly calls: number;
  readonly callsByMethod: Record<keyof typeof PDP_METHODS, number>;
  /** Checks (resource × principal inputs) the engine evaluated: cerbos_dev_engine_check_batch_size_sum. */
  readonly checks: number;
}

export async function readPdpCounters(httpSocket: string): Promise<PdpCounters> {
  const res = await cerbosHttpGet(httpSocket, "/_cerbos/metrics");
  if (res.status !== 200) throw new Error(`GET /_cerbos/metrics answered ${res.status}`);
  const callsByMethod = {
    CheckResources: sumSamples(res.body, "rpc_server_call_duration_seconds_count", { rpc_method: PDP_METHODS.CheckResources }),
    AccessEvaluationBatch: sumSamples(res.body, "rpc_server_call_duration_seconds_count", { rpc_method: PDP_METHODS.AccessEvaluationBatch }),
  };
  return {
    calls: callsByMethod.CheckResources + callsByMethod.AccessEvaluationBatch,
    callsByMethod,
    checks: sumSamples(res.body, "cerbos_dev_engine_check_batch_size_sum"),
  };
}

/** The counters once the call count has not moved for `quietMs` (calls still draining after a run). */
export async function settledPdpCounters(httpSocket: string, quietMs = 200, timeoutMs = 10_000): Promise<PdpCounters> {
  const deadline = performance.now() + timeoutMs;
  let last = await readPdpCounters(httpSocket);
  let since = performance.now();
  while (performance.now() - since < quietMs) {
    if (performance.now() > deadline) throw new Error(`PDP call count still moving after ${timeoutMs} ms`);
    await delay(25);
    const now = await readPdpCounters(httpSocket);
    if (now.calls !== last.calls || now.checks !== last.checks) since = performance.now();
    last = now;
  }
  return last;
}

export interface ServiceCounters {
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly cacheEntries: number;
  /** prom-client's default process metrics, when exported. */
  readonly heapUsedMb?: number;
  readonly heapTotalMb?: number;
  /** `nodejs_active_handles_total` and `process_resident_memory_bytes` (MB), when exported. */
  readonly activeHandles?: number;
  readonly processRssMb?: number;
  /** The service's own PDP calls (`cerbos_forwardauth_pdp_requests_total`), all codes and not "OK". */
  readonly pdpCalls: number;
  readonly pdpFailedCalls: number;
}

/** The service's cache counters from its admin /metrics, or undefined when it does not export them. */
export async function readServiceCounters(adminPort: number | undefined): Promise<ServiceCounters | undefined> {
  if (adminPort === undefined) return undefined;
  let text: string;
  try {
    text = await httpGet(adminPort, "/metrics");
  } catch {
    return undefined;
  }
  if (!text.includes("cerbos_forwardauth_cache_requests_total")) return undefined;
  return {
    cacheHits: sumSamples(text, "cerbos_forwardauth_cache_requests_total", { result: "hit" }),
    cacheMisses: sumSamples(text, "cerbos_forwardauth_cache_requests_total", { result: "miss" }),
    cacheEntries: sumSamples(text, "cerbos_forwardauth_cache_entries"),
    ...(text.includes("nodejs_heap_size_used_bytes") ? { heapUsedMb: sumSamples(text, "nodejs_heap_size_used_bytes") / 2 ** 20 } : {}),
    ...(text.includes("nodejs_heap_size_total_bytes") ? { heapTotalMb: sumSamples(text, "nodejs_heap_size_total_bytes") / 2 ** 20 } : {}),
    ...(text.includes("nodejs_active_handles_total") ? { activeHandles: sumSamples(text, "nodejs_active_handles_total") } : {}),
    ...(text.includes("process_resident_memory_bytes") ? { processRssMb: sumSamples(text, "process_resident_memory_bytes") / 2 ** 20 } : {}),
    pdpCalls: sumSamples(text, "cerbos_forwardauth_pdp_requests_total"),
    pdpFailedCalls: sumSamples(text, "cerbos_forwardauth_pdp_requests_total") - sumSamples(text, "cerbos_forwardauth_pdp_requests_total", { code: "OK" }),
  };
}

function httpGet(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: "GET", agent: false, timeout: 2000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString("utf8")) : reject(new Error(`GET ${path}: ${res.statusCode}`))));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}
