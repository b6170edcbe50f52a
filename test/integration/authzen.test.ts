/**
 * AuthZEN batches across principals (issue 5), against the real Cerbos PDP with the policies of
 * test/fixtures/policies-authzen (derived roles, CEL on principal and resource attributes, policy
 * version v2, resource scope "acme", principal policies with a principal scope):
 * - what the PDP does with an AccessEvaluationBatch (roles, attributes, the grouping trap);
 * - the fixture table under pdp.protocol auto | checkresources | authzen: identical decisions;
 * - the grouping trap through the batcher: each check gets its own decision;
 * - a PDP with small request limits: flushes are split and every answer is right;
 * - fallback: a PDP without AuthZEN (test/support/grpc-passthrough.ts), or one whose AuthZEN
 *   fails, still answers right under `auto`.
 * Nothing here mocks a decision: every allow and deny comes from the real PDP.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Check, Principal, Resource } from "../../src/model.js";
import { cerbosBinaryPath } from "../../src/pdp/cerbos-binary.js";
import type { Evaluation } from "../../src/pdp/authzen-codec.js";
import { toEvaluation } from "../../src/pdp/authzen-packing.js";
import { createBatcher, type PdpChecker, type Protocol } from "../../src/pdp/batcher.js";
import { createPool, type PdpPool } from "../../src/pdp/pool.js";
import { ACCESS_EVALUATION_BATCH, CHECK_RESOURCES, HEALTH_CHECK, startGrpcPassthrough, type GrpcPassthrough } from "../support/grpc-passthrough.js";
import { forwarded, rawRequest, type HeaderLines } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { startService, waitFor, type TestService } from "../support/service.js";

const policiesDir = fileURLToPath(new URL("../fixtures/policies-authzen", import.meta.url));
const PROTOCOLS: Protocol[] = ["auto", "checkresources", "authzen"];

// --- the service's configuration --------------------------------------------------------------

const ACTIONS = { GET: "read", PUT: "edit", POST: "approve", DELETE: "delete", PATCH: "archive" };
const DOC_ATTR = { tenant: "{params.tenant}", owner: "{query.owner}", status: "{query.status}" };
const ROUTES = [
  // Scope and policy version from request headers (empty → not sent).
  {
    name: "docs",
    path: "/docs/:tenant/:id",
    resource: { kind: "doc", id: "{params.id}", attr: DOC_ATTR, scope: "{headers.x-scope}", policyVersion: "{headers.x-policy-version}" },
    actions: ACTIONS,
  },
  // A fixed policy version.
  { name: "docs-v2", path: "/v2/docs/:tenant/:id", resource: { kind: "doc", id: "{params.id}", attr: DOC_ATTR, policyVersion: "v2" }, actions: ACTIONS },
  // A fixed scope.
  {
    name: "acme-docs",
    path: "/acme/docs/:id",
    resource: { kind: "doc", id: "{params.id}", attr: { tenant: "acme", owner: "{query.owner}", status: "{query.status}" }, scope: "acme" },
    actions: ACTIONS,
  },
];

function serviceConfig(protocol: Protocol, pdp: Record<string, unknown> = {}) {
  return {
    identity: { trustedHeaders: { id: "Remote-User", roles: "Remote-Groups", attr: { tenant: "Remote-Tenant", department: "Remote-Department" } } },
    routes: ROUTES,
    unmatched: "deny",
    pdp: { protocol, timeoutMs: 5000, ...pdp },
    // Every request reaches the PDP.
    cache: { maxEntries: 0 },
    // Concurrent requests gather into one flush (no assertion depends on how many do).
    batch: { maxDelayMs: 25 },
    log: { decisions: "none" },
  };
}

/** Resolves once /readyz answers 200 and, unless checkresources, the AuthZEN probe has answered `authzen`. */
async function ready(svc: TestService, protocol: Protocol, authzen = true): Promise<void> {
  await waitFor(async () => (await rawRequest(svc.adminPort, { path: "/readyz" })).status === 200, { what: "/readyz 200", timeoutMs: 20_000 });
  if (protocol !== "checkresources") await waitFor(() => svc.logs.some((l) => l.authzen === authzen), { what: `the AuthZEN probe saying ${authzen}` });
}

// --- the fixture table ----------------------------------------------------------------------

interface Row {
  readonly name: string;
  readonly user: string;
  readonly roles: string;
  readonly tenant?: string;
  readonly department?: string;
  readonly method: string;
  readonly uri: string;
  readonly headers?: HeaderLines;
  readonly status: 200 | 403;
}

const row = (name: string, who: [string, string, string?, string?], method: string, uri: string, status: 200 | 403, headers?: HeaderLines): Row => ({
  name,
  user: who[0],
  roles: who[1],
  ...(who[2] !== undefined ? { tenant: who[2] } : {}),
  ...(who[3] !== undefined ? { department: who[3] } : {}),
  method,
  uri,
  status,
  ...(headers ? { headers } : {}),
});

