/**
 * Batching mechanics (SPEC §6, STYLE example 7: DataLoader's contract), each rule a named test.
 *
 * A stub pool stands in for the PDP here, and only for mechanics: grouping, splitting, ordering,
 * failure propagation and mismatch handling. It "allows" exactly the actions a resource lists in
 * its own `attr.allow`, so every waiter can tell whether it got the answer for its own resource.
 * Real allow/deny decisions are tested against the real PDP (test/integration/engine.test.ts).
 *
 * These are the CheckResources rules, so the batcher runs with `protocol: "checkresources"`; the
 * stub refuses (and records) any AuthZEN batch.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { PdpUnavailable } from "../../src/errors.js";
import type { Check, Decision, Principal, Resource } from "../../src/model.js";
import { createBatcher, MAX_HOLD_MS, type BatcherOptions } from "../../src/pdp/batcher.js";
import type { ResourcesRequest, ResourcesResponse, ResourceResult } from "../../src/pdp/pool.js";

// ---------------------------------------------------------------------------------------------
// Helpers

const alice: Principal = { id: "alice", roles: ["user"], attr: {} };
const bob: Principal = { id: "bob", roles: ["user"], attr: {} };

/** A resource whose `attr.allow` lists the actions the stub allows on it. */
const res = (id: string, allow: string[] = [], kind = "doc"): Resource => ({ kind, id, attr: { allow } });
const chk = (principal: Principal, resource: Resource, action = "read", token?: string): Check => ({
  principal,
  resource,
  action,
  ...(token !== undefined ? { token } : {}),
});

/** The stub's rule, applied to what was actually sent. */
function echo(req: ResourcesRequest, callId = "call"): ResourcesResponse {
  return {
    callId,
    results: req.entries.map((e): ResourceResult => ({
      kind: e.resource.kind,
      id: e.resource.id,
      allowed: (action) => (e.resource.attr["allow"] as string[] | undefined)?.includes(action) === true,
    })),
  };
}

/** `n`: 1 for the first call, 2 for the second … */
type Answer = (req: ResourcesRequest, n: number) => ResourcesResponse | Promise<ResourcesResponse>;

/** Records every call; answers with `answer` (default: echo). */
function stubPool(answer: Answer = (req) => echo(req)) {
  const calls: ResourcesRequest[] = [];
  const authzenCalls: unknown[] = [];
  return {
    calls,
    authzenCalls,
    checkResources(req: ResourcesRequest): Promise<ResourcesResponse> {
      const n = calls.push(req);
      return Promise.resolve().then(() => answer(req, n));
    },
    evaluateBatch(evaluations: readonly unknown[]): Promise<Array<boolean | undefined>> {
      authzenCalls.push(evaluations);
      return Promise.reject(new PdpUnavailable("not used in these tests", "UNIMPLEMENTED"));
    },
  };
}

function batcherOf(pool: ReturnType<typeof stubPool>, opts: Partial<BatcherOptions> = {}) {
  return createBatcher(pool, { maxResourcesPerRequest: 50, maxActionsPerResource: 50, maxDelayMs: 0, maxCallsInFlight: 0, maxPendingChecks: 10_000, protocol: "checkresources", ...opts });
}

/** What the stub answers for a check: its own resource's allow list. */
const expected = (c: Check) => (c.resource.attr["allow"] as string[]).includes(c.action);

const ids = (req: ResourcesRequest) => req.entries.map((e) => e.resource.id);

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

// ---------------------------------------------------------------------------------------------

