/**
 * The batcher (SPEC §6): checks are queued, grouped by principal (and forwarded token), and
 * flushed at the end of the event-loop turn (or after `batch.maxDelayMs`) as CheckResources
 * calls of at most `maxResourcesPerRequest` resources; several actions on one resource share an
 * entry (up to `maxActionsPerResource`).
 *
 * DataLoader's contract, each rule tested by name:
 * - results are matched by position and checked against the resource sent (a mismatch denies);
 * - a failed call rejects every one of its waiters at once — none is left hanging;
 * - INVALID_ARGUMENT for a batch is retried item by item, so one bad item cannot fail its neighbours;
 * - nothing here caches.
 * `maxPendingChecks` bounds checks waiting or in flight: beyond it a check is refused at once.
 * `maxCallsInFlight` turns load into bigger batches rather than more calls (see BatcherOptions).
 *
 * A second call shape sits beside CheckResources: with `protocol: auto`, principals with few checks
 * in a flush (fewer than half of maxResourcesPerRequest) travel together in AuthZEN
 * AccessEvaluationBatch calls (packed by authzen-packing.ts), while a principal with many checks,
 * or the only principal of a flush, uses CheckResources. `authzen` sends
 * every principal's checks as evaluations; `checkresources` never uses AuthZEN. Checks that carry
 * a forwarded token, or that AuthZEN cannot express with the same meaning, always use
 * CheckResources, and so does everything while the PDP is not known to serve AuthZEN.
 */
import { PdpUnavailable } from "../errors.js";
import type { Check, Decision, Principal, Resource } from "../model.js";
import { principalKey, resourceKey } from "../canonical-keys.js";
import { authzenCompatible, packUnits, type PackedCall, type Unit } from "./authzen-packing.js";
import type { PdpPool, ResourceEntry, ResourcesResponse } from "./pool.js";

export type Protocol = "auto" | "checkresources" | "authzen";

/** principalKey() and resourceKey() of a check, when the caller already has them. */
export interface CheckKeys {
  readonly principal: string;
  readonly resource: string;
}

export interface PdpChecker {
  /** Resolves with the PDP's decision; rejects only with PdpUnavailable. */
  check(check: Check, keys?: CheckKeys): Promise<Decision>;
  /** Checks waiting or in flight. */
  pending(): number;
  /** Whether AuthZEN batches may be used (set from the PDP probe at start-up and on reconnect). */
  setAuthzenAvailable(available: boolean): void;
}

export interface BatcherOptions {
  readonly maxResourcesPerRequest: number;
  readonly maxActionsPerResource: number;
  /** 0: flush at the end of the event-loop turn (setImmediate). */
  readonly maxDelayMs: number;
  readonly maxPendingChecks: number;
  /**
   * 0: no limit. Otherwise, while this many calls are in flight a flush with less than one full
   * call (maxResourcesPerRequest checks) waits for one of them to settle, and the checks that
   * arrive meanwhile join it: under load, batches grow instead of calls multiplying.
   */
  readonly maxCallsInFlight: number;
  readonly protocol: Protocol;
  /** Called when the PDP answers UNIMPLEMENTED to an AuthZEN call (auto falls back to CheckResources). */
  readonly onAuthzenUnavailable?: () => void;
  /** Observes the number of checks carried by each call. */
  readonly onBatch?: (checks: number) => void;
  /** Observes the pending count when it changes (coarsely: per enqueue burst and per settled call). */
  readonly onPending?: (pending: number) => void;
}

interface Waiter {
  resolve(d: Decision): void;
  reject(e: PdpUnavailable): void;
}

/** One resource of a group, with its actions and who waits for each. */
interface Item {
  readonly resource: Resource;
  readonly actions: Map<string, Waiter[]>;
}

interface Group {
  readonly principal: Principal;
  readonly token: string | undefined;
  readonly items: Map<string, Item>;
}

/** One unit of a call: an entry sent to the PDP and the waiters of each of its actions. */
interface Slot {
  readonly entry: ResourceEntry;
  readonly waiters: ReadonlyMap<string, Waiter[]>;
}

/**
 * The longest a partial batch waits for a call in flight to settle (batch.maxCallsInFlight). PDP
 * calls take a few ms under load, so most holds end sooner; the bound keeps a held check's answer
 * within its own call's deadline plus this, even when every call in flight is stuck.
 */
export const MAX_HOLD_MS = 5;

const OVERLOAD = () => new PdpUnavailable("too many pending checks", "RESOURCE_EXHAUSTED");

