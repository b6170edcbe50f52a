import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { describeConfigProblems, loadConfigFile, parseConfig, substitute } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";

const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/config");
const BASE = "/srv/fa";

function parse(text: string, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(text, { baseDir: BASE, env });
}

/** The problem lines of the ConfigError that `fn` throws. */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

const MINIMAL = "pdp:\n  address: 127.0.0.1:3593\n";

describe("defaults", () => {
  it("fills in every default from a minimal config", () => {
    const c = parse(MINIMAL);
    expect(c.listen).toBe("127.0.0.1:8080");
    expect(c.admin.listen).toBe("127.0.0.1:9090");
    expect(c.pdp).toEqual({
      address: "127.0.0.1:3593",
      tls: false,
      timeoutMs: 250,
      connections: 2,
      maxPendingChecks: 10_000,
      maxResourcesPerRequest: 50,
      maxActionsPerResource: 50,
      protocol: "auto",
    });
    expect(c.cache).toEqual({ maxEntries: 100_000, allowTtlMs: 10_000, denyTtlMs: 2_000 });
    expect(c.batch).toEqual({ maxDelayMs: 0, maxCallsInFlight: 2 });
    expect(c.unmatched).toBe("generic");
    expect(c.log).toEqual({ level: "info", decisions: "deny" });
    expect(c.paths).toEqual({ mergeSlashes: false, stripMatrixParams: false, caseInsensitive: false });
    expect(c.routes).toEqual([]);
    expect(c.response).toEqual({ headers: {} });
    expect(c.identity).toEqual({});
  });

  it("fills in route defaults", () => {
    const c = parse(`${MINIMAL}routes:\n  - name: r\n    resource: { kind: k, id: x }\n    action: read\n`);
    expect(c.routes[0]).toEqual({ name: "r", resource: { kind: "k", id: "x", attr: {} }, action: "read", shadow: false, cache: true });
  });

  it("treats an empty file as an empty mapping and names what is missing", () => {
    expect(problemsOf(() => parse(""))).toEqual(["pdp: exactly one of pdp.address and pdp.embedded is required"]);
  });
});

describe("${VAR} substitution", () => {
  it("replaces ${VAR} and ${VAR:-default} in string values", () => {
    const c = parse(
      'pdp:\n  address: "${PDP_HOST}:${PDP_PORT:-3593}"\nlisten: ${LISTEN:-0.0.0.0:8080}\nlog:\n  level: "${LEVEL:-warn}"\n',
      { PDP_HOST: "pdp.internal", LEVEL: "" },
    );
    expect(c.pdp.address).toBe("pdp.internal:3593");
    expect(c.listen).toBe("0.0.0.0:8080");
    expect(c.log.level).toBe("warn"); // ":-" also applies to a set but empty variable
  });

  it("uses the value of a set variable over the default", () => {
    expect(parse("pdp:\n  address: ${ADDR:-127.0.0.1:1}\n", { ADDR: "10.0.0.1:3593" }).pdp.address).toBe("10.0.0.1:3593");
  });

  it("reports every unset variable without default, with its path", () => {
    const problems = problemsOf(() => parse('pdp:\n  address: "${PDP_ADDRESS}"\nlisten: "${HOST}:${PORT:-80}"\n'));
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^pdp\.address: environment variable PDP_ADDRESS is not set/);
    expect(problems[1]).toMatch(/^listen: environment variable HOST is not set/);
  });

  it("does not repeat a substitution problem as a schema problem at the same path", () => {
    // The unset variable leaves "" (not host:port): only the substitution problem is shown.
    expect(problemsOf(() => parse("pdp:\n  address: ${NOPE}\n"))).toEqual([
      expect.stringMatching(/^pdp\.address: environment variable NOPE is not set/),
    ]);
  });

  it('reads "$${" as a literal "${" and does not substitute it', () => {
    const c = parse(`${MINIMAL}identity:\n  anonymous:\n    id: "$\${HOME}"\n    roles:\n      - $\${HOME}\n`, { HOME: "/root" });
    expect(c.identity.anonymous).toMatchObject({ id: "${HOME}", roles: ["${HOME}"] });
  });

  it("does not substitute in keys nor re-scan substituted text", () => {
    expect(problemsOf(() => parse(`${MINIMAL}"\${KEY}": 1\n`, { KEY: "listen" }))).toEqual(['["${KEY}"]: unknown key']);
    const c = parse(`${MINIMAL}identity:\n  anonymous:\n    id: \${V}\n    roles: [a]\n`, { V: "${OTHER}", OTHER: "x" });
    expect(c.identity.anonymous?.id).toBe("${OTHER}");
  });

  it("reports a malformed or unclosed reference", () => {
    const problems = problemsOf(() => parse(`${MINIMAL}response:\n  headers:\n    X-A: "\${1BAD}"\n    X-B: "\${OPEN"\n`));
    expect(problems).toEqual([
      expect.stringMatching(/^response\.headers\.X-A: malformed "\$\{1BAD\}"/),
      expect.stringMatching(/^response\.headers\.X-B: unclosed "\$\{"/),
    ]);
  });

  it("substitutes inside lists and nested mappings", () => {
    const c = parse(`${MINIMAL}identity:\n  anonymous:\n    id: \${ANON:-guest}\n    roles: [anonymous, "\${EXTRA_ROLE}"]\n`, { EXTRA_ROLE: "visitor" });
    expect(c.identity.anonymous).toEqual({ id: "guest", roles: ["anonymous", "visitor"], attr: {} });
  });

  it("unit: substitute() on its own", () => {
    expect(substitute("a${X}b${Y:-d}c$${Z}", { X: "1" })).toEqual({ text: "a1bdc${Z}", substituted: true, problems: [] });
    expect(substitute("$$ and $x stay", {})).toEqual({ text: "$$ and $x stay", substituted: false, problems: [] });
    expect(substitute("${A:-}", {}).text).toBe("");
    expect(substitute("${A:-x:-y}", {}).text).toBe("x:-y");
  });
});