describe("batcher: grouping", () => {
  it("checks of one principal in one event-loop turn become one call", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const checks = Array.from({ length: 10 }, (_, i) => chk(alice, res(`r${i}`, i % 3 ? ["read"] : [])));
    const answers = await Promise.all(checks.map((c) => b.check(c)));
    expect(pool.calls).toHaveLength(1);
    expect(pool.calls[0]!.principal).toEqual(alice);
    expect(ids(pool.calls[0]!)).toEqual(checks.map((c) => c.resource.id));
    expect(answers.map((d) => d.allowed)).toEqual(checks.map(expected));
  });

  it("checks of different principals go in separate calls", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const carol: Principal = { id: "alice", roles: ["admin"], attr: {} }; // same id, other roles: another principal
    const dave: Principal = { id: "alice", roles: ["user"], attr: { tenant: "acme" } }; // same id and roles, other attr
    await Promise.all([alice, bob, carol, dave, alice, bob].map((p, i) => b.check(chk(p, res(`r${i}`)))));
    expect(pool.calls).toHaveLength(4);
    expect(pool.calls.map((c) => c.principal)).toEqual([alice, bob, carol, dave]);
    expect(pool.calls.map(ids)).toEqual([["r0", "r4"], ["r1", "r5"], ["r2"], ["r3"]]);
    expect(pool.authzenCalls).toHaveLength(0);
  });

  it("principals equal up to role order and duplicates share one call", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const p1: Principal = { id: "alice", roles: ["user", "admin"], attr: { a: 1, b: 2 } };
    const p2: Principal = { id: "alice", roles: ["admin", "user", "user"], attr: { b: 2, a: 1 } };
    await Promise.all([b.check(chk(p1, res("r1"))), b.check(chk(p2, res("r2")))]);
    expect(pool.calls).toHaveLength(1);
    expect(ids(pool.calls[0]!)).toEqual(["r1", "r2"]);
  });

  it("the same principal with different forwarded tokens goes in separate calls", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    await Promise.all([
      b.check(chk(alice, res("r1"), "read", "token-1")),
      b.check(chk(alice, res("r2"), "read", "token-2")),
      b.check(chk(alice, res("r3"), "read")),
      b.check(chk(alice, res("r4"), "read", "token-1")),
      b.check(chk(alice, res("r5"), "read", "")),
    ]);
    expect(pool.calls.map((c) => [c.token, ids(c)])).toEqual([
      ["token-1", ["r1", "r4"]],
      ["token-2", ["r2"]],
      [undefined, ["r3"]],
      ["", ["r5"]],
    ]);
  });

  it("checks of a later turn go in a later call", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const first = b.check(chk(alice, res("r1")));
    await new Promise<void>((r) => setImmediate(r)); // the first turn's flush
    const second = b.check(chk(alice, res("r2")));
    await Promise.all([first, second]);
    expect(pool.calls.map(ids)).toEqual([["r1"], ["r2"]]);
  });
});

describe("batcher: order and position", () => {
  it("entries keep the order of the checks and results are matched by position", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    // Allow lists differ per resource, so a result given to the wrong waiter shows.
    const checks = Array.from({ length: 30 }, (_, i) => chk(alice, res(`r${(i * 7) % 30}`, i % 2 ? ["read"] : ["write"]), i % 3 ? "read" : "write"));
    const answers = await Promise.all(checks.map((c) => b.check(c)));
    expect(ids(pool.calls[0]!)).toEqual(checks.map((c) => c.resource.id));
    expect(answers.map((d) => d.allowed)).toEqual(checks.map(expected));
    expect(answers.every((d) => d.callId === "call")).toBe(true);
  });

  it("the same kind and id with different attributes are different entries, each answered for itself", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const [yes, no] = await Promise.all([b.check(chk(alice, res("1", ["read"]))), b.check(chk(alice, res("1", [])))]);
    expect(pool.calls).toHaveLength(1);
    expect(pool.calls[0]!.entries).toHaveLength(2);
    expect([yes!.allowed, no!.allowed]).toEqual([true, false]);
  });
});