export function createBatcher(pool: Pick<PdpPool, "checkResources" | "evaluateBatch">, opts: BatcherOptions): PdpChecker {
  let queue = new Map<string, Group>();
  let scheduled = false;
  let pending = 0;
  let authzenAvailable = false;
  let queued = 0;
  let callsInFlight = 0;
  const maxCallsInFlight = opts.maxCallsInFlight === 0 ? Infinity : opts.maxCallsInFlight;
  const { onBatch, onPending } = opts;

  function schedule(): void {
    if (scheduled) return;
    scheduled = true;
    if (opts.maxDelayMs === 0) setImmediate(flush, false);
    else setTimeout(flush, opts.maxDelayMs, false);
  }

  /** Counts a PDP call in flight until it settles; a held batch is then flushed. */
  function counted<T>(call: Promise<T>): Promise<T> {
    callsInFlight++;
    return call.finally(() => {
      callsInFlight--;
      if (queued > 0) schedule();
    });
  }

  function enqueue(check: Check, keys: CheckKeys | undefined, waiter: Waiter): void {
    const pKey = keys?.principal ?? principalKey(check.principal);
    const gKey = check.token === undefined ? pKey : pKey + "\u0000" + check.token;
    let group = queue.get(gKey);
    if (!group) {
      group = { principal: check.principal, token: check.token, items: new Map() };
      queue.set(gKey, group);
    }
    const rKey = keys?.resource ?? resourceKey(check.resource);
    let item = group.items.get(rKey);
    if (!item) {
      item = { resource: check.resource, actions: new Map() };
      group.items.set(rKey, item);
    }
    const waiters = item.actions.get(check.action);
    if (waiters) waiters.push(waiter);
    else item.actions.set(check.action, [waiter]);
    queued++;
    schedule();
  }

  /** Sends a held batch after MAX_HOLD_MS even if no call settled (a stuck PDP must not add its deadline twice). */
  let holdTimer: NodeJS.Timeout | undefined;
  const flushHeld = () => {
    holdTimer = undefined;
    flush(true);
  };

  function flush(force = false): void {
    scheduled = false;
    if (queued === 0) return;
    if (!force && callsInFlight >= maxCallsInFlight && queued < opts.maxResourcesPerRequest) {
      // Held: the next settling call schedules the flush again, or the hold timer sends it.
      holdTimer ??= setTimeout(flushHeld, MAX_HOLD_MS);
      return;
    }
    if (holdTimer !== undefined) {
      clearTimeout(holdTimer);
      holdTimer = undefined;
    }
    queued = 0;
    const groups = queue;
    queue = new Map();
    onPending?.(pending);
    const small: Array<[string, Group]> = [];
    for (const [key, group] of groups) {
      if (usesAuthzen(group)) small.push([key, group]);
      else sendCheckResources(group);
    }
    // A single principal gains nothing from AuthZEN under auto: one call either way, and
    // CheckResources answers with a Cerbos call id.
    if (small.length === 1 && opts.protocol === "auto") {
      sendCheckResources(small[0]![1]);
      return;
    }
    const evaluations: Array<Unit<Waiter[]>> = [];
    for (const [key, group] of small) collectUnits(key, group, evaluations);
    for (const packed of packUnits(evaluations, opts)) void evaluate(packed);
  }

  function sendCheckResources(group: Group): void {
    for (const slots of splitIntoCalls(group)) void call(group, slots);
  }

  function checksOf(group: Group): number {
    let n = 0;
    for (const item of group.items.values()) n += item.actions.size;
    return n;
  }

  /**
   * Under auto, a principal with enough checks to fill half a CheckResources call gets its own
   * call; smaller groups — the usual case when many users are active at once — are packed
   * together into AuthZEN batches, so a flush of 20 users with 2–3 checks each is one call, not 20.
   */
  const ownCallFrom = Math.max(2, Math.floor(opts.maxResourcesPerRequest / 2));

  function usesAuthzen(group: Group): boolean {
    if (!authzenAvailable || opts.protocol === "checkresources" || group.token !== undefined) return false;
    if (opts.protocol === "auto" && checksOf(group) >= ownCallFrom) return false;
    for (const item of group.items.values()) if (!authzenCompatible(group.principal, item.resource)) return false;
    return true;
  }

  function collectUnits(key: string, group: Group, out: Array<Unit<Waiter[]>>): void {
    for (const [rKey, item] of group.items) {
      let actions: Array<[string, Waiter[]]> = [];
      for (const entry of item.actions) {
        actions.push(entry);
        if (actions.length === opts.maxActionsPerResource) {
          out.push({ principalKey: key, principal: group.principal, resourceKey: rKey, resource: item.resource, actions });
          actions = [];
        }
      }
      if (actions.length > 0) out.push({ principalKey: key, principal: group.principal, resourceKey: rKey, resource: item.resource, actions });
    }
  }

  /** One AuthZEN batch: decisions by position; anything but `true` denies. */
  async function evaluate(packed: PackedCall<Waiter[]>): Promise<void> {
    onBatch?.(packed.evaluations.length);
    let decisions: Array<boolean | undefined>;
    try {
      decisions = await counted(pool.evaluateBatch(packed.evaluations));
    } catch (error) {
      const failure = error instanceof PdpUnavailable ? error : new PdpUnavailable("PDP call failed");
      if (failure.grpcCode === "UNIMPLEMENTED") {
        // The PDP lost AuthZEN (e.g. replaced by an older one): CheckResources until it is probed again.
        authzenAvailable = false;
        opts.onAuthzenUnavailable?.();
      }
      if (failure.grpcCode === "UNIMPLEMENTED" || (failure.grpcCode === "INVALID_ARGUMENT" && (opts.protocol === "auto" || packed.evaluations.length > 1))) {
        // Item by item over CheckResources, so one bad item (or a PDP without AuthZEN) cannot fail its neighbours.
        await Promise.all(packed.evaluations.map((e, i) => callSingle(packed.units[i]!, [e.action, packed.waiters[i]!])));
        return;
      }
      for (const waiters of packed.waiters) for (const w of waiters) w.reject(failure);
      countDown(packed.waiters);
      return;
    }
    packed.waiters.forEach((waiters, i) => {
      const decision: Decision = { allowed: decisions[i] === true };
      for (const w of waiters) w.resolve(decision);
    });
    countDown(packed.waiters);
  }

  function callSingle(unit: Unit<Waiter[]>, [action, waiters]: readonly [string, Waiter[]]): Promise<void> {
    const group: Group = { principal: unit.principal, token: undefined, items: new Map() };
    return call(group, [{ entry: { resource: unit.resource, actions: [action] }, waiters: new Map([[action, waiters]]) }]);
  }

  function countDown(waiterLists: readonly Waiter[][]): void {
    let n = 0;
    for (const waiters of waiterLists) n += waiters.length;
    pending -= n;
    onPending?.(pending);
  }

  /** Entries of ≤ maxActionsPerResource actions, packed into calls of ≤ maxResourcesPerRequest entries. */
  function splitIntoCalls(group: Group): Slot[][] {
    const calls: Slot[][] = [];
    let current: Slot[] = [];
    const push = (slot: Slot) => {
      current.push(slot);
      if (current.length === opts.maxResourcesPerRequest) {
        calls.push(current);
        current = [];
      }
    };
    for (const item of group.items.values()) {
      if (item.actions.size <= opts.maxActionsPerResource) {
        push({ entry: { resource: item.resource, actions: [...item.actions.keys()] }, waiters: item.actions });
        continue;
      }
      let chunk = new Map<string, Waiter[]>();
      for (const [action, waiters] of item.actions) {
        chunk.set(action, waiters);
        if (chunk.size === opts.maxActionsPerResource) {
          push({ entry: { resource: item.resource, actions: [...chunk.keys()] }, waiters: chunk });
          chunk = new Map();
        }
      }
      if (chunk.size > 0) push({ entry: { resource: item.resource, actions: [...chunk.keys()] }, waiters: chunk });
    }
    if (current.length > 0) calls.push(current);
    return calls;
  }

  async function call(group: Group, slots: readonly Slot[]): Promise<void> {
    const checks = slots.reduce((n, s) => n + s.entry.actions.length, 0);
    onBatch?.(checks);
    let response: ResourcesResponse;
    try {
      response = await counted(
        pool.checkResources({
          principal: group.principal,
          entries: slots.map((s) => s.entry),
          ...(group.token !== undefined ? { token: group.token } : {}),
        }),
      );
    } catch (error) {
      const failure = error instanceof PdpUnavailable ? error : new PdpUnavailable("PDP call failed");
      if (failure.grpcCode === "INVALID_ARGUMENT" && checks > 1) {
        await retryItemByItem(group, slots);
        return;
      }
      settleAll(slots, (w) => w.reject(failure));
      return;
    }
    slots.forEach((slot, i) => {
      const result = response.results[i];
      // Matched by position and checked against what was sent: anything unexpected denies.
      const matches =
        response.results.length === slots.length && result !== undefined && result.kind === slot.entry.resource.kind && result.id === slot.entry.resource.id;
      for (const [action, waiters] of slot.waiters) {
        const decision: Decision = { allowed: matches && result.allowed(action), callId: response.callId };
        for (const w of waiters) w.resolve(decision);
      }
    });
    done(slots);
  }

  /** One call per (resource, action), so the PDP's refusal of one item fails only that item. */
  async function retryItemByItem(group: Group, slots: readonly Slot[]): Promise<void> {
    const singles: Slot[] = [];
    for (const slot of slots) {
      for (const [action, waiters] of slot.waiters) {
        singles.push({ entry: { resource: slot.entry.resource, actions: [action] }, waiters: new Map([[action, waiters]]) });
      }
    }
    // Each single settles (and counts down) its own waiters.
    await Promise.all(singles.map((s) => call(group, [s])));
  }

  function settleAll(slots: readonly Slot[], settle: (w: Waiter) => void): void {
    for (const slot of slots) for (const waiters of slot.waiters.values()) for (const w of waiters) settle(w);
    done(slots);
  }

  function done(slots: readonly Slot[]): void {
    const lists: Waiter[][] = [];
    for (const slot of slots) for (const waiters of slot.waiters.values()) lists.push(waiters);
    countDown(lists);
  }

  return {
    check(check, keys) {
      if (pending >= opts.maxPendingChecks) return Promise.reject(OVERLOAD());
      pending++;
      return new Promise<Decision>((resolve, reject) => enqueue(check, keys, { resolve, reject }));
    },
    pending: () => pending,
    setAuthzenAvailable(available) {
      authzenAvailable = available && opts.protocol !== "checkresources";
    },
  };
}
