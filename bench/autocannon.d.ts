/**
 * The part of autocannon 9's programmatic API the harness uses (the package ships no types).
 * See node_modules/autocannon/README.md. Per-request hooks: `setupRequest(req, context)` builds
 * each request (return the request to send), `onResponse(status, body, context, headers)` sees
 * its answer; `context` is per connection and reset before each `setupRequest` of a one-entry
 * `requests` list, so with pipelining 1 it carries one request's expectations to its answer.
 */
declare module "autocannon" {
  import type { EventEmitter } from "node:events";

  export interface RequestParams {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }

  export interface Request extends RequestParams {
    setupRequest?: (req: RequestParams, context: Record<string, unknown>) => RequestParams | null | undefined;
    onResponse?: (status: number, body: string, context: Record<string, unknown>, headers: Record<string, string | string[]>) => void;
  }

  export interface Options {
    url: string;
    connections?: number;
    pipelining?: number;
    /** Seconds. */
    duration?: number;
    /** Total requests over all connections (instead of duration). */
    amount?: number;
    /** Seconds before a request counts as timed out. Default 10. */
    timeout?: number;
    requests?: Request[];
    overallRate?: number;
    /** Called with every client (connection) before it connects. */
    setupClient?: (client: unknown) => void;
    excludeErrorStats?: boolean;
    sampleInt?: number;
  }

  export interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    total: number;
    p50: number;
    p99: number;
    p99_9?: number;
  }

  export interface Result {
    errors: number;
    timeouts: number;
    non2xx: number;
    resets: number;
    duration: number;
    totalCompletedRequests: number;
    statusCodeStats: Record<string, { count: number }>;
    latency: Histogram;
    requests: Histogram;
  }

  export interface Instance extends EventEmitter {
    stop(): void;
  }

  function autocannon(opts: Options, cb: (err: Error | null, result: Result) => void): Instance;
  export default autocannon;
}