describe("typed substitution in plain scalars", () => {
  it("reads an unquoted substituted number or boolean as YAML would", () => {
    const yaml = `${MINIMAL}  timeoutMs: \${TIMEOUT:-250}\npaths:\n  mergeSlashes: \${MERGE:-false}\n  caseInsensitive: \${CI}\n`;
    const byDefault = parse(yaml, { CI: "true" });
    expect(byDefault.pdp.timeoutMs).toBe(250);
    expect(byDefault.paths.mergeSlashes).toBe(false);
    expect(byDefault.paths.caseInsensitive).toBe(true);
    expect(parse(yaml, { TIMEOUT: "400", MERGE: "true", CI: "false" }).pdp.timeoutMs).toBe(400);
  });

  it("keeps a quoted substitution a string", () => {
    expect(problemsOf(() => parse(`${MINIMAL}  timeoutMs: "\${TIMEOUT:-250}"\n`))).toEqual(["pdp.timeoutMs: expected a number, got a string"]);
  });

  it("keeps an empty result a string (not null)", () => {
    const c = parse(`${MINIMAL}routes:\n  - name: r\n    resource:\n      kind: k\n      id: x\n      scope: \${SCOPE:-}\n    action: read\n`);
    expect(c.routes[0]!.resource.scope).toBe("");
  });

  it("tells to quote a value that became a number where a string is expected", () => {
    const yaml = `${MINIMAL}routes:\n  - name: r\n    resource:\n      kind: k\n      id: \${ID}\n    action: read\n`;
    expect(problemsOf(() => parse(yaml, { ID: "123" }))).toEqual([expect.stringMatching(/^routes\[0\]\.resource\.id: expected a string, got number 123 .*quote/)]);
    const quoted = yaml.replace("id: ${ID}", 'id: "${ID}"');
    expect(parse(quoted, { ID: "123" }).routes[0]!.resource.id).toBe("123");
  });
});

describe("unknown keys", () => {
  it("reports each unknown key with its full path", () => {
    const problems = problemsOf(() =>
      parse(`${MINIMAL}  conections: 2\ncaches:\n  maxEntries: 1\nroutes:\n  - name: r\n    resource: { kind: k, id: x, atr: {} }\n    action: read\n    cached: false\nlog:\n  format: json\n`),
    );
    expect([...problems].sort()).toEqual(
      ["caches: unknown key", "log.format: unknown key", "pdp.conections: unknown key", "routes[0].cached: unknown key", "routes[0].resource.atr: unknown key"].sort(),
    );
  });

  it("names every unknown key of one mapping separately", () => {
    expect(problemsOf(() => parse(`${MINIMAL}foo: 1\nbar: 2\n`))).toEqual(["foo: unknown key", "bar: unknown key"]);
  });

  it("reports unknown keys in the tls mapping", () => {
    expect(problemsOf(() => parse(`${MINIMAL}  tls:\n    ca: ca.pem\n    insecure: true\n`))).toEqual(["pdp.tls.insecure: unknown key"]);
  });
});