/** Many principals; a few share an id with another row (the grouping trap), two have two checks. */
const TABLE: Row[] = [
  row("derived role colleague: same tenant reads", ["alice", "user", "acme"], "GET", "/docs/acme/1?owner=alice&status=draft", 200),
  row("trap: same id, other tenant, same doc", ["alice", "user", "globex"], "GET", "/docs/acme/1?owner=alice&status=draft", 403),
  row("derived role colleague: other tenant", ["bob", "user", "globex"], "GET", "/docs/acme/1?owner=alice&status=draft", 403),
  row("derived role owner edits a draft", ["carol", "user", "acme"], "PUT", "/docs/acme/3?owner=carol&status=draft", 200),
  row("the same principal's second check", ["carol", "user", "acme"], "GET", "/docs/acme/3?owner=carol&status=draft", 200),
  row("CEL on a resource attribute: final docs stay", ["dave", "user", "acme"], "PUT", "/docs/acme/4?owner=dave&status=final", 403),
  row("derived role owner: someone else's doc", ["erin", "user", "acme"], "PUT", "/docs/acme/5?owner=alice&status=draft", 403),
  row("CEL on principal attributes: finance manager approves", ["fin", "manager", "acme", "finance"], "POST", "/docs/acme/6", 200),
  row("CEL on principal attributes: sales manager does not", ["sales", "manager", "acme", "sales"], "POST", "/docs/acme/6", 403),
  row("trap: same id as the finance manager, other tenant", ["fin", "manager", "globex", "finance"], "POST", "/docs/acme/6", 403),
  row("admin deletes", ["root", "admin"], "DELETE", "/docs/acme/7", 200),
  row("trap: same id as the admin, role user", ["root", "user"], "DELETE", "/docs/acme/7", 403),
  row("user does not delete", ["gus", "user", "acme"], "DELETE", "/docs/acme/7", 403),
  row("policy version v2 (fixed): reads across tenants", ["hank", "user", "globex"], "GET", "/v2/docs/acme/8", 200),
  row("policy version v2: owners no longer edit", ["ivy", "user", "acme"], "PUT", "/v2/docs/acme/8?owner=ivy&status=draft", 403),
  row("policy version v2: managers edit", ["jack", "manager", "globex"], "PUT", "/v2/docs/acme/8", 200),
  row("policy version v2 from a header", ["kim", "user", "globex"], "GET", "/docs/acme/9", 200, [["X-Policy-Version", "v2"]]),
  row("default policy version without the header", ["kim2", "user", "globex"], "GET", "/docs/acme/9", 403),
  row("scope acme (fixed): admins may not delete final docs", ["ops", "admin"], "DELETE", "/acme/docs/10?status=final", 403),
  row("scope acme: drafts fall through to the base policy", ["ops2", "admin"], "DELETE", "/acme/docs/11?status=draft", 200),
  row("scope acme: records users archive", ["rec", "user", "acme", "records"], "PATCH", "/acme/docs/10?status=final", 200),
  row("no scope: only admins archive", ["lee", "user", "acme", "records"], "PATCH", "/docs/acme/10?status=final", 403),
  row("scope acme from a header", ["mo", "user", "acme", "records"], "PATCH", "/docs/acme/10?status=final", 200, [["X-Scope", "acme"]]),
  row("scope acme falls through: other tenant reads not", ["ned", "user", "globex"], "GET", "/acme/docs/12", 403),
  row("scope acme falls through: same tenant reads", ["nia", "user", "acme"], "GET", "/acme/docs/12", 200),
  row("principal policy of the auditor", ["auditor", "user", "none"], "GET", "/docs/globex/13", 200),
  row("trap: the same doc id, owner pat", ["pat", "user", "acme"], "PUT", "/docs/acme/14?owner=pat&status=draft", 200),
  row("trap: the same doc id, owner zed", ["pat", "user", "acme"], "PUT", "/docs/acme/14?owner=zed&status=draft", 403),
  row("a manager is a colleague too", ["quinn", "manager", "acme", "finance"], "GET", "/docs/acme/15", 200),
  row("admins do not read", ["rita", "admin"], "GET", "/docs/acme/16", 403),
];

const identityHeaders = (r: Pick<Row, "user" | "roles" | "tenant" | "department">): HeaderLines => [
  ["Remote-User", r.user],
  ["Remote-Groups", r.roles],
  ...(r.tenant !== undefined ? ([["Remote-Tenant", r.tenant]] as const) : []),
  ...(r.department !== undefined ? ([["Remote-Department", r.department]] as const) : []),
];

const send = (port: number, r: Row) => rawRequest(port, { headers: forwarded(r.method, r.uri, undefined, [...identityHeaders(r), ...(r.headers ?? [])]) });

/** All rows at once (one burst), each answer next to its row. */
async function burst(port: number, rows: readonly Row[]): Promise<Array<{ name: string; status: number }>> {
  const answers = await Promise.all(rows.map((r) => send(port, r)));
  return answers.map((a, i) => ({ name: rows[i]!.name, status: a.status }));
}