describe("batcher: splitting", () => {
  it.each([
    [1, 50],
    [49, 50],
    [50, 50],
    [51, 50],
    [100, 50],
    [120, 50],
    [7, 1],
    [10, 3],
  ])("%i resources with maxResourcesPerRequest %i → ceil(n/max) calls, order kept across them", async (n, max) => {
    const pool = stubPool();
    const b = batcherOf(pool, { maxResourcesPerRequest: max });
    const checks = Array.from({ length: n }, (_, i) => chk(alice, res(`r${i}`, i % 2 ? ["read"] : [])));
    const answers = await Promise.all(checks.map((c) => b.check(c)));
    expect(pool.calls).toHaveLength(Math.ceil(n / max));
    for (const call of pool.calls) expect(call.entries.length).toBeLessThanOrEqual(max);
    expect(pool.calls.flatMap(ids)).toEqual(checks.map((c) => c.resource.id));
    expect(answers.map((d) => d.allowed)).toEqual(checks.map(expected));
    expect(b.pending()).toBe(0);
  });

  it("several actions on one resource are merged into one entry", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const doc = res("1", ["read", "update"]);
    const checks = ["read", "update", "delete"].map((a) => chk(alice, doc, a));
    const answers = await Promise.all(checks.map((c) => b.check(c)));
    expect(pool.calls).toHaveLength(1);
    expect(pool.calls[0]!.entries).toEqual([{ resource: doc, actions: ["read", "update", "delete"] }]);
    expect(answers.map((d) => d.allowed)).toEqual([true, true, false]);
  });

  it("the same action asked twice is sent once and answers both waiters", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const doc = res("1", ["read"]);
    const answers = await Promise.all([b.check(chk(alice, doc)), b.check(chk(alice, doc)), b.check(chk(alice, doc, "update"))]);
    expect(pool.calls[0]!.entries).toEqual([{ resource: doc, actions: ["read", "update"] }]);
    expect(answers.map((d) => d.allowed)).toEqual([true, true, false]);
  });

  it("actions beyond maxActionsPerResource are split into further entries of the same resource", async () => {
    const pool = stubPool();
    const b = batcherOf(pool, { maxActionsPerResource: 2 });
    const doc = res("1", ["a1", "a3", "a5"]);
    const actions = ["a1", "a2", "a3", "a4", "a5"];
    const answers = await Promise.all(actions.map((a) => b.check(chk(alice, doc, a))));
    expect(pool.calls).toHaveLength(1);
    expect(pool.calls[0]!.entries.map((e) => e.actions)).toEqual([["a1", "a2"], ["a3", "a4"], ["a5"]]);
    expect(answers.map((d) => d.allowed)).toEqual([true, false, true, false, true]);
  });

  it("entries from split actions count toward maxResourcesPerRequest", async () => {
    const pool = stubPool();
    const b = batcherOf(pool, { maxActionsPerResource: 2, maxResourcesPerRequest: 2 });
    const doc = res("1", ["a1"]);
    const answers = await Promise.all(["a1", "a2", "a3", "a4", "a5"].map((a) => b.check(chk(alice, doc, a))));
    expect(pool.calls.map((c) => c.entries.map((e) => e.actions))).toEqual([[["a1", "a2"], ["a3", "a4"]], [["a5"]]]);
    expect(answers.map((d) => d.allowed)).toEqual([true, false, false, false, false]);
  });

  it("onBatch observes the checks carried by each call", async () => {
    const seen: number[] = [];
    const pool = stubPool();
    const b = batcherOf(pool, { maxResourcesPerRequest: 2, onBatch: (n) => seen.push(n) });
    const doc = res("1");
    await Promise.all([b.check(chk(alice, doc, "a")), b.check(chk(alice, doc, "b")), b.check(chk(alice, res("2"))), b.check(chk(alice, res("3")))]);
    expect(seen).toEqual([3, 1]);
  });
});

