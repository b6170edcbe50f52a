/**
 * The Grafana dashboard (grafana/) against a real Prometheus (SPEC §8, issue 6).
 *
 * Structure: unique panel ids, a layout that fits, datasource references that the provisioning
 * defines, rate windows and selectors that follow the dashboard's variables, a scrape config
 * example that promtool accepts.
 *
 * Live: a real Cerbos PDP, the built CLI, and Debian's `prometheus` scraping the admin listener
 * every second (config derived from grafana/prometheus.yml). A mixed load (allow, deny, 401,
 * 400, cache hits and misses, concurrent misses that batch, identical concurrent checks that
 * coalesce), a short PDP outage (503, UNAVAILABLE) and a SIGHUP reload run while every target
 * expression of every panel is evaluated through /api/v1/query until each has returned at least
 * one finite sample. The dashboard's variables are replaced as Grafana would:
 *   $__rate_interval → RATE_INTERVAL (Grafana: max(4 × scrape interval, step + scrape interval);
 *                      with 1 s scrapes 15 s holds ~15 samples, so rate() has data at once)
 *   $job             → the scrape job of grafana/prometheus.yml
 *   $instance        → the variable's "All" value (.*)
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { forwarded, rawRequest, type HeaderLines } from "../support/http.js";
import { startPdp, type TestPdp } from "../support/pdp.js";
import { runCli, type CliProcess } from "../support/process.js";
import { PROMETHEUS_BIN, startPrometheus, type TestPrometheus } from "../support/prometheus.js";
import { waitFor } from "../support/service.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
const policiesDir = fileURLToPath(new URL("../fixtures/policies", import.meta.url));

/** What `$__rate_interval` becomes in this test (see the file comment). */
const RATE_INTERVAL = "15s";

interface Target {
  refId: string;
  expr: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  type: string;
  name: string;
  query: string | { query: string };
  datasource?: { type?: string; uid?: string };
  current?: { value?: string | string[] };
  includeAll?: boolean;
  allValue?: string;
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Variable[] };
}

const dashboard = JSON.parse(read("grafana/dashboards/cerbos-forwardauth.json")) as Dashboard;
const datasources = (parse(read("grafana/provisioning/datasources/prometheus.yaml")) as { datasources: Array<{ name: string; type: string; uid: string; jsonData?: Record<string, unknown> }> }).datasources;
const providers = (parse(read("grafana/provisioning/dashboards/cerbos-forwardauth.yaml")) as { providers: Array<{ type: string; options: { path: string } }> }).providers;
const scrapeExample = parse(read("grafana/prometheus.yml")) as {
  global?: Record<string, unknown>;
  scrape_configs: Array<{ job_name: string; metrics_path?: string; static_configs: Array<{ targets: string[] }> }>;
};

/** Every panel, including those inside collapsed rows. */
const allPanels = (panels: Panel[]): Panel[] => panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
const queryPanels = allPanels(dashboard.panels).filter((p) => p.type !== "row");
const targets = queryPanels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel, target, name: `"${panel.title}" ${target.refId}` })));
const variables = dashboard.templating.list;
const variableQuery = (v: Variable) => (typeof v.query === "string" ? v.query : v.query.query);

/** Replaces the dashboard's variables (`$name`, `${name}`); an unknown one is an error. */
function concrete(expr: string, values: Record<string, string>): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, braced: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!;
    if (!(name in values)) throw new Error(`unknown variable ${whole} in ${expr}`);
    return values[name]!;
  });
}

/** PromQL words that are not metric names. */
const PROMQL_WORDS = new Set(
  "sum min max avg count group stddev stdvar topk bottomk quantile count_values by without on ignoring group_left group_right and or unless bool offset rate irate increase delta idelta deriv histogram_quantile max_over_time min_over_time avg_over_time sum_over_time count_over_time last_over_time clamp clamp_min clamp_max abs vector scalar time label_replace label_join absent absent_over_time".split(" "),
);

/** Metric names of an expression: identifiers before a `{…}` selector. Throws on a bare identifier that is neither a metric with a selector nor a PromQL word. */
function metricNames(expr: string): string[] {
  const names = [...expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{/g)].map((m) => m[1]!);
  const rest = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, " ");
  for (const word of rest.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? []) {
    if (!PROMQL_WORDS.has(word)) throw new Error(`"${word}" in ${expr} is neither a PromQL word nor a metric with a {…} selector`);
  }
  return names;
}