const expected = (rows: readonly Row[]) => rows.map((r) => ({ name: r.name, status: r.status }));

/** The PDP's calls of each method while `fn` runs (read once the counts stop moving). */
async function pdpCalls<T>(pdp: TestPdp, fn: () => Promise<T>): Promise<{ result: T; checkResources: number; batches: number }> {
  const cr0 = await pdp.settledCheckCalls("CheckResources", 100);
  const aeb0 = await pdp.settledCheckCalls("AccessEvaluationBatch", 100);
  const result = await fn();
  const cr1 = await pdp.settledCheckCalls("CheckResources", 100);
  const aeb1 = await pdp.settledCheckCalls("AccessEvaluationBatch", 100);
  return { result, checkResources: cr1 - cr0, batches: aeb1 - aeb0 };
}

// --- principals, resources and checks for the batcher-level tests ----------------------------

const principal = (id: string, roles: string[], attr: Principal["attr"] = {}, extra: Partial<Principal> = {}): Principal => ({ id, roles, attr, ...extra });
const doc = (id: string, attr: Resource["attr"], extra: Partial<Resource> = {}): Resource => ({ kind: "doc", id, attr, ...extra });
const check = (p: Principal, r: Resource, action: string): Check => ({ principal: p, resource: r, action });

function batcherFor(pool: PdpPool, protocol: Protocol, opts: { maxResourcesPerRequest?: number; maxActionsPerResource?: number; onBatch?: (n: number) => void } = {}): PdpChecker {
  const batcher = createBatcher(pool, {
    maxResourcesPerRequest: opts.maxResourcesPerRequest ?? 50,
    maxActionsPerResource: opts.maxActionsPerResource ?? 50,
    maxDelayMs: 0,
    maxCallsInFlight: 0,
    maxPendingChecks: 10_000,
    protocol,
    ...(opts.onBatch ? { onBatch: opts.onBatch } : {}),
  });
  batcher.setAuthzenAvailable(true);
  return batcher;
}

/** Every check enqueued in the same turn: one flush. Resolves with `allowed` of each, in order. */
const oneFlush = (batcher: PdpChecker, checks: readonly Check[]) => Promise.all(checks.map((c) => batcher.check(c).then((d) => d.allowed)));

// ---------------------------------------------------------------------------------------------

let pdp: TestPdp;
let pool: PdpPool;
const poolCodes: string[] = [];

beforeAll(async () => {
  pdp = await startPdp({ policiesDir });
  pool = createPool({ target: pdp.grpcTarget, tls: false, connections: 2, timeoutMs: 5000, onCall: (code) => poolCodes.push(code) });
});
afterAll(async () => {
  pool?.close();
  await pdp?.stop();
});

it("the fixture policies compile and pass their own Cerbos tests", async () => {
  const output = await new Promise<string>((resolve, reject) =>
    execFile(cerbosBinaryPath(), ["compile", policiesDir], { timeout: 30_000 }, (error, stdout, stderr) => (error ? reject(new Error(`${stdout}${stderr}`)) : resolve(`${stdout}${stderr}`))),
  );
  expect(output).toMatch(/tests executed/);
  expect(output).not.toMatch(/FAILED/);
});

