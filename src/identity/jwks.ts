/**
 * Key sets for JWT verification (SPEC §5.3 point 1): a JWKS read once from a file, or fetched
 * from a URL and kept fresh.
 *
 * Remote key set (`RemoteKeySet`):
 * - Fetched with node's http/https client, a hard timeout (`timeoutMs`, default 2 s) over the
 *   whole exchange, an optional CA (`jwksCa`), no redirects followed, at most 1 MiB of body.
 * - Initial load when created; on failure retried in the background with backoff (250 ms
 *   doubling, capped at 5 s). Until it has loaded once, `ready()` is false and `getKey` throws
 *   `KeysUnavailable` (the caller answers 503, never 401). A request that arrives while a fetch
 *   is in flight waits for it (bounded by the timeout) instead of failing at once.
 * - Refreshed every `refreshIntervalMs` (default 5 min). A failed refresh keeps the last good
 *   keys and is retried with backoff capped at 60 s.
 * - An unknown `kid` (no key matches) triggers at most ONE refetch per `unknownKidCooldownMs`
 *   (30 s) for the whole key set, whatever the `kid`; every caller that arrives while a fetch is
 *   in flight shares it. A burst of 1,000 unknown-kid tokens costs at most one fetch.
 * - A fetched set must be a JSON object with a `keys` list holding at least one usable public
 *   key (kty RSA, EC or OKP; `use` absent or "sig"); symmetric (`oct`) and private keys are
 *   dropped, and a set without usable keys counts as a failed fetch (the last good keys stay).
 *
 * Key selection inside a set is jose's `createLocalJWKSet` (kid, kty/crv from alg, the JWK's own
 * `alg` and `use`). A token without `kid` is accepted only when exactly one key of the set fits
 * its `alg`. jose refuses secret algorithms (HS*) against a JWK set, so the key set can never
 * serve as an HMAC secret.
 */
import { readFileSync } from "node:fs";
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import { createLocalJWKSet, errors, type CryptoKey, type FlattenedJWSInput, type JSONWebKeySet, type JWK, type JWSHeaderParameters, type LocalJWKSet } from "jose";

export type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

export interface KeySet {
  getKey: KeyResolver;
  /** True once keys have been loaded. */
  ready(): boolean;
  /** Resolves once keys have been loaded (never rejects; pending forever if they never load). */
  whenReady(): Promise<void>;
  close(): void;
}

/** The key set has never been loaded: the request cannot be judged (503, not 401). */
export class KeysUnavailable extends Error {
  constructor() {
    super("JWT key set not loaded yet");
    this.name = "KeysUnavailable";
  }
}

export type JwksLog = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;

const USABLE_KTY = new Set(["RSA", "EC", "OKP"]);
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/**
 * Validates a parsed JWKS document and keeps its usable public signature keys.
 * Throws (with a log-safe message) when it is not a key set or holds no usable key.
 */
export function sanitizeJwks(doc: unknown): { jwks: JSONWebKeySet; dropped: number } {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("not a JSON Web Key Set (expected an object)");
  const keys: unknown = (doc as Record<string, unknown>)["keys"];
  if (!Array.isArray(keys)) throw new Error('not a JSON Web Key Set (no "keys" list)');
  const kept: JWK[] = [];
  for (const key of keys) {
    if (typeof key !== "object" || key === null || Array.isArray(key)) continue;
    const k = key as Record<string, unknown>;
    if (typeof k["kty"] !== "string" || !USABLE_KTY.has(k["kty"])) continue;
    if (PRIVATE_MEMBERS.some((m) => Object.hasOwn(k, m))) continue;
    if (k["use"] !== undefined && k["use"] !== "sig") continue;
    if (k["kid"] !== undefined && typeof k["kid"] !== "string") continue;
    kept.push(k as JWK);
  }
  if (kept.length === 0) throw new Error(`the key set holds no usable public signature key (${keys.length} keys)`);
  return { jwks: { keys: kept }, dropped: keys.length - kept.length };
}