describe("batcher: failures", () => {
  it("a failed call rejects every waiter — none hangs", async () => {
    const failure = new PdpUnavailable("PDP call failed: UNAVAILABLE", "UNAVAILABLE");
    const pool = stubPool(() => Promise.reject(failure));
    const b = batcherOf(pool);
    const doc = res("x");
    const checks = [...Array.from({ length: 60 }, (_, i) => chk(alice, res(`r${i}`))), chk(alice, doc, "a"), chk(alice, doc, "b"), chk(alice, doc, "a")];
    const settled = await Promise.allSettled(checks.map((c) => b.check(c)));
    expect(settled).toHaveLength(checks.length);
    for (const s of settled) expect(s).toEqual({ status: "rejected", reason: failure });
    expect(pool.calls).toHaveLength(2);
    expect(b.pending()).toBe(0);
  });

  it("only the waiters of the failed call reject when a group is split", async () => {
    const failure = new PdpUnavailable("deadline", "DEADLINE_EXCEEDED");
    const pool = stubPool((req, n) => (n === 2 ? Promise.reject(failure) : echo(req)));
    const b = batcherOf(pool, { maxResourcesPerRequest: 10 });
    const checks = Array.from({ length: 25 }, (_, i) => chk(alice, res(`r${i}`, ["read"])));
    const settled = await Promise.allSettled(checks.map((c) => b.check(c)));
    expect(settled.map((s) => s.status)).toEqual([...Array(10).fill("fulfilled"), ...Array(10).fill("rejected"), ...Array(5).fill("fulfilled")]);
    expect(b.pending()).toBe(0);
  });

  it("a failure that is not a PdpUnavailable (or a synchronous throw) still rejects every waiter with PdpUnavailable", async () => {
    const throwing = {
      ...stubPool(),
      checkResources(): Promise<ResourcesResponse> {
        throw new TypeError("cannot read properties of undefined");
      },
    };
    const b = createBatcher(throwing, { maxResourcesPerRequest: 50, maxActionsPerResource: 50, maxDelayMs: 0, maxCallsInFlight: 0, maxPendingChecks: 100, protocol: "checkresources" });
    const settled = await Promise.allSettled([b.check(chk(alice, res("1"))), b.check(chk(alice, res("2")))]);
    for (const s of settled) {
      expect(s.status).toBe("rejected");
      expect((s as PromiseRejectedResult).reason).toBeInstanceOf(PdpUnavailable);
    }
    expect(b.pending()).toBe(0);
  });

  it("INVALID_ARGUMENT for a batch is retried item by item: only the bad item rejects", async () => {
    // The stub refuses any call that carries a resource with an empty id, as the PDP does.
    const invalid = () => new PdpUnavailable("PDP call failed: INVALID_ARGUMENT", "INVALID_ARGUMENT");
    const pool = stubPool((req) => (req.entries.some((e) => e.resource.id === "") ? Promise.reject(invalid()) : echo(req)));
    const b = batcherOf(pool);
    const good = res("1", ["read"]);
    const checks = [chk(alice, good), chk(alice, res("", ["read"])), chk(alice, good, "update"), chk(alice, res("2", ["update"]), "update")];
    const settled = await Promise.allSettled(checks.map((c) => b.check(c)));
    expect(settled[0]).toEqual({ status: "fulfilled", value: { allowed: true, callId: "call" } });
    expect(settled[1]!.status).toBe("rejected");
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
    expect(settled[2]).toEqual({ status: "fulfilled", value: { allowed: false, callId: "call" } });
    expect(settled[3]).toEqual({ status: "fulfilled", value: { allowed: true, callId: "call" } });
    // One batch, then one call per (resource, action).
    expect(pool.calls).toHaveLength(1 + 4);
    expect(pool.calls.slice(1).map((c) => c.entries.map((e) => [e.resource.id, ...e.actions]))).toEqual([[["1", "read"]], [["1", "update"]], [["", "read"]], [["2", "update"]]]);
    expect(b.pending()).toBe(0);
  });

  it("INVALID_ARGUMENT for a single check is not retried", async () => {
    const pool = stubPool(() => Promise.reject(new PdpUnavailable("bad", "INVALID_ARGUMENT")));
    const b = batcherOf(pool);
    await expect(b.check(chk(alice, res("")))).rejects.toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
    expect(pool.calls).toHaveLength(1);
    expect(b.pending()).toBe(0);
  });

  it("other errors for a batch are not retried item by item", async () => {
    const pool = stubPool(() => Promise.reject(new PdpUnavailable("down", "UNAVAILABLE")));
    const b = batcherOf(pool);
    await Promise.allSettled([b.check(chk(alice, res("1"))), b.check(chk(alice, res("2")))]);
    expect(pool.calls).toHaveLength(1);
  });
});