describe("what the PDP does with AccessEvaluationBatch (measured on Cerbos 0.55)", () => {
  const subject = (type: string, id: string, properties: Evaluation["subject"]["properties"]): Evaluation["subject"] => ({ type, id, properties });
  const resource: Evaluation["resource"] = { type: "doc", id: "7", properties: { tenant: "acme" } };

  it("roles come from cerbos.roles; without it the subject type is the only role; a plain `roles` property is an attribute", async () => {
    const answers = await pool.evaluateBatch([
      { subject: subject("principal", "a", { "cerbos.roles": ["admin"] }), resource, action: "delete" },
      { subject: subject("admin", "b", {}), resource, action: "delete" },
      { subject: subject("principal", "c", { roles: ["admin"] }), resource, action: "delete" },
      { subject: subject("admin", "d", { "cerbos.roles": ["user"] }), resource, action: "delete" },
    ]);
    expect(answers).toEqual([true, true, false, false]);
  });

  it("principal and resource attributes come from properties, cerbos.scope and cerbos.policyVersion select policies", async () => {
    const finance = subject("principal", "fin", { "cerbos.roles": ["manager"], tenant: "acme", department: "finance" });
    const answers = await pool.evaluateBatch([
      { subject: finance, resource, action: "approve" },
      { subject: subject("principal", "globex-user", { "cerbos.roles": ["user"], tenant: "globex" }), resource: { type: "doc", id: "8", properties: { "cerbos.policyVersion": "v2" } }, action: "read" },
      { subject: subject("principal", "ops", { "cerbos.roles": ["admin"] }), resource: { type: "doc", id: "10", properties: { "cerbos.scope": "acme", status: "final" } }, action: "delete" },
      { subject: subject("principal", "auditor", { "cerbos.roles": ["user"], "cerbos.scope": "acme" }), resource: { type: "doc", id: "1", properties: { status: "draft" } }, action: "edit" },
    ]);
    expect(answers).toEqual([true, true, false, true]);
  });

  it("the cerbos.* properties stay visible as attributes (CheckResources has no such keys)", async () => {
    // A difference from CheckResources that no request can avoid: a policy that looks at the
    // attribute map itself (a key test, size(), a strict attribute schema) sees cerbos.roles on
    // every AuthZEN subject and cerbos.scope / cerbos.policyVersion on resources that use them.
    const p = principal("plain", ["user"]);
    const plain: Resource = { kind: "introspect", id: "1", attr: {} };
    const versioned: Resource = { kind: "introspect", id: "1", attr: {}, policyVersion: "v2" };
    const actions = ["principal-attr-has-cerbos-roles", "principal-attr-is-empty"] as const;
    const overAuthzen = await pool.evaluateBatch([...actions.map((a) => toEvaluation(p, plain, a)), toEvaluation(principal("plain2", ["user"]), versioned, "resource-attr-has-cerbos-policy-version")]);
    expect(overAuthzen).toEqual([true, false, true]);
    const overCheckResources = await pool.checkResources({ principal: p, entries: [{ resource: plain, actions: [...actions] }] });
    expect(actions.map((a) => overCheckResources.results[0]!.allowed(a))).toEqual([false, true]);
    const versionedCr = await pool.checkResources({ principal: p, entries: [{ resource: versioned, actions: ["resource-attr-has-cerbos-policy-version"] }] });
    expect(versionedCr.results[0]!.allowed("resource-attr-has-cerbos-policy-version")).toBe(false);
  });

  it("an empty batch is INVALID_ARGUMENT", async () => {
    await expect(pool.evaluateBatch([])).rejects.toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
  });

  describe("the grouping trap is real: one hand-made batch answers with the first evaluation's subject or resource", () => {
    // Measured (Cerbos 0.55): the PDP groups a batch by subject id, then by resource type+id,
    // and evaluates each (subject id, resource) group with its FIRST evaluation's subject and
    // resource. Asked one by one, each pair below is [true, false]; in one batch the second
    // evaluation gets the first one's answer: [true, true], and reversed [false, false].
    // Two principals with the same id on DIFFERENT resources are evaluated correctly (each
    // resource group takes its own first subject) — the packing is stricter than needed there.
    const admin = principal("x", ["admin"]);
    const user = principal("x", ["user"]);
    const acme = principal("alice", ["user"], { tenant: "acme" });
    const globex = principal("alice", ["user"], { tenant: "globex" });
    const mine = doc("1", { tenant: "acme", owner: "alice", status: "draft" });
    const theirs = doc("1", { tenant: "acme", owner: "bob", status: "draft" });
    const cases: Array<[string, Evaluation, Evaluation]> = [
      ["same id, different roles, same doc", toEvaluation(admin, mine, "delete"), toEvaluation(user, mine, "delete")],
      ["same id, different tenant attribute, same doc", toEvaluation(acme, mine, "read"), toEvaluation(globex, mine, "read")],
      ["same principal, same kind and id, different owner", toEvaluation(acme, mine, "edit"), toEvaluation(acme, theirs, "edit")],
    ];

    it.each(cases)("%s", async (_name, first, second) => {
      const alone = [(await pool.evaluateBatch([first]))[0], (await pool.evaluateBatch([second]))[0]];
      expect(alone).toEqual([true, false]);
      expect(await pool.evaluateBatch([first, second])).toEqual([true, true]);
      expect(await pool.evaluateBatch([second, first])).toEqual([false, false]);
    });

    it("same id, different roles, on different docs: each answered right", async () => {
      const other = doc("2", { tenant: "acme" });
      expect(await pool.evaluateBatch([toEvaluation(admin, mine, "delete"), toEvaluation(user, other, "delete")])).toEqual([true, false]);
      expect(await pool.evaluateBatch([toEvaluation(user, mine, "delete"), toEvaluation(admin, other, "delete")])).toEqual([false, true]);
    });
  });
});

describe.each(PROTOCOLS)("the fixture table with pdp.protocol %s", (protocol) => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService(pdp.grpcTarget, serviceConfig(protocol));
    await ready(svc, protocol);
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it("answers every row as the policies say, many principals in one burst", async () => {
    const { result, checkResources, batches } = await pdpCalls(pdp, () => burst(svc.port, TABLE));
    expect(result).toEqual(expected(TABLE));
    if (protocol === "checkresources") {
      expect(batches).toBe(0);
      expect(checkResources).toBeGreaterThan(0);
    } else {
      expect(batches).toBeGreaterThanOrEqual(1);
      // authzen sends every check as an evaluation: nothing fell back to CheckResources.
      if (protocol === "authzen") expect(checkResources).toBe(0);
    }
  });

  it("answers every row the same when sent one at a time", async () => {
    const answers: Array<{ name: string; status: number }> = [];
    const { checkResources, batches } = await pdpCalls(pdp, async () => {
      for (const r of TABLE) answers.push({ name: r.name, status: (await send(svc.port, r)).status });
    });
    expect(answers).toEqual(expected(TABLE));
    // A lone check: auto and checkresources use CheckResources, authzen one evaluation.
    expect({ checkResources, batches }).toEqual(protocol === "authzen" ? { checkResources: 0, batches: TABLE.length } : { checkResources: TABLE.length, batches: 0 });
  });
});