/** Sample names a /metrics exposition provides, from its `# TYPE` lines (histograms: _bucket, _sum, _count). */
function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
    else if (type === "summary") for (const s of ["", "_sum", "_count"]) names.add(name + s);
    else names.add(name);
  }
  return names;
}

describe("Grafana dashboard: structure", () => {
  const provisioned = new Set(datasources.filter((d) => d.type === "prometheus").map((d) => d.uid));
  const dsVariables = new Map(variables.filter((v) => v.type === "datasource").map((v) => [v.name, v]));
  /** A datasource uid as written, or the default of the datasource variable it names. */
  const resolveUid = (uid: string | undefined) => {
    const m = /^\$\{?(\w+)\}?$/.exec(uid ?? "");
    if (!m) return uid;
    const v = dsVariables.get(m[1]!);
    return typeof v?.current?.value === "string" ? v.current.value : undefined;
  };

  it("has a fixed uid, a title and a current schema version", () => {
    expect(dashboard.uid).toBe("cerbos-forwardauth");
    expect(dashboard.title).toBeTruthy();
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(queryPanels.length).toBeGreaterThanOrEqual(12);
  });

  it("has unique integer panel ids and a layout without overlaps within 24 columns", () => {
    const panels = allPanels(dashboard.panels);
    const ids = panels.map((p) => p.id);
    for (const id of ids) expect(Number.isInteger(id)).toBe(true);
    expect(new Set(ids).size, `duplicate ids in ${ids.join(",")}`).toBe(ids.length);
    for (const p of panels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    const top = dashboard.panels; // collapsed rows' children are laid out when expanded
    for (const [i, a] of top.entries()) {
      for (const b of top.slice(i + 1)) {
        const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w && a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h;
        expect(overlap, `"${a.title}" overlaps "${b.title}"`).toBe(false);
      }
    }
  });

  it("refers only to datasources the provisioning defines", () => {
    expect(provisioned.size).toBeGreaterThan(0);
    for (const v of dsVariables.values()) {
      expect(v.query, `datasource variable ${v.name}`).toBe("prometheus");
      expect(provisioned.has(String(v.current?.value)), `default of $${v.name}: ${JSON.stringify(v.current)}`).toBe(true);
    }
    const refs = [
      ...queryPanels.map((p) => ({ where: `panel "${p.title}"`, ds: p.datasource })),
      ...targets.map((t) => ({ where: t.name, ds: t.target.datasource ?? t.panel.datasource })),
      ...variables.filter((v) => v.type === "query").map((v) => ({ where: `variable ${v.name}`, ds: v.datasource })),
    ];
    for (const { where, ds } of refs) {
      expect(ds?.type, where).toBe("prometheus");
      expect(provisioned.has(resolveUid(ds?.uid) ?? ""), `${where}: datasource uid ${ds?.uid}`).toBe(true);
    }
  });

  it("gives every panel a query, rate windows of $__rate_interval and selectors on $job and $instance", () => {
    for (const panel of queryPanels) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      const refIds = panel.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, panel.title).toBe(refIds.length);
    }
    for (const { name, target } of targets) {
      expect(target.expr, name).toBeTruthy();
      for (const m of target.expr.matchAll(/\[([^\]]*)\]/g)) expect(m[1], name).toBe("$__rate_interval");
      for (const m of target.expr.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*\s*\{([^}]*)\}/g)) {
        expect(m[1], name).toContain('job="$job"');
        expect(m[1], name).toContain('instance=~"$instance"');
      }
      expect(metricNames(target.expr).length, name).toBeGreaterThan(0);
    }
  });

  it("is provisioned by a file provider, with a Prometheus datasource that knows the scrape interval", () => {
    expect(providers.length).toBeGreaterThan(0);
    for (const p of providers) {
      expect(p.type).toBe("file");
      expect(p.options.path).toMatch(/^\//);
    }
    const prom = datasources.find((d) => d.type === "prometheus")!;
    expect(prom.jsonData?.timeInterval).toMatch(/^\d+[smh]$/);
  });

  it("ships a scrape config example that promtool accepts, scraping /metrics", () => {
    const out = execFileSync(PROMETHEUS_BIN.replace(/prometheus$/, "promtool"), ["check", "config", join(ROOT, "grafana/prometheus.yml")], { encoding: "utf8" });
    expect(out).toContain("SUCCESS");
    expect(scrapeExample.scrape_configs).toHaveLength(1);
    expect(scrapeExample.scrape_configs[0]!.metrics_path ?? "/metrics").toBe("/metrics");
  });
});