describe("batcher: responses that do not match what was sent", () => {
  /** Echo with the result at `position` rewritten. */
  const tampered = (position: number, change: Partial<ResourceResult>) => (req: ResourcesRequest) => {
    const r = echo(req);
    return { ...r, results: r.results.map((x, i) => (i === position ? { ...x, ...change } : x)) };
  };
  const everything = ["read"];

  it("a result whose kind or id at a position differs from what was sent denies that position only", async () => {
    for (const change of [{ id: "other" }, { kind: "other" }]) {
      const pool = stubPool(tampered(1, change));
      const b = batcherOf(pool);
      const answers = await Promise.all([0, 1, 2].map((i) => b.check(chk(alice, res(`r${i}`, everything)))));
      expect(answers.map((d) => d.allowed), JSON.stringify(change)).toEqual([true, false, true]);
      expect(b.pending()).toBe(0);
    }
  });

  it("results in the wrong order deny the swapped positions", async () => {
    const pool = stubPool((req) => {
      const r = echo(req);
      return { ...r, results: [r.results[1]!, r.results[0]!, r.results[2]!] };
    });
    const b = batcherOf(pool);
    const answers = await Promise.all([0, 1, 2].map((i) => b.check(chk(alice, res(`r${i}`, everything)))));
    expect(answers.map((d) => d.allowed)).toEqual([false, false, true]);
  });

  it("a response with fewer results than entries sent denies every waiter of the call", async () => {
    const pool = stubPool((req) => {
      const r = echo(req);
      return { ...r, results: r.results.slice(0, -1) };
    });
    const b = batcherOf(pool);
    const answers = await Promise.all([0, 1, 2].map((i) => b.check(chk(alice, res(`r${i}`, everything)))));
    expect(answers.map((d) => d.allowed)).toEqual([false, false, false]);
    expect(b.pending()).toBe(0);
  });

  it("a response with more results than entries sent denies every waiter of the call", async () => {
    const pool = stubPool((req) => {
      const r = echo(req);
      return { ...r, results: [...r.results, r.results[0]!] };
    });
    const b = batcherOf(pool);
    const answers = await Promise.all([0, 1].map((i) => b.check(chk(alice, res(`r${i}`, everything)))));
    expect(answers.map((d) => d.allowed)).toEqual([false, false]);
  });
});

describe("batcher: maxPendingChecks", () => {
  it("beyond maxPendingChecks a check is refused at once with RESOURCE_EXHAUSTED; after the load drains new checks are accepted", async () => {
    const gate = deferred<void>();
    const pool = stubPool(async (req) => {
      await gate.promise;
      return echo(req);
    });
    const b = batcherOf(pool, { maxPendingChecks: 3 });
    const first = [1, 2, 3].map((i) => b.check(chk(alice, res(`r${i}`, ["read"]))));
    expect(b.pending()).toBe(3);

    const refused = b.check(chk(alice, res("r4", ["read"])));
    const error = await refused.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PdpUnavailable);
    expect(error).toMatchObject({ grpcCode: "RESOURCE_EXHAUSTED", status: 503 });
    // Refused without waiting for anything: the first three are still waiting for their call.
    expect(b.pending()).toBe(3);
    expect(pool.calls.flatMap(ids)).not.toContain("r4");

    gate.resolve();
    expect((await Promise.all(first)).map((d) => d.allowed)).toEqual([true, true, true]);
    expect(b.pending()).toBe(0);
    expect(await b.check(chk(alice, res("r5", ["read"])))).toMatchObject({ allowed: true });
    expect(b.pending()).toBe(0);
  });

  it("checks refused for overload do not count as pending; failed checks stop counting", async () => {
    const gate = deferred<void>();
    const pool = stubPool(async () => {
      await gate.promise;
      throw new PdpUnavailable("down", "UNAVAILABLE");
    });
    const reported: number[] = [];
    const b = batcherOf(pool, { maxPendingChecks: 2, onPending: (n) => reported.push(n) });
    const waiting = [b.check(chk(alice, res("1"))), b.check(chk(alice, res("2")))];
    const refused = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => b.check(chk(alice, res(`x${i}`)))));
    expect(refused.every((s) => s.status === "rejected")).toBe(true);
    expect(b.pending()).toBe(2);
    gate.resolve();
    await Promise.allSettled(waiting);
    expect(b.pending()).toBe(0);
    expect(reported.at(-1)).toBe(0);
  });
});

