/**
 * The benchmark scenarios (SPEC §11, issue 4) and the request streams they send.
 *
 * Every generated request carries the status the benchmark policy (bench/policies/route.yaml)
 * must give it, computed from the request itself by `expectedStatus`: the load worker checks
 * each answer against it, so a wrong or missing decision can never count as throughput.
 *
 * Streams are deterministic for a given seed, except for a per-process nonce in the "unique"
 * ids so that no two runs (warm-up and measurement, or two scenarios) share a resource.
 */

export type Protocol = "auto" | "checkresources" | "authzen";

/** What serves the requests. */
export type ServerSpec =
  | { readonly kind: "hello" }
  | { readonly kind: "naive" }
  | {
      readonly kind: "service";
      readonly protocol: Protocol;
      /** cache.* keys written into the generated config; absent keys keep the service's defaults. */
      readonly cache?: { readonly maxEntries?: number; readonly allowTtlMs?: number; readonly denyTtlMs?: number };
    }
  /** pdp-direct: no server, the load worker talks to the PDP itself. */
  | { readonly kind: "none" };

/** Request streams (see `createStream`). */
export type Workload = "hit" | "miss-shared" | "miss-unique" | "mixed" | "memory";

export type LoadSpec =
  | {
      readonly kind: "http";
      readonly workload: Workload;
      /** Offered load in requests/s, paced per connection; absent: as fast as the server answers. */
      readonly rate?: number;
    }
  | { readonly kind: "pdp"; readonly concurrency: number; readonly resourcesPerCall: number };

export interface Scenario {
  /** Row name, e.g. "miss-unique/auto". */
  readonly name: string;
  /** `--scenario` also accepts the group: "miss-unique" selects every protocol row. */
  readonly group: string;
  readonly description: string;
  readonly server: ServerSpec;
  readonly load: LoadSpec;
  /** Seconds of the same load before the measurement (JIT, connections, cache); answers are checked too. */
  readonly warmupSec: number;
  /** "memory": fill the cache with `entries` distinct decisions instead of a timed run. */
  readonly measure: { readonly kind: "duration" } | { readonly kind: "memory"; readonly entries: number };
}

/** Fixed offered rate of the `@rate` rows, requests/s (`--rate`). */
export const DEFAULT_RATE = 2_000;
/** Decisions cached by the memory row (`--smoke` uses fewer: it makes no claims). */
export const MEMORY_ENTRIES = 100_000;
export const SMOKE_MEMORY_ENTRIES = 5_000;

/** Principals of the miss-shared stream and of pdp-direct. */
export const SHARED_PRINCIPALS = 20;
/** The mixed stream: Zipf over this many principals and paths, with these exponents. */
export const MIXED = { principals: 1_000, paths: 10_000, principalExponent: 1.5, pathExponent: 1.7, denyShare: 0.1 } as const;
/** The hit stream: principals × paths distinct requests, all allowed. */
export const HIT = { principals: 10, paths: 10 } as const;
/** Every tenth request of the miss streams and of pdp-direct is a denial. */
export const DENY_EVERY = 10;