describe("all problems at once", () => {
  it("reports every mistake of a config in one ConfigError", () => {
    const yaml = `
listen: 127.0.0.1:8080
caches:
  maxEntries: 10
pdp:
  address: 127.0.0.1:3593
  embedded:
    policies: ./policies
routes:
  - name: orders
    path: /orders/:id
    resource:
      kind: order
    action: read
  - name: items
    path: /items/:id
    resource:
      kind: item
      id: "{params.nope}"
    action: read
  - name: orders
    resource:
      kind: order
      id: x
    actions:
      GET: read
      get: read
`;
    let error: unknown;
    try {
      parse(yaml);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect([...problems].sort()).toEqual(
      [
        "caches: unknown key",
        "pdp: exactly one of pdp.address and pdp.embedded is required",
        "routes[0].resource.id: required",
        'routes[1].resource.id: unknown template variable "{params.nope}" (path "/items/:id" has :id)',
        'routes[2].name: duplicate route name "orders"',
        'routes[2].actions.get: invalid key: expected an upper-case method token, got "get"',
      ].sort(),
    );
    expect((error as ConfigError).message).toContain('  - routes[2].name: duplicate route name "orders"');
  });

  it("reports template, type, enum and range problems together", () => {
    const yaml = `
listen: nohost
admin:
  listen: 127.0.0.1:70000
pdp:
  address: 127.0.0.1:3593
  timeoutMs: 0
  tls: "yes"
unmatched: allow
routes:
  - name: r
    resource:
      kind: "{nope}"
      id: "{headers.X-Tenant}"
      attr:
        tenant: "{query.t"
        n: 3
    action: "{method}"
response:
  headers:
    "Bad Header": x
`;
    expect([...problemsOf(() => parse(yaml))].sort()).toEqual(
      [
        'listen: expected host:port, got "nohost"',
        "admin.listen: port must be 0–65535",
        "pdp.timeoutMs: must be at least 1",
        "pdp.tls: expected false, true or a mapping, got a string",
        'unmatched: expected one of "generic" | "deny", got "allow"',
        'routes[0].resource.kind: unknown template variable "{nope}"',
        'routes[0].resource.id: header names in templates are lower-case: "{headers.X-Tenant}"',
        'routes[0].resource.attr.tenant: unclosed "{" at offset 0',
        'response.headers["Bad Header"]: invalid key: expected an HTTP header name, got "Bad Header"',
      ].sort(),
    );
  });

  it("accepts {params.NAME} that the route path declares, and {params.*} for its wildcard", () => {
    const c = parse(`${MINIMAL}routes:\n  - name: r\n    path: /t/:tenant/o/:id/*\n    resource:\n      kind: o\n      id: "{params.tenant}/{params.id}/{params.*}"\n    action: read\n`);
    expect(c.routes[0]!.resource.id).toBe("{params.tenant}/{params.id}/{params.*}");
  });

  it("reports {params.NAME} in any template of a route without that parameter", () => {
    const yaml = `${MINIMAL}routes:\n  - name: r\n    resource:\n      kind: "{params.k}"\n      id: x\n      attr:\n        list: ["{params.a}"]\n    action: "{params.m}"\n`;
    expect(problemsOf(() => parse(yaml))).toEqual([
      'routes[0].resource.kind: unknown template variable "{params.k}" (the route has no path)',
      'routes[0].resource.attr.list[0]: unknown template variable "{params.a}" (the route has no path)',
      'routes[0].action: unknown template variable "{params.m}" (the route has no path)',
    ]);
  });
});

describe("action / actions", () => {
  const route = (extra: string) => `${MINIMAL}routes:\n  - name: r\n    resource: { kind: k, id: x }\n${extra}`;

  it("requires exactly one of action and actions", () => {
    expect(problemsOf(() => parse(route("")))).toEqual(["routes[0]: exactly one of action and actions is required"]);
    expect(problemsOf(() => parse(route("    action: read\n    actions: { GET: read }\n")))).toEqual([
      "routes[0]: exactly one of action and actions is required",
    ]);
  });

  it("accepts either one", () => {
    expect(parse(route("    action: read\n")).routes[0]!.action).toBe("read");
    expect(parse(route("    actions: { GET: read, DELETE: delete }\n")).routes[0]!.actions).toEqual({ GET: "read", DELETE: "delete" });
  });
});

describe("YAML", () => {
  it("rejects duplicate keys with their line and column", () => {
    const problems = problemsOf(() => parse("pdp:\n  address: a:1\n  address: b:2\n"));
    expect(problems).toEqual(['line 3, column 3: Map keys must be unique ("address")']);
  });

  it("names the source in syntax errors and stops before the schema", () => {
    const problems = problemsOf(() => parseConfig("bogus: [1\npdp: {", { baseDir: BASE, env: {}, source: "fa.yaml" }));
    expect(problems.length).toBeGreaterThan(0);
    for (const p of problems) expect(p).toMatch(/^(fa\.yaml:\d+:\d+: |… and \d+ more)/);
    expect(problems.join("\n")).not.toContain("unknown key");
  });

  it("reports a top level that is not a mapping", () => {
    expect(problemsOf(() => parse("- a\n- b\n"))).toEqual(["(top level): expected a mapping, got a list"]);
  });
});

describe("file paths", () => {
  it("resolves relative paths against the config folder and keeps absolute ones", () => {
    const c = parse("pdp:\n  embedded:\n    policies: policies\n    config: /etc/cerbos.yaml\n");
    expect(c.pdp.embedded).toEqual({ policies: join(BASE, "policies"), config: "/etc/cerbos.yaml" });
  });

  it("loadConfigFile resolves against the file's own folder", () => {
    const c = loadConfigFile(join(FIXTURES, "embedded.yaml"), {});
    expect(c.pdp.embedded).toEqual({ policies: join(FIXTURES, "policies"), config: resolve(FIXTURES, "../cerbos.yaml") });
    expect(c.routes[0]!.actions).toEqual({ GET: "read" });
  });

  it("resolves tls files and substitutes from the env argument", () => {
    const c = loadConfigFile(join(FIXTURES, "tls.yaml"), { PDP_ADDRESS: "pdp:3593" });
    expect(c.pdp.address).toBe("pdp:3593");
    expect(c.pdp.tls).toEqual({
      ca: join(FIXTURES, "certs/ca.pem"),
      cert: join(FIXTURES, "certs/client.pem"),
      key: "/etc/keys/client.key",
      serverName: "pdp.internal",
    });
  });

  it("reports an unreadable file as a ConfigError", () => {
    const problems = problemsOf(() => loadConfigFile(join(FIXTURES, "does-not-exist.yaml"), {}));
    expect(problems).toEqual([expect.stringMatching(/^cannot read config file ".*does-not-exist\.yaml": ENOENT/)]);
  });

  it("rejects tls for the embedded PDP", () => {
    expect(problemsOf(() => parse("pdp:\n  embedded:\n    policies: p\n  tls: true\n"))).toEqual([
      "pdp.tls: tls does not apply to the embedded PDP (unix socket)",
    ]);
  });
});

describe("frozen result", () => {
  const c = parse(
    `${MINIMAL}routes:\n  - name: r\n    resource:\n      kind: k\n      id: x\n      attr: { list: [1, { a: b }] }\n    action: read\n`,
  );

  it("is deeply frozen", () => {
    const unfrozen: string[] = [];
    const walk = (v: unknown, path: string): void => {
      if (typeof v !== "object" || v === null) return;
      if (!Object.isFrozen(v)) unfrozen.push(path);
      for (const [k, child] of Object.entries(v)) walk(child, `${path}.${k}`);
    };
    walk(c, "config");
    expect(unfrozen).toEqual([]);
  });

  it("throws on mutation (ESM is strict mode)", () => {
    expect(() => {
      (c as { listen: string }).listen = "0.0.0.0:1";
    }).toThrow(TypeError);
    expect(() => {
      (c.routes as unknown as unknown[]).push({});
    }).toThrow(TypeError);
    expect(() => {
      (c.response.headers as Record<string, string>)["X-New"] = "x";
    }).toThrow(TypeError);
  });

  it("shares no default objects between two loads", () => {
    const a = parse(MINIMAL);
    const b = parse(MINIMAL);
    expect(a.response.headers).not.toBe(b.response.headers);
    expect(a.identity).not.toBe(b.identity);
  });
});

describe("describeConfigProblems", () => {
  it("prints one problem per line", () => {
    let text = "";
    try {
      parse(`${MINIMAL}foo: 1\nbar: 2\n`);
    } catch (e) {
      text = describeConfigProblems(e);
    }
    expect(text).toBe("foo: unknown key\nbar: unknown key");
  });

  it("falls back to the message of other errors", () => {
    expect(describeConfigProblems(new Error("boom"))).toBe("boom");
    expect(describeConfigProblems("plain")).toBe("plain");
  });
});