describe("the grouping trap through the batcher: each check gets its own decision", () => {
  const admin = principal("x", ["admin"]);
  const user = principal("x", ["user"]);
  const acme = principal("alice", ["user"], { tenant: "acme" });
  const globex = principal("alice", ["user"], { tenant: "globex" });
  const mine = doc("1", { tenant: "acme", owner: "alice", status: "draft" });
  const theirs = doc("1", { tenant: "acme", owner: "bob", status: "draft" });
  /** Single-check principals that share a flush with the trap. */
  const bystanders = [
    check(principal("b1", ["user"], { tenant: "acme" }), mine, "read"),
    check(principal("b2", ["user"], { tenant: "globex" }), mine, "read"),
    check(principal("b3", ["admin"]), mine, "delete"),
  ];
  const bystandersAllowed = [true, false, true];

  describe.each(["authzen", "auto"] as const)("protocol %s", (protocol) => {
    it.each([
      ["two principals with the same id and different roles", [check(admin, mine, "delete"), check(user, mine, "delete")], [true, false]],
      ["two principals with the same id and different roles, the denied one first", [check(user, mine, "delete"), check(admin, mine, "delete")], [false, true]],
      ["two principals with the same id and different tenant attributes", [check(acme, mine, "read"), check(globex, mine, "read")], [true, false]],
      ["two principals with the same id and different tenant attributes, the denied one first", [check(globex, mine, "read"), check(acme, mine, "read")], [false, true]],
    ] as const)("%s in one flush", async (_name, trap, want) => {
      const { result, checkResources, batches } = await pdpCalls(pdp, () => oneFlush(batcherFor(pool, protocol), [...trap, ...bystanders]));
      expect(result).toEqual([...want, ...bystandersAllowed]);
      // Two principals with one id: two calls (the bystanders ride in the first).
      expect({ checkResources, batches }).toEqual({ checkResources: 0, batches: 2 });
    });

    it("two resources with the same kind and id but different owners under one principal in one flush", async () => {
      const sizes: number[] = [];
      const { result, checkResources, batches } = await pdpCalls(pdp, () =>
        oneFlush(batcherFor(pool, protocol, { onBatch: (n) => sizes.push(n) }), [check(acme, mine, "edit"), check(acme, theirs, "edit"), ...bystanders]),
      );
      expect(result).toEqual([true, false, ...bystandersAllowed]);
      // authzen, and auto for a principal with few checks among several principals: the two
      // same-id resources never share an AuthZEN call.
      expect({ checkResources, batches }).toEqual({ checkResources: 0, batches: 2 });
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(5);
    });
  });

  it("principal scope and principal policy version: the three protocols agree", async () => {
    const draft = doc("1", { tenant: "acme", owner: "alice", status: "draft" });
    const checks = [
      check(principal("auditor", ["user"], { tenant: "none" }, { scope: "acme" }), draft, "edit"),
      check(principal("auditor", ["user"], { tenant: "none" }), draft, "edit"),
      check(principal("auditor", ["user"], { tenant: "none" }, { policyVersion: "v2" }), draft, "read"),
      check(principal("auditor", ["user"], { tenant: "none" }, { scope: "acme" }), doc("2", { status: "final" }), "edit"),
      check(principal("fin", ["manager"], { tenant: "acme", department: "finance" }, { scope: "acme" }), draft, "approve"),
      check(principal("rec", ["user"], { tenant: "acme", department: "records" }), doc("10", { tenant: "acme", status: "final" }, { scope: "acme" }), "archive"),
    ];
    const results: boolean[][] = [];
    for (const protocol of PROTOCOLS) results.push(await oneFlush(batcherFor(pool, protocol), checks));
    // Principal scope acme adds the auditor's scoped principal policy (edit drafts). Cerbos 0.55
    // picks principal policies by the RESOURCE's version, so the principal's policyVersion "v2"
    // changes nothing here: whatever the PDP makes of it, every protocol must agree.
    expect(results[0]!.slice(0, 2)).toEqual([true, false]);
    expect(results[0]!.slice(3)).toEqual([false, true, true]);
    expect(results[1]).toEqual(results[0]);
    expect(results[2]).toEqual(results[0]);
  });
});

// --- limits ------------------------------------------------------------------------------------

/** 49 checks from 25 principals at limits of 5 resources × 3 actions (15 evaluations) per call. */
interface LimitRow {
  readonly p: Principal;
  readonly tenant: string;
  readonly id: string;
  readonly owner?: string;
  readonly status?: string;
  readonly method: keyof typeof ACTIONS;
  readonly allowed: boolean;
}