export function scenarios(opts: { rate: number; memoryEntries: number }): Scenario[] {
  const service = (protocol: Protocol, cache?: { maxEntries?: number; allowTtlMs?: number }): ServerSpec =>
    cache ? { kind: "service", protocol, cache } : { kind: "service", protocol };
  const timed = { kind: "duration" } as const;
  const HIT_CACHE = { allowTtlMs: 600_000 };
  const list: Scenario[] = [
    {
      name: "hello",
      group: "hello",
      description: "bare uWebSockets.js server answering 200: the HTTP-layer ceiling (same requests as hit)",
      server: { kind: "hello" },
      load: { kind: "http", workload: "hit" },
      warmupSec: 1,
      measure: timed,
    },
    {
      name: "naive",
      group: "naive",
      description: "node:http + one @cerbos/grpc CheckResources per request, no cache, no batching (miss-shared stream)",
      server: { kind: "naive" },
      load: { kind: "http", workload: "miss-shared" },
      warmupSec: 1,
      measure: timed,
    },
    {
      name: "hit",
      group: "hit",
      description: `${HIT.principals * HIT.paths} distinct allowed requests, all cache hits after warm-up`,
      // A TTL longer than the run: with the default 10 s, every entry expires once mid-run and its
      // next request waits for the PDP, which is a miss, not what this row measures.
      server: service("auto", HIT_CACHE),
      load: { kind: "http", workload: "hit" },
      warmupSec: 1,
      measure: timed,
    },
    {
      name: "miss-shared",
      group: "miss-shared",
      description: `${SHARED_PRINCIPALS} principals, a new path on every request (no cache hits), 10 % denials`,
      server: service("auto"),
      load: { kind: "http", workload: "miss-shared" },
      warmupSec: 1,
      measure: timed,
    },
    {
      // Issue 5: auto must not lose to CheckResources alone where one principal's checks batch.
      name: "miss-shared/checkresources",
      group: "miss-shared",
      description: `the miss-shared stream with pdp.protocol checkresources (AuthZEN off)`,
      server: service("checkresources"),
      load: { kind: "http", workload: "miss-shared" },
      warmupSec: 1,
      measure: timed,
    },
    ...(["auto", "checkresources", "authzen"] as const).map(
      (protocol): Scenario => ({
        name: `miss-unique/${protocol}`,
        group: "miss-unique",
        description: `a new principal and a new path on every request, 10 % denials, pdp.protocol ${protocol}`,
        server: service(protocol),
        load: { kind: "http", workload: "miss-unique" },
        warmupSec: 1,
        measure: timed,
      }),
    ),
    ...(["auto", "checkresources"] as const).map(
      (protocol): Scenario => ({
        name: `mixed/${protocol}`,
        group: "mixed",
        description:
          `Zipf principals (${MIXED.principals}, s=${MIXED.principalExponent}) × paths (${MIXED.paths}, s=${MIXED.pathExponent}), ` +
          `${MIXED.denyShare * 100} % denials, pdp.protocol ${protocol}`,
        server: service(protocol),
        load: { kind: "http", workload: "mixed" },
        warmupSec: 2,
        measure: timed,
      }),
    ),
    {
      name: "pdp-direct",
      group: "pdp-direct",
      description: "the PDP driven directly: CheckResources with 50 resources per call, 8 calls in flight (req/s = checks/s)",
      server: { kind: "none" },
      load: { kind: "pdp", concurrency: 8, resourcesPerCall: 50 },
      warmupSec: 1,
      measure: timed,
    },
    {
      name: "hello@rate",
      group: "rate",
      description: `hello at a fixed offered rate of ${opts.rate} requests/s`,
      server: { kind: "hello" },
      load: { kind: "http", workload: "hit", rate: opts.rate },
      warmupSec: 1,
      measure: timed,
    },
    {
      name: "hit@rate",
      group: "rate",
      description: `hit at a fixed offered rate of ${opts.rate} requests/s`,
      server: service("auto", HIT_CACHE),
      load: { kind: "http", workload: "hit", rate: opts.rate },
      warmupSec: 1,
      measure: timed,
    },
    {
      name: `rss${opts.memoryEntries >= 1000 ? `${opts.memoryEntries / 1000}k` : opts.memoryEntries}`,
      group: "memory",
      description: `RSS of the service holding ${opts.memoryEntries} cached decisions (distinct allowed requests)`,
      server: service("auto", { maxEntries: Math.max(opts.memoryEntries, 100_000), allowTtlMs: 3_600_000 }),
      load: { kind: "http", workload: "memory" },
      warmupSec: 0,
      measure: { kind: "memory", entries: opts.memoryEntries },
    },
  ];
  return list;
}

/**
 * Picks scenarios by name or group ("miss-unique" = all its protocol rows, "rate", "memory";
 * "rss100k" also works). Unknown names throw with the list of known ones.
 */
export function selectScenarios(all: readonly Scenario[], names: readonly string[]): Scenario[] {
  if (names.length === 0) return [...all];
  const wanted = new Set<string>();
  for (const name of names) {
    const hits = all.filter((s) => s.name === name || s.group === name);
    if (hits.length === 0) {
      const known = [...new Set(all.flatMap((s) => [s.name, s.group]))].join(", ");
      throw new Error(`unknown scenario "${name}" (known: ${known})`);
    }
    for (const s of hits) wanted.add(s.name);
  }
  return all.filter((s) => wanted.has(s.name)); // always in the canonical order
}

// ---------------------------------------------------------------------------------------------
// Request streams

export interface BenchRequest {
  readonly principal: string;
  /** Remote-Groups header value. */
  readonly roles: string;
  readonly method: "GET";
  /** X-Forwarded-Uri (a path, no query). */
  readonly path: string;
  readonly expected: 200 | 403;
}