describe("batcher: pending()", () => {
  it("returns to 0 after successes, failures, retries and mismatches", async () => {
    const pool = stubPool((req, n) => {
      if (req.entries.some((e) => e.resource.id === "")) return Promise.reject(new PdpUnavailable("bad", "INVALID_ARGUMENT"));
      if (n % 3 === 0) return Promise.reject(new PdpUnavailable("down", "UNAVAILABLE"));
      const r = echo(req);
      return n % 2 ? r : { ...r, results: [] };
    });
    const b = batcherOf(pool, { maxResourcesPerRequest: 4 });
    for (let round = 0; round < 5; round++) {
      const checks = Array.from({ length: 13 }, (_, i) => chk(i % 2 ? alice : bob, res(i === 5 ? "" : `r${i}`), i % 4 ? "read" : "write"));
      await Promise.allSettled(checks.map((c) => b.check(c)));
      expect(b.pending()).toBe(0);
    }
  });
});

describe("batcher: maxDelayMs", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("with maxDelayMs > 0 it waits that long, gathering later checks into the same call, and still flushes", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setImmediate", "clearImmediate"] });
    const pool = stubPool();
    const b = batcherOf(pool, { maxDelayMs: 20 });
    const answers: Array<Promise<Decision>> = [b.check(chk(alice, res("r1", ["read"])))];
    await vi.advanceTimersByTimeAsync(10);
    expect(pool.calls).toHaveLength(0);
    answers.push(b.check(chk(alice, res("r2", ["read"]))));
    await vi.advanceTimersByTimeAsync(9);
    expect(pool.calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(pool.calls.map(ids)).toEqual([["r1", "r2"]]);
    expect((await Promise.all(answers)).map((d) => d.allowed)).toEqual([true, true]);
    expect(b.pending()).toBe(0);
  });

  it("with maxDelayMs 0 it flushes at the end of the event-loop turn, not at once", async () => {
    const pool = stubPool();
    const b = batcherOf(pool);
    const p = b.check(chk(alice, res("r1")));
    await Promise.resolve();
    expect(pool.calls).toHaveLength(0); // microtasks are still the same turn
    await p;
    expect(pool.calls).toHaveLength(1);
  });
});