const ALICE: HeaderLines = [
  ["Remote-User", "alice"],
  ["Remote-Groups", "user"],
];

const serviceConfig = (pdpTarget: string) => `
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
pdp: { address: "${pdpTarget}" }
identity:
  trustedHeaders: { id: Remote-User, roles: Remote-Groups }
batch: { maxDelayMs: 2 }
unmatched: generic
routes:
  - name: documents
    path: /documents/:id
    resource: { kind: document, id: "{params.id}" }
    actions: { GET: read, DELETE: delete }
log: { level: info, decisions: none }
`;

describe("Grafana dashboard: every panel query returns data from a real Prometheus", () => {
  let pdp: TestPdp;
  let cli: CliProcess | undefined;
  let prom: TestPrometheus | undefined;
  let dir: string;
  let port: number;
  let adminPort: number;
  const job = scrapeExample.scrape_configs[0]!.job_name;
  const instanceVar = variables.find((v) => v.name === "instance")!;
  const values = { __rate_interval: RATE_INTERVAL, job, instance: instanceVar.allValue ?? ".*" };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "cfa-dashboard-"));
    pdp = await startPdp({ policiesDir });
    const configPath = join(dir, "config.yaml");
    writeFileSync(configPath, serviceConfig(pdp.grpcTarget));
    cli = runCli(["--config", configPath]);
    const ready = await waitFor(() => cli!.logs().find((l) => l.msg === "cerbos-forwardauth listening"), {
      timeoutMs: 30_000,
      what: `service start (stderr: ${cli.stderr()})`,
    });
    port = ready.port as number;
    adminPort = ready.admin as number;

    // The example scrape config, pointed at this service and scraping every second.
    const config = structuredClone(scrapeExample);
    config.global = { ...config.global, scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" };
    config.scrape_configs[0]!.static_configs = [{ targets: [`127.0.0.1:${adminPort}`] }];
    prom = await startPrometheus(config);
  });

  afterAll(async () => {
    await prom?.stop();
    if (cli && cli.child.exitCode === null && cli.child.signalCode === null) {
      cli.child.kill("SIGTERM");
      const exited = await Promise.race([cli.exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (!exited) {
        cli.child.kill("SIGKILL");
        await cli.exited;
      }
    }
    await pdp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("exports every metric name the dashboard refers to", async () => {
    const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
    expect(res.status).toBe(200);
    const exported = exportedNames(await res.text());
    const referenced = new Set(targets.flatMap((t) => metricNames(t.target.expr)));
    const missing = [...referenced].filter((n) => !exported.has(n));
    expect(missing, `referenced by the dashboard but not exported: ${missing.join(", ")}`).toEqual([]);
    for (const v of variables.filter((v) => v.type === "query")) {
      for (const n of metricNames(variableQuery(v).replace(/^label_values\((.*),\s*\w+\)$/, "$1{}"))) expect(exported.has(n), n).toBe(true);
    }
  });

  it("answers the variable queries with this job and instance", async () => {
    await waitFor(async () => (await prom!.query(`up{job="${job}"} == 1`)).length === 1, { timeoutMs: 15_000, what: "target up" });
    const expected: Record<string, string> = { job, instance: `127.0.0.1:${adminPort}` };
    for (const v of variables.filter((v) => v.type === "query")) {
      const m = /^label_values\((.+),\s*(\w+)\)$/.exec(variableQuery(v));
      expect(m, `variable ${v.name}: ${variableQuery(v)}`).toBeTruthy();
      const [, selector, label] = m as unknown as [string, string, string];
      const got = await prom!.api<string[]>(`label/${label}/values`, { "match[]": concrete(selector, values) });
      expect(got, `variable ${v.name}`).toContain(expected[label]);
    }
  });

  it(
    "returns at least one series with data for every target of every panel under load",
    async () => {
      const started = Date.now();
      const ask = (method: string, uri: string, extra: HeaderLines = ALICE) =>
        rawRequest(port, { headers: forwarded(method, uri, undefined, extra), timeoutMs: 5000 }).catch(() => undefined);
      /** One round of mixed traffic, sent concurrently so misses batch and identical checks coalesce. */
      const round = (n: number) =>
        Promise.all([
          ...Array.from({ length: 12 }, (_, i) => ask("GET", `/api/items/${n}-${i}`)), // misses → allow, batched
          ...Array.from({ length: 5 }, () => ask("GET", `/api/burst/${n}`)), // identical → coalesced
          ...Array.from({ length: 3 }, () => ask("GET", "/api/hot")), // cache hits
          ask("GET", `/admin/${n}`), // deny (miss)
          ask("GET", "/admin/x"), // deny (hit while the deny TTL lasts)
          ask("GET", `/documents/${n}`), // route documents → allow
          ask("DELETE", `/documents/${n}`), // route documents → deny (not the owner)
          ask("GET", "/api/anonymous", []), // 401: no identity
          rawRequest(port, { headers: [["X-Forwarded-Method", "GET"]], timeoutMs: 5000 }).catch(() => undefined), // 400
        ]);
      let loading = true;
      const load = (async () => {
        for (let n = 0; loading; n++) {
          await round(n);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();

      const pending = new Map(targets.map((t) => [t.name, concrete(t.target.expr, values)]));
      const results = new Map<string, Awaited<ReturnType<TestPrometheus["query"]>>>();
      const labelsSeen = { outcome: new Set<string>(), route: new Set<string>(), code: new Set<string>(), result: new Set<string>() };
      let maxBatchP99 = 0;
      let reloads = 0;
      const evaluate = async () => {
        await Promise.all(
          targets.map(async ({ name, target }) => {
            const samples = (await prom!.query(concrete(target.expr, values))).filter((s) => Number.isFinite(s.value));
            if (samples.length === 0) return;
            pending.delete(name);
            results.set(name, samples);
            for (const s of samples) {
              for (const [label, seen] of Object.entries(labelsSeen)) if (s.metric[label] !== undefined && s.value > 0) seen.add(s.metric[label]);
            }
            if (/cerbos_forwardauth_batch_size_bucket/.test(target.expr) && target.expr.startsWith("histogram_quantile(0.99")) {
              maxBatchP99 = Math.max(maxBatchP99, ...samples.map((s) => s.value));
            }
            if (/config_reloads_total/.test(target.expr)) reloads = Math.max(reloads, ...samples.filter((s) => s.metric.result === "success").map((s) => s.value));
          }),
        );
      };
      const want = { outcome: ["allow", "deny", "unauthenticated", "bad_request", "unavailable"], route: ["generic", "documents", "-"], code: ["OK", "UNAVAILABLE"], result: ["hit", "miss"] };
      const satisfied = () =>
        pending.size === 0 && Object.entries(want).every(([label, vs]) => vs.every((v) => labelsSeen[label as keyof typeof labelsSeen].has(v))) && maxBatchP99 > 1 && reloads > 0;

      try {
        // Some traffic in Prometheus first, then a short PDP outage (503s, UNAVAILABLE calls,
        // pdp_up 0) and a reload of the unchanged config file.
        await waitFor(async () => (await prom!.query(`cerbos_forwardauth_requests_total{job="${job}"}`)).length > 0, { timeoutMs: 10_000, what: "requests scraped" });
        await pdp.stop();
        await new Promise((r) => setTimeout(r, 1500));
        await pdp.start();
        cli!.child.kill("SIGHUP");

        const deadline = Date.now() + 35_000;
        while (!satisfied() && Date.now() < deadline) {
          await evaluate();
          if (!satisfied()) await new Promise((r) => setTimeout(r, 500));
        }
      } finally {
        loading = false;
        await load;
      }
      const summary = JSON.stringify({ pending: Object.fromEntries(pending), labelsSeen: Object.fromEntries(Object.entries(labelsSeen).map(([k, v]) => [k, [...v]])), maxBatchP99, reloads });
      expect([...pending.keys()], summary).toEqual([]);
      for (const [label, vs] of Object.entries(want)) expect([...labelsSeen[label as keyof typeof labelsSeen]], `${label}: ${summary}`).toEqual(expect.arrayContaining(vs));
      expect(maxBatchP99, "batch size p99 > 1: concurrent misses share a PDP call").toBeGreaterThan(1);
      expect(reloads, "the SIGHUP reload shows in the reloads panel").toBeGreaterThan(0);
      expect(cli!.logs().some((l) => l.msg === "configuration reloaded")).toBe(true);
      console.log(`all ${targets.length} targets of ${queryPanels.length} panels returned data after ${Date.now() - started} ms`);
    },
    55_000,
  );
});