export const FORWARDED_HOST = "app.example";

/** The outcome bench/policies/route.yaml gives: role user reads /api/*, everything else is denied. */
export function expectedStatus(method: string, path: string, roles: string): 200 | 403 {
  const isUser = roles.split(",").some((r) => r.trim() === "user");
  return isUser && (method === "GET" || method === "HEAD") && path.startsWith("/api/") ? 200 : 403;
}

/** The ForwardAuth headers a gateway would send for `r` (Traefik style). */
export function forwardAuthHeaders(r: BenchRequest): Record<string, string> {
  return {
    "X-Forwarded-Method": r.method,
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Host": FORWARDED_HOST,
    "X-Forwarded-Uri": r.path,
    "Remote-User": r.principal,
    "Remote-Groups": r.roles,
  };
}

function request(principal: string, path: string): BenchRequest {
  return { principal, roles: "user", method: "GET", path, expected: expectedStatus("GET", path, "user") };
}

/** The fixed request set of the hit stream (hello sends the same bytes). */
export function hitRequests(): BenchRequest[] {
  const out: BenchRequest[] = [];
  for (let p = 0; p < HIT.principals; p++) {
    for (let k = 0; k < HIT.paths; k++) out.push(request(`hit-u${p}`, `/api/hit/${k}`));
  }
  return out;
}

export interface Stream {
  next(): BenchRequest;
}

/** A stream of requests for `workload`; `nonce` makes "unique" ids unique across processes. */
export function createStream(workload: Workload, seed: number, nonce: string): Stream {
  const random = mulberry32(seed);
  let i = 0;
  const allowOrDeny = (n: number) => (n % DENY_EVERY === DENY_EVERY - 1 ? "private" : "api");
  switch (workload) {
    case "hit": {
      const all = hitRequests();
      return { next: () => all[i++ % all.length]! };
    }
    case "miss-shared":
      return {
        next() {
          const n = i++;
          const principal = `shared-u${Math.floor(random() * SHARED_PRINCIPALS)}`;
          return request(principal, `/${allowOrDeny(n)}/ms/${nonce}/${n}`);
        },
      };
    case "miss-unique":
      return {
        next() {
          const n = i++;
          return request(`unique-${nonce}-${n}`, `/${allowOrDeny(n)}/mu/${nonce}/${n}`);
        },
      };
    case "mixed": {
      const principal = zipf(MIXED.principals, MIXED.principalExponent, random);
      const path = zipf(MIXED.paths, MIXED.pathExponent, random);
      return {
        next() {
          const u = principal();
          const k = path();
          const prefix = random() < MIXED.denyShare ? "private" : "api";
          return request(`mixed-u${u}`, `/${prefix}/mx/${k}`);
        },
      };
    }
    case "memory":
      // 100 paths per principal, consecutive requests share a principal (as a user's page load
      // would); request n is distinct from every other n. All allowed.
      return {
        next() {
          const n = i++;
          return request(`mem-${nonce}-u${Math.floor(n / 100)}`, `/api/mem/${n % 100}`);
        },
      };
  }
}

/** A principal and its resources for one pdp-direct call; `expected[k]` is resource k's outcome. */
export interface PdpBatch {
  readonly principal: string;
  readonly ids: string[];
  readonly expected: boolean[];
}

export function createPdpBatches(resourcesPerCall: number, nonce: string): { next(): PdpBatch } {
  let call = 0;
  let n = 0;
  return {
    next() {
      const principal = `shared-u${call++ % SHARED_PRINCIPALS}`;
      const ids: string[] = [];
      const expected: boolean[] = [];
      for (let k = 0; k < resourcesPerCall; k++, n++) {
        const path = `/${n % DENY_EVERY === DENY_EVERY - 1 ? "private" : "api"}/pd/${nonce}/${n}`;
        ids.push(path);
        expected.push(expectedStatus("GET", path, "user") === 200);
      }
      return { principal, ids, expected };
    },
  };
}

/** Small seeded PRNG (mulberry32): uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Zipf sampler over ranks 0..n-1 (rank 0 the most frequent), weight 1/(rank+1)^s. */
export function zipf(n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    total += 1 / Math.pow(k + 1, s);
    cdf[k] = total;
  }
  for (let k = 0; k < n; k++) cdf[k] = cdf[k]! / total;
  return () => {
    const r = random();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! < r) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}