function limitWorkload(): LimitRow[] {
  const rows: LimitRow[] = [];
  // One principal reading 7 docs (more than maxResourcesPerRequest = 5), first: with room left in
  // the first batch, only the per-subject limit keeps its sixth and seventh doc out of it.
  const heavy = principal("heavy", ["user"], { tenant: "acme" });
  for (let k = 0; k < 7; k++) {
    const tenant = k % 2 === 0 ? "acme" : "globex";
    rows.push({ p: heavy, tenant, id: `h${k}`, method: "GET", allowed: tenant === "acme" });
  }
  // 18 principals with one read each: allowed in their own tenant only.
  for (let i = 0; i < 18; i++) {
    const tenant = i % 2 === 0 ? "acme" : "globex";
    rows.push({ p: principal(`single${i}`, ["user"], { tenant }), tenant: "acme", id: `s${i}`, method: "GET", allowed: tenant === "acme" });
  }
  // 6 owners with 4 actions on their own doc (more than maxActionsPerResource = 3).
  for (let j = 0; j < 6; j++) {
    const id = `owner${j}`;
    const status = j % 2 === 0 ? "draft" : "final";
    const p = principal(id, ["user"], { tenant: "acme" });
    const base = { p, tenant: "acme", id: `o${j}`, owner: id, status };
    rows.push({ ...base, method: "GET", allowed: true }, { ...base, method: "PUT", allowed: status === "draft" }, { ...base, method: "POST", allowed: false }, { ...base, method: "DELETE", allowed: false });
  }
  return rows;
}

const limitCheck = (r: LimitRow): Check => ({
  principal: r.p,
  resource: doc(r.id, { tenant: r.tenant, ...(r.owner ? { owner: r.owner } : {}), ...(r.status ? { status: r.status } : {}) }),
  action: ACTIONS[r.method],
});

const limitRequest = (r: LimitRow): Row => {
  const query = [r.owner ? `owner=${r.owner}` : "", r.status ? `status=${r.status}` : ""].filter(Boolean).join("&");
  return {
    name: `${r.p.id} ${r.method} ${r.id}`,
    user: r.p.id,
    roles: r.p.roles.join(","),
    tenant: r.p.attr["tenant"] as string,
    method: r.method,
    uri: `/docs/${r.tenant}/${r.id}${query ? `?${query}` : ""}`,
    status: r.allowed ? 200 : 403,
  };
};

describe("a PDP with small request limits (5 resources × 3 actions)", () => {
  const LIMITS = { maxResourcesPerRequest: 5, maxActionsPerResource: 3 };
  const workload = limitWorkload();
  let small: TestPdp;
  let smallPool: PdpPool;
  let configDir: string;
  const codes: string[] = [];

  beforeAll(async () => {
    configDir = await mkdtemp(join(tmpdir(), "authzen-limits-"));
    const extraConfigFile = join(configDir, "limits.yaml");
    await writeFile(extraConfigFile, `server:\n  requestLimits:\n    maxResourcesPerRequest: ${LIMITS.maxResourcesPerRequest}\n    maxActionsPerResource: ${LIMITS.maxActionsPerResource}\n`);
    small = await startPdp({ policiesDir, extraConfigFile });
    smallPool = createPool({ target: small.grpcTarget, tls: false, connections: 2, timeoutMs: 5000, onCall: (code) => codes.push(code) });
  });
  afterAll(async () => {
    smallPool?.close();
    await small?.stop();
    if (configDir) await rm(configDir, { recursive: true, force: true });
  });

  it("the workload is 49 checks from 25 principals", () => {
    expect(workload).toHaveLength(49);
    expect(new Set(workload.map((r) => r.p.id)).size).toBe(25);
  });

  it("the PDP really enforces them (over them, the whole call is INVALID_ARGUMENT)", async () => {
    const r = doc("1", { tenant: "acme" });
    const many = (n: number) => Array.from({ length: n }, (_, i) => toEvaluation(principal(`p${i}`, ["user"], { tenant: "acme" }), r, "read"));
    expect(await smallPool.evaluateBatch(many(15))).toHaveLength(15);
    await expect(smallPool.evaluateBatch(many(16))).rejects.toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
    const p = principal("p", ["user"], { tenant: "acme" });
    const sixDocs = Array.from({ length: 6 }, (_, i) => toEvaluation(p, doc(`${i}`, {}), "read"));
    await expect(smallPool.evaluateBatch(sixDocs)).rejects.toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
    const fourActions = ["read", "edit", "approve", "delete"].map((a) => toEvaluation(p, r, a));
    await expect(smallPool.evaluateBatch(fourActions)).rejects.toMatchObject({ grpcCode: "INVALID_ARGUMENT" });
    await expect(smallPool.checkResources({ principal: p, entries: Array.from({ length: 6 }, (_, i) => ({ resource: doc(`${i}`, {}), actions: ["read"] })) })).rejects.toMatchObject({
      grpcCode: "INVALID_ARGUMENT",
    });
  });

  it.each(PROTOCOLS)("one flush of the workload with protocol %s: split within the limits, every answer right", async (protocol) => {
    codes.length = 0;
    const sizes: number[] = [];
    const batcher = batcherFor(smallPool, protocol, { ...LIMITS, onBatch: (n) => sizes.push(n) });
    const { result, checkResources, batches } = await pdpCalls(small, () => oneFlush(batcher, workload.map(limitCheck)));
    expect(result).toEqual(workload.map((r) => r.allowed));
    // No call was refused (a refusal would show as INVALID_ARGUMENT and a retry item by item).
    expect(codes.every((c) => c === "OK"), codes.join(",")).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(49);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(15);
    if (protocol === "checkresources") {
      // 18 singles + 6 owners (4 actions → 2 entries, 1 call each) + heavy (7 docs → 5 + 2).
      expect({ checkResources, batches }).toEqual({ checkResources: 18 + 6 + 2, batches: 0 });
    } else if (protocol === "auto") {
      // The 18 single-check principals in AuthZEN batches of ≤ 15; the others over CheckResources.
      expect({ checkResources, batches }).toEqual({ checkResources: 6 + 2, batches: 2 });
    } else {
      expect(checkResources).toBe(0);
      expect(batches).toBeGreaterThanOrEqual(Math.ceil(49 / 15));
      expect(batches).toBe(sizes.length);
    }
  });

  it.each(PROTOCOLS)("through the service with protocol %s: a burst of the workload, no 503, every answer right", async (protocol) => {
    const svc = await startService(small.grpcTarget, serviceConfig(protocol, LIMITS));
    try {
      await ready(svc, protocol);
      const rows = workload.map(limitRequest);
      const { result, checkResources, batches } = await pdpCalls(small, () => burst(svc.port, rows));
      expect(result).toEqual(expected(rows));
      // However the burst fell into flushes, no call carries more than 15 checks.
      expect(checkResources + batches).toBeGreaterThanOrEqual(Math.ceil(49 / 15));
      if (protocol === "checkresources") expect(batches).toBe(0);
      // No call was refused over the limits (the service counts PDP calls by gRPC status).
      const calls = await svc.app.metrics.registry.getSingleMetricAsString("cerbos_forwardauth_pdp_requests_total");
      expect(calls).toMatch(/code="OK"/);
      expect(calls).not.toMatch(/INVALID_ARGUMENT/);
    } finally {
      await svc.stop();
    }
  });
});

