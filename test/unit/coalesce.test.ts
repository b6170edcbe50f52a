/**
 * In-flight coalescing (SPEC §6, STYLE example 6): identical keys share the leader's promise;
 * the entry is removed when the leader settles — after a success and after a failure — so a
 * failed leader cannot poison later calls, and every follower of a rejected leader rejects.
 */
import { describe, expect, it } from "vitest";
import { createCoalescer } from "../../src/decision/coalesce.js";

/** A promise settled from outside. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("coalescing", () => {
  it("identical keys in flight share one promise: start is called once", async () => {
    const c = createCoalescer<string>();
    const d = deferred<string>();
    let starts = 0;
    const start = () => {
      starts++;
      return d.promise;
    };
    const leader = c.run("k", start);
    const followers = Array.from({ length: 5 }, () => c.run("k", start));
    expect(starts).toBe(1);
    expect(leader.shared).toBe(false);
    for (const f of followers) {
      expect(f.shared).toBe(true);
      expect(f.promise).toBe(leader.promise);
    }
    expect(c.size()).toBe(1);
    d.resolve("answer");
    expect(await Promise.all([leader.promise, ...followers.map((f) => f.promise)])).toEqual(Array(6).fill("answer"));
  });

  it("different keys do not share", async () => {
    const c = createCoalescer<string>();
    let starts = 0;
    const a = c.run("a", async () => `a${++starts}`);
    const b = c.run("b", async () => `b${++starts}`);
    expect(b.shared).toBe(false);
    expect(c.size()).toBe(2);
    expect([await a.promise, await b.promise]).toEqual(["a1", "b2"]);
  });

  it("the entry is removed after a success: a later call starts fresh", async () => {
    const c = createCoalescer<number>();
    let starts = 0;
    const start = async () => ++starts;
    expect(await c.run("k", start).promise).toBe(1);
    expect(c.size()).toBe(0);
    const again = c.run("k", start);
    expect(again.shared).toBe(false);
    expect(await again.promise).toBe(2);
    expect(c.size()).toBe(0);
  });

  it("the entry is removed after a failure: a later call starts fresh and can succeed", async () => {
    const c = createCoalescer<string>();
    const failure = new Error("PDP down");
    await expect(c.run("k", () => Promise.reject(failure)).promise).rejects.toBe(failure);
    expect(c.size()).toBe(0);
    const later = c.run("k", async () => "ok");
    expect(later.shared).toBe(false);
    expect(await later.promise).toBe("ok");
  });

  it("a rejected leader rejects every follower with its error", async () => {
    const c = createCoalescer<string>();
    const d = deferred<string>();
    const leader = c.run("k", () => d.promise);
    const followers = Array.from({ length: 10 }, () => c.run("k", () => Promise.resolve("never started")));
    const failure = new Error("deadline");
    d.reject(failure);
    const settled = await Promise.allSettled([leader.promise, ...followers.map((f) => f.promise)]);
    expect(settled).toHaveLength(11);
    for (const s of settled) expect(s).toEqual({ status: "rejected", reason: failure });
    expect(c.size()).toBe(0);
  });

  it("by the time any waiter sees the answer, the entry is already gone (success and failure)", async () => {
    const c = createCoalescer<string>();
    const seen: number[] = [];
    const ok = c.run("k", async () => "x");
    const okFollower = c.run("k", async () => "y");
    await Promise.all([ok.promise.then(() => seen.push(c.size())), okFollower.promise.then(() => seen.push(c.size()))]);
    const bad = c.run("k", () => Promise.reject(new Error("e")));
    const badFollower = c.run("k", async () => "z");
    await Promise.allSettled([bad.promise.catch(() => seen.push(c.size())), badFollower.promise.catch(() => seen.push(c.size()))]);
    expect(seen).toEqual([0, 0, 0, 0]);
  });

  it("a start that throws synchronously leaves no entry behind", async () => {
    const c = createCoalescer<string>();
    expect(() =>
      c.run("k", () => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(c.size()).toBe(0);
    expect(await c.run("k", async () => "ok").promise).toBe("ok");
  });
});