describe("batcher: maxCallsInFlight", () => {
  /** A pool whose calls settle only when the test says so. */
  function heldPool() {
    const calls: ResourcesRequest[] = [];
    /** release[i]() answers call i; release[i](error) fails it. */
    const release: Array<(error?: Error) => void> = [];
    const pool = {
      calls,
      authzenCalls: [] as unknown[],
      checkResources(req: ResourcesRequest): Promise<ResourcesResponse> {
        calls.push(req);
        return new Promise((resolve, reject) => release.push((error) => (error ? reject(error) : resolve(echo(req)))));
      },
      evaluateBatch(): Promise<Array<boolean | undefined>> {
        return Promise.reject(new PdpUnavailable("not used in these tests", "UNIMPLEMENTED"));
      },
    };
    return { pool, calls, release };
  }
  /** Lets setImmediate callbacks (the flush) run. */
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

  it("at the limit, a partial batch waits for a call to settle and the checks arriving meanwhile join it", async () => {
    const { pool, calls, release } = heldPool();
    const b = batcherOf(pool as never, { maxCallsInFlight: 1 });
    const first = b.check(chk(alice, res("r1", ["read"])));
    await nextTurn();
    expect(calls.map(ids)).toEqual([["r1"]]);
    const later = [b.check(chk(alice, res("r2", ["read"])))];
    await nextTurn();
    later.push(b.check(chk(alice, res("r3"))));
    await nextTurn();
    expect(calls).toHaveLength(1); // held while the first call is in flight
    release[0]!();
    expect((await first).allowed).toBe(true);
    await nextTurn();
    expect(calls.map(ids)).toEqual([["r1"], ["r2", "r3"]]);
    release[1]!();
    expect((await Promise.all(later)).map((d) => d.allowed)).toEqual([true, false]);
    expect(b.pending()).toBe(0);
  });

  it("a full call never waits for the limit", async () => {
    const { pool, calls, release } = heldPool();
    const b = batcherOf(pool as never, { maxCallsInFlight: 1, maxResourcesPerRequest: 3 });
    const first = b.check(chk(alice, res("r0")));
    await nextTurn();
    const full = ["r1", "r2", "r3"].map((id) => b.check(chk(bob, res(id, ["read"]))));
    await nextTurn();
    expect(calls.map(ids)).toEqual([["r0"], ["r1", "r2", "r3"]]);
    release[1]!();
    expect((await Promise.all(full)).every((d) => d.allowed)).toBe(true);
    release[0]!();
    expect((await first).allowed).toBe(false);
  });

  it("a failed call frees its place too: held checks are sent and answered", async () => {
    const { pool, calls, release } = heldPool();
    const b = batcherOf(pool as never, { maxCallsInFlight: 1 });
    const failed = b.check(chk(alice, res("r1", ["read"]))).then(
      () => undefined,
      (e: unknown) => e,
    );
    await nextTurn();
    const held = b.check(chk(alice, res("r2", ["read"])));
    await nextTurn();
    expect(calls.map(ids)).toEqual([["r1"]]);
    release[0]!(new PdpUnavailable("boom", "UNAVAILABLE"));
    expect(await failed).toBeInstanceOf(PdpUnavailable);
    await nextTurn();
    expect(calls.map(ids)).toEqual([["r1"], ["r2"]]);
    release[1]!();
    expect((await held).allowed).toBe(true);
    expect(b.pending()).toBe(0);
  });

  it(`a held batch is sent after MAX_HOLD_MS (${MAX_HOLD_MS} ms) even when no call settles`, async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setImmediate", "clearImmediate"] });
    try {
      const { pool, calls, release } = heldPool();
      const b = batcherOf(pool as never, { maxCallsInFlight: 1 });
      const first = b.check(chk(alice, res("r1")));
      await vi.advanceTimersByTimeAsync(0);
      const held = b.check(chk(alice, res("r2", ["read"])));
      await vi.advanceTimersByTimeAsync(MAX_HOLD_MS - 1);
      expect(calls).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(calls.map(ids)).toEqual([["r1"], ["r2"]]); // the first call is still in flight
      release[1]!();
      expect((await held).allowed).toBe(true);
      release[0]!();
      await first;
    } finally {
      vi.useRealTimers();
    }
  });

  it("0 means no limit: every flush is sent at once", async () => {
    const { pool, calls, release } = heldPool();
    const b = batcherOf(pool as never, { maxCallsInFlight: 0 });
    const answers = [b.check(chk(alice, res("r1")))];
    await nextTurn();
    answers.push(b.check(chk(alice, res("r2"))));
    await nextTurn();
    expect(calls.map(ids)).toEqual([["r1"], ["r2"]]);
    release.forEach((r) => r());
    await Promise.all(answers);
  });
});