// --- fallback ----------------------------------------------------------------------------------

describe("a PDP without AuthZEN (a passthrough that serves only CheckResources and health)", () => {
  let pass: GrpcPassthrough;
  beforeAll(async () => {
    pass = await startGrpcPassthrough(pdp.grpcTarget);
  });
  afterAll(async () => {
    await pass?.close();
  });

  it("answers AuthZEN with UNIMPLEMENTED and CheckResources and health from the real PDP", async () => {
    const direct = createPool({ target: pass.target, tls: false, connections: 1, timeoutMs: 5000 });
    try {
      expect(await direct.probeAuthzen()).toBe(false);
      await expect(direct.evaluateBatch([toEvaluation(principal("a", ["admin"]), doc("1", {}), "delete")])).rejects.toMatchObject({ grpcCode: "UNIMPLEMENTED" });
      expect(await direct.healthy()).toBe(true);
      const res = await direct.checkResources({ principal: principal("a", ["admin"]), entries: [{ resource: doc("1", {}), actions: ["delete", "read"] }] });
      expect([res.results[0]!.allowed("delete"), res.results[0]!.allowed("read")]).toEqual([true, false]);
    } finally {
      direct.close();
    }
  });

  it.each(["auto", "authzen"] as const)("protocol %s: ready through the passthrough, every row right, no AuthZEN call reaches the PDP", async (protocol) => {
    const svc = await startService(pass.target, serviceConfig(protocol));
    try {
      const healthBefore = pass.calls(HEALTH_CHECK);
      await ready(svc, protocol, false);
      // /readyz is driven by grpc.health.v1.Health/Check, which the passthrough forwards.
      expect(pass.calls(HEALTH_CHECK)).toBeGreaterThan(healthBefore);
      const { result, checkResources, batches } = await pdpCalls(pdp, () => burst(svc.port, TABLE));
      expect(result).toEqual(expected(TABLE));
      expect(batches).toBe(0);
      expect(checkResources).toBeGreaterThan(0);
    } finally {
      await svc.stop();
    }
  });
});