/** A key set read once from a file (jwksFile). Throws a descriptive Error when unusable. */
export function fileKeySet(path: string): KeySet {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new Error(`cannot read the JWKS file ${JSON.stringify(path)}: ${(error as Error).message}`);
  }
  let local: LocalJWKSet;
  try {
    local = createLocalJWKSet(sanitizeJwks(doc).jwks);
  } catch (error) {
    throw new Error(`the JWKS file ${JSON.stringify(path)} is unusable: ${(error as Error).message}`);
  }
  return {
    getKey: (header, token) => local(header, token),
    ready: () => true,
    whenReady: () => Promise.resolve(),
    close() {},
  };
}

/** Fetches and parses a JWKS document; rejects on any failure. */
export type JwksFetch = () => Promise<unknown>;

export interface HttpFetchOptions {
  /** PEM text of the CA(s) trusted for an https URL (in addition to nothing else: replaces the defaults). */
  readonly ca?: string;
  readonly timeoutMs: number;
  /** Largest accepted body; default 1 MiB. */
  readonly maxBytes?: number;
}

const DEFAULT_MAX_BYTES = 1024 * 1024;

/** GET `url` and parse its JSON body; status must be 200, redirects are not followed. */
export function httpJwksFetch(url: string, opts: HttpFetchOptions): { fetch: JwksFetch; abort(): void } {
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const pending = new Set<ClientRequest>();
  const fetch: JwksFetch = () =>
    new Promise((resolve, reject) => {
      const options: RequestOptions & { ca?: string } = {
        method: "GET",
        agent: false,
        headers: { accept: "application/jwk-set+json, application/json" },
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
      };
      const req = send(target, options, (res: IncomingMessage) => {
        res.on("error", (error) => fail(error));
        if (res.statusCode !== 200) {
          res.resume();
          req.destroy(new Error(`HTTP ${res.statusCode ?? "?"}`));
          return;
        }
        const declared = Number(res.headers["content-length"]);
        if (Number.isFinite(declared) && declared > maxBytes) {
          req.destroy(new Error(`response larger than ${maxBytes} bytes`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) req.destroy(new Error(`response larger than ${maxBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on("end", () => {
          if (size > maxBytes) return;
          finish();
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
          } catch {
            reject(new Error("response is not JSON"));
          }
        });
      });
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
      timer.unref();
      const finish = () => {
        clearTimeout(timer);
        pending.delete(req);
      };
      const fail = (error: Error) => {
        finish();
        reject(error);
      };
      pending.add(req);
      req.on("error", fail);
      req.end();
    });
  return {
    fetch,
    abort() {
      for (const req of pending) req.destroy(new Error("key set closed"));
    },
  };
}

export interface RemoteKeySetOptions {
  /** For logs only. */
  readonly url: string;
  readonly fetch: JwksFetch;
  /** Cancels fetches in flight on close(). */
  readonly abort?: () => void;
  readonly refreshIntervalMs?: number;
  /** Minimum time between two unknown-kid refetches of this key set. Default 30 s. */
  readonly unknownKidCooldownMs?: number;
  readonly retryMinMs?: number;
  /** Backoff cap while the set has never loaded. Default 5 s. */
  readonly retryMaxMs?: number;
  /** Backoff cap for failed refreshes once keys are loaded. Default 60 s. */
  readonly refreshRetryMaxMs?: number;
  readonly log?: JwksLog;
  /** Called after a fetch that changed the keys (not after the first load). */
  readonly onChange?: () => void;
  /** Monotonic milliseconds; default performance.now. */
  readonly now?: () => number;
}

export interface KeySetStats {
  /** Fetches started (initial, periodic, retries and unknown-kid refetches). */
  fetches: number;
  failures: number;
  unknownKidRefetches: number;
}

export class RemoteKeySet implements KeySet {
  readonly stats: KeySetStats = { fetches: 0, failures: 0, unknownKidRefetches: 0 };
  #keys: LocalJWKSet | undefined;
  #fingerprint: string | undefined;
  #inflight: Promise<void> | undefined;
  #lastUnknownKidRefetch = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #retryDelay: number;
  #closed = false;
  #readyWaiters: Array<() => void> = [];
  readonly #o: Required<Omit<RemoteKeySetOptions, "abort" | "log" | "onChange">> & Pick<RemoteKeySetOptions, "abort" | "log" | "onChange">;

  constructor(opts: RemoteKeySetOptions) {
    this.#o = {
      refreshIntervalMs: 300_000,
      unknownKidCooldownMs: 30_000,
      retryMinMs: 250,
      retryMaxMs: 5_000,
      refreshRetryMaxMs: 60_000,
      now: () => performance.now(),
      ...opts,
    };
    this.#retryDelay = this.#o.retryMinMs;
    void this.#refresh("initial");
  }

  ready(): boolean {
    return this.#keys !== undefined;
  }

  whenReady(): Promise<void> {
    if (this.#keys) return Promise.resolve();
    return new Promise((resolve) => this.#readyWaiters.push(resolve));
  }

  getKey: KeyResolver = async (header, token) => {
    if (!this.#keys) {
      if (this.#inflight) await this.#inflight;
      if (!this.#keys) throw new KeysUnavailable();
    }
    try {
      return await this.#keys(header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error;
      if (this.#inflight) {
        await this.#inflight; // share the fetch already under way
      } else {
        const now = this.#o.now();
        if (now - this.#lastUnknownKidRefetch < this.#o.unknownKidCooldownMs) throw error;
        this.#lastUnknownKidRefetch = now;
        this.stats.unknownKidRefetches++;
        await this.#refresh("unknown kid");
      }
      return this.#keys(header, token);
    }
  };

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#o.abort?.();
  }

  /** Starts a fetch unless one is in flight; resolves when it has ended (never rejects). */
  #refresh(reason: string): Promise<void> {
    this.#inflight ??= this.#fetchOnce(reason).finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetchOnce(reason: string): Promise<void> {
    if (this.#closed) return;
    this.stats.fetches++;
    try {
      const { jwks, dropped } = sanitizeJwks(await this.#o.fetch());
      const fingerprint = JSON.stringify(jwks);
      if (fingerprint !== this.#fingerprint) {
        const first = this.#keys === undefined;
        this.#keys = createLocalJWKSet(jwks);
        this.#fingerprint = fingerprint;
        this.#o.log?.("info", first ? "JWT key set loaded" : "JWT key set changed", {
          jwksUrl: this.#o.url,
          keys: jwks.keys.length,
          ...(dropped ? { droppedKeys: dropped } : {}),
          kids: jwks.keys.map((k) => k.kid ?? null),
          reason,
        });
        if (first) for (const wake of this.#readyWaiters.splice(0)) wake();
        else this.#o.onChange?.();
      }
      this.#retryDelay = this.#o.retryMinMs;
      this.#schedule(this.#o.refreshIntervalMs);
    } catch (error) {
      if (this.#closed) return; // aborted by close(): nothing to report or retry
      this.stats.failures++;
      const loaded = this.#keys !== undefined;
      this.#o.log?.(loaded ? "warn" : "error", loaded ? "JWT key set refresh failed; keeping the last good keys" : "JWT key set not loaded", {
        jwksUrl: this.#o.url,
        reason,
        err: (error as Error)?.message ?? String(error),
        retryInMs: this.#retryDelay,
      });
      this.#schedule(this.#retryDelay);
      this.#retryDelay = Math.min(this.#retryDelay * 2, loaded ? this.#o.refreshRetryMaxMs : this.#o.retryMaxMs);
    }
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#refresh("scheduled");
    }, delayMs);
    this.#timer.unref();
  }
}