describe("an AuthZEN service that fails while the service runs", () => {
  let pass: GrpcPassthrough;
  beforeAll(async () => {
    pass = await startGrpcPassthrough(pdp.grpcTarget, { authzen: true });
  });
  afterAll(async () => {
    await pass?.close();
  });

  it("auto: UNIMPLEMENTED mid-flight falls back to CheckResources item by item, every answer right, AuthZEN no longer tried", async () => {
    pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
    const svc = await startService(pass.target, serviceConfig("auto"));
    try {
      await ready(svc, "auto", true);
      pass.answerWith(ACCESS_EVALUATION_BATCH, "UNIMPLEMENTED");
      const refusedBefore = pass.calls(ACCESS_EVALUATION_BATCH);
      const first = await pdpCalls(pdp, () => burst(svc.port, TABLE));
      expect(first.result).toEqual(expected(TABLE));
      expect(first.batches).toBe(0);
      // At least one AuthZEN call was tried and refused, then the service gave AuthZEN up.
      expect(pass.calls(ACCESS_EVALUATION_BATCH)).toBeGreaterThan(refusedBefore);
      expect(svc.logs.some((l) => l.msg === "the PDP does not serve AuthZEN: using CheckResources only")).toBe(true);
      const afterFallback = pass.calls(ACCESS_EVALUATION_BATCH);
      const second = await pdpCalls(pdp, () => burst(svc.port, TABLE));
      expect(second.result).toEqual(expected(TABLE));
      expect(pass.calls(ACCESS_EVALUATION_BATCH)).toBe(afterFallback);
    } finally {
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      await svc.stop();
    }
  });

  it("auto: INVALID_ARGUMENT for a batch is retried item by item, every answer right, AuthZEN still used afterwards", async () => {
    const svc = await startService(pass.target, serviceConfig("auto"));
    try {
      await ready(svc, "auto", true);
      pass.answerWith(ACCESS_EVALUATION_BATCH, "INVALID_ARGUMENT");
      const refused = await pdpCalls(pdp, () => burst(svc.port, TABLE));
      expect(refused.result).toEqual(expected(TABLE));
      expect(refused.batches).toBe(0);
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      const again = await pdpCalls(pdp, () => burst(svc.port, TABLE));
      expect(again.result).toEqual(expected(TABLE));
      expect(again.batches).toBeGreaterThanOrEqual(1);
    } finally {
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      await svc.stop();
    }
  });

  it("authzen: a batch that fails UNAVAILABLE fails each of its waiters with 503 (none hangs); answers are right once it passes again", async () => {
    const svc = await startService(pass.target, serviceConfig("authzen"));
    try {
      await ready(svc, "authzen", true);
      pass.answerWith(ACCESS_EVALUATION_BATCH, "UNAVAILABLE");
      const down = await burst(svc.port, TABLE);
      expect(down.map((a) => a.status)).toEqual(TABLE.map(() => 503));
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      expect(await burst(svc.port, TABLE)).toEqual(expected(TABLE));
    } finally {
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      await svc.stop();
    }
  });

  // Regression: under `protocol: authzen`, an UNIMPLEMENTED answer must mark AuthZEN unavailable
  // and retry over CheckResources, also for a lone evaluation (before the fix in batcher.ts
  // evaluate(), three lone requests got 503, 503, 503 until the PDP went down and came back).
  it("authzen: after UNIMPLEMENTED mid-flight, a lone request is still answered (over CheckResources) and AuthZEN is no longer tried", async () => {
    const svc = await startService(pass.target, serviceConfig("authzen"));
    try {
      await ready(svc, "authzen", true);
      pass.answerWith(ACCESS_EVALUATION_BATCH, "UNIMPLEMENTED");
      const first = await burst(svc.port, TABLE);
      expect(first).toEqual(expected(TABLE));
      const tried = pass.calls(ACCESS_EVALUATION_BATCH);
      const lone: Array<{ name: string; status: number }> = [];
      for (const r of TABLE.slice(0, 4)) lone.push({ name: r.name, status: (await send(svc.port, r)).status });
      expect(lone).toEqual(expected(TABLE.slice(0, 4)));
      expect(pass.calls(ACCESS_EVALUATION_BATCH)).toBe(tried);
    } finally {
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      await svc.stop();
    }
  });

  it("auto: AuthZEN is learned again when the PDP comes back", async () => {
    // Start without AuthZEN: the probe says no.
    pass.answerWith(ACCESS_EVALUATION_BATCH, "UNIMPLEMENTED");
    const svc = await startService(pass.target, serviceConfig("auto"));
    try {
      await ready(svc, "auto", false);
      // The PDP goes down (health fails) and comes back serving AuthZEN.
      pass.answerWith(HEALTH_CHECK, "UNAVAILABLE");
      await waitFor(async () => (await rawRequest(svc.adminPort, { path: "/readyz" })).status === 503, { what: "/readyz 503" });
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      pass.answerWith(HEALTH_CHECK, undefined);
      await ready(svc, "auto", true);
      const { result, batches } = await pdpCalls(pdp, () => burst(svc.port, TABLE));
      expect(result).toEqual(expected(TABLE));
      expect(batches).toBeGreaterThanOrEqual(1);
    } finally {
      pass.answerWith(ACCESS_EVALUATION_BATCH, undefined);
      pass.answerWith(HEALTH_CHECK, undefined);
      await svc.stop();
    }
  });
});

it("every pool call of the PDP-behaviour and trap tests answered OK", () => {
  // Calls that are meant to be refused (the empty batch) are the only others.
  expect(poolCodes.filter((c) => c !== "OK")).toEqual(["INVALID_ARGUMENT"]);
});

