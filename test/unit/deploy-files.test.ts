/**
 * The deployment files people copy, checked against what the service really reads and emits:
 * examples/traefik (static + dynamic config, compose file, service config), examples/kubernetes
 * (manifests, the Traefik Middleware against the CRD model of @kubernetes-models/traefik),
 * examples/caddy and examples/nginx (header lists), the Dockerfile and .dockerignore (no Docker
 * engine here: its sources must exist, its build stage must compile from exactly what it copies,
 * its entry point must be what `npm run build` produces), and the README's deployment sections (they may point only
 * at files checked here or run by the e2e tests).
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, posix, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { IngressRoute } from "@kubernetes-models/traefik/traefik.io/v1alpha1/IngressRoute";
import { Middleware } from "@kubernetes-models/traefik/traefik.io/v1alpha1/Middleware";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { compileMapper } from "../../src/mapping/mapper.js";
import { parseTemplate } from "../../src/mapping/template.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const at = (...parts: string[]) => join(ROOT, ...parts);
const read = (...parts: string[]) => readFileSync(at(...parts), "utf8");
const yamlFile = (...parts: string[]) => parse(read(...parts)) as any;

const pkg = JSON.parse(read("package.json")) as {
  version: string;
  bin: Record<string, string>;
  optionalDependencies: Record<string, string>;
};
/** The Cerbos version the tests run (the packaged binary); the example images must use the same. */
const CERBOS_VERSION = (
  JSON.parse(readFileSync(createRequire(import.meta.url).resolve("@cerbos/cerbos-linux-x64/package.json"), "utf8")) as { version: string }
).version;

/** A service config file's text, validated by the real loader (no environment) and mapper. */
function serviceConfig(text: string, source: string): Config {
  const config = parseConfig(text, { baseDir: ROOT, env: {}, source });
  compileMapper(config);
  return config;
}

const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));
const hostOf = (hostPort: string) => hostPort.slice(0, hostPort.lastIndexOf(":"));
const lower = (names: Iterable<string>) => [...names].map((n) => n.toLowerCase()).sort();

/**
 * The request headers the service reads, for Traefik's authRequestHeaders: trusted identity
 * headers, the JWT header or cookie, every {headers.NAME} in route and response templates,
 * X-Request-Id, and its own identity headers (a client-sent copy must reach it to be refused).
 */
function headersTheServiceReads(config: Config): string[] {
  const names = new Set<string>(["x-request-id"]);
  const th = config.identity.trustedHeaders;
  if (th) {
    names.add(th.id);
    if (th.roles) names.add(th.roles);
    for (const h of Object.values(th.attr)) names.add(h);
  }
  const jwt = config.identity.jwt;
  if (jwt) names.add(jwt.cookie ? "cookie" : (jwt.header ?? "authorization"));
  const visit = (value: unknown): void => {
    if (typeof value === "string") {
      const parsed = parseTemplate(value);
      if (parsed.ok) for (const v of parsed.variables) if (v.startsWith("headers.")) names.add(v.slice("headers.".length));
    } else if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === "object") Object.values(value).forEach(visit);
  };
  for (const route of config.routes) visit([route.resource, route.action ?? null, route.actions ?? null]);
  visit(config.response.headers);
  for (const name of Object.keys(config.response.headers)) names.add(name);
  return lower(names);
}

/** forwardAuth fields of the Traefik CRD model in @kubernetes-models/traefik (traefik.io/v1alpha1). */
const CRD_FORWARD_AUTH_FIELDS = ["address", "authRequestHeaders", "authResponseHeaders", "authResponseHeadersRegex", "tls", "trustForwardHeader"];

/** The checks shared by the file-provider middleware and the Kubernetes Middleware. */
function checkForwardAuth(fa: Record<string, unknown>, config: Config, address: string): void {
  // The CRD model does not refuse unknown keys; a misspelt key would be silently ignored by Traefik.
  expect(Object.keys(fa).filter((k) => !CRD_FORWARD_AUTH_FIELDS.includes(k))).toEqual([]);
  expect(fa.address).toBe(address);
  expect(fa.trustForwardHeader).toBe(false);
  // Exactly the identity headers the service sets, in its spelling.
  expect([...(fa.authResponseHeaders as string[])].sort()).toEqual(Object.keys(config.response.headers).sort());
  expect(config.response.headers).not.toEqual({});
  expect(fa.authResponseHeadersRegex).toBeUndefined();
  expect(lower(fa.authRequestHeaders as string[])).toEqual(headersTheServiceReads(config));
}

// ---------------------------------------------------------------------------------------------
// Traefik with docker compose

describe("examples/traefik", () => {
  const compose = yamlFile("examples/traefik/docker-compose.yml");
  const staticConfig = yamlFile("examples/traefik/traefik.yml");
  const dynamic = yamlFile("examples/traefik/dynamic.yml");
  const config = serviceConfig(read("examples/traefik/config.yaml"), "examples/traefik/config.yaml");
  const composeDir = at("examples/traefik");
  /** The compose service built from the repository's Dockerfile. */
  const built = Object.entries(compose.services as Record<string, any>).filter(([, s]) => s.build);
  const [serviceName, service] = built[0] ?? ["", {}];

  it("the service config is valid and listens where Traefik and the PDP expect", () => {
    expect(hostOf(config.listen)).toBe("0.0.0.0");
    expect(config.pdp.address).toBe(`cerbos:3593`); // the compose service "cerbos", Cerbos' gRPC port
    expect(compose.services.cerbos).toBeDefined();
    expect(config.identity.anonymous).toBeUndefined();
  });

  it("compose builds the service from the repository's Dockerfile and mounts the config where the image reads it", () => {
    expect(built).toHaveLength(1);
    expect(serviceName).toBe("cerbos-forwardauth");
    const context = resolve(composeDir, service.build.context);
    expect(context).toBe(resolve(ROOT));
    expect(existsSync(join(context, service.build.dockerfile ?? "Dockerfile"))).toBe(true);
    expect(service.image).toBe(`cerbos-forwardauth:${pkg.version}`);
    const cmdConfig = dockerfileCmdConfigPath();
    expect(service.volumes).toContain(`./config.yaml:${cmdConfig}:ro`);
    // Not published: only Traefik is reachable from the host.
    expect(service.ports).toBeUndefined();
  });

  it("every file compose mounts exists", () => {
    for (const [name, svc] of Object.entries(compose.services as Record<string, any>)) {
      for (const volume of (svc.volumes ?? []) as string[]) {
        const source = volume.split(":")[0]!;
        if (source.startsWith(".")) expect(existsSync(resolve(composeDir, source)), `${name}: ${volume}`).toBe(true);
      }
    }
  });

  it("Traefik v3 reads the static config, which loads the dynamic config; only its port is published, on loopback", () => {
    const traefik = compose.services.traefik;
    expect(traefik.image).toMatch(/^traefik:v3(\.|$)/);
    const configFile = (traefik.command as string[]).find((a) => a.startsWith("--configFile="))!.split("=")[1];
    expect(traefik.volumes).toContain(`./traefik.yml:${configFile}:ro`);
    expect(traefik.volumes).toContain(`./dynamic.yml:${staticConfig.providers.file.filename}:ro`);
    for (const p of traefik.ports as string[]) expect(p).toMatch(/^127\.0\.0\.1:/);
    for (const [name, svc] of Object.entries(compose.services as Record<string, any>)) {
      if (name !== "traefik") expect(svc.ports, name).toBeUndefined();
    }
  });

  it("the entrypoint is hardened: sanitizePath, encoded reserved characters refused, aliasing header names deleted, no trusted forwarders", () => {
    for (const [name, ep] of Object.entries(staticConfig.entryPoints as Record<string, any>)) {
      expect(ep.http.sanitizePath, name).toBe(true);
      expect(ep.http.encodedCharacters, name).toEqual({
        allowEncodedSlash: false,
        allowEncodedBackSlash: false,
        allowEncodedNullCharacter: false,
        allowEncodedSemicolon: false,
        allowEncodedPercent: false,
        allowEncodedQuestionMark: false,
        allowEncodedHash: false,
      });
      expect(ep.http.aliasHeadersStrategy, name).toBe("delete");
      expect(ep.forwardedHeaders?.trustedIPs, name).toBeUndefined();
      expect(ep.forwardedHeaders?.insecure, name).toBeUndefined();
    }
  });

  it("the forwardAuth middleware addresses the compose service on the listen port, trusts no forwarded header, and copies exactly the service's identity headers", () => {
    const fa = dynamic.http.middlewares["cerbos-forwardauth"].forwardAuth;
    checkForwardAuth(fa, config, `http://${serviceName}:${portOf(config.listen)}/`);
  });

  it("every router runs the middleware first and routes to a defined service", () => {
    const routers = Object.entries(dynamic.http.routers as Record<string, any>);
    expect(routers.length).toBeGreaterThan(0);
    for (const [name, router] of routers) {
      expect(router.middlewares?.[0], name).toBe("cerbos-forwardauth");
      expect(dynamic.http.services[router.service], name).toBeDefined();
      for (const ep of router.entryPoints) expect(staticConfig.entryPoints[ep], `${name}: ${ep}`).toBeDefined();
    }
    // The demo application is the compose service the load balancer names.
    for (const server of dynamic.http.services.app.loadBalancer.servers) {
      expect(compose.services[new URL(server.url).hostname]).toBeDefined();
    }
  });

  it("Cerbos runs the version the tests use, with the quickstart policies", () => {
    expect(compose.services.cerbos.image).toBe(`ghcr.io/cerbos/cerbos:${CERBOS_VERSION}`);
    expect(compose.services.cerbos.volumes).toContain("../quickstart/policies:/policies:ro");
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: any;
}

describe("examples/kubernetes", () => {
  const dir = at("examples/kubernetes");
  const kustomization = yamlFile("examples/kubernetes/kustomization.yaml");
  const objects: K8sObject[] = (kustomization.resources as string[]).flatMap((file) =>
    parseAllDocuments(readFileSync(join(dir, file), "utf8")).map((d) => {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join("; ")}`);
      return d.toJS() as K8sObject;
    }),
  );
  const find = (kind: string, name: string) => {
    const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
    if (found.length !== 1) throw new Error(`expected one ${kind}/${name}, found ${found.length}`);
    return found[0]!;
  };
  const configMap = find("ConfigMap", "cerbos-forwardauth-config");
  const config = serviceConfig(configMap.data["config.yaml"], "configmap.yaml config.yaml");
  const cerbosConfig = parse(configMap.data["cerbos.yaml"]) as any;
  const deployment = find("Deployment", "cerbos-forwardauth");
  const podSpec = deployment.spec.template.spec;
  const container = (name: string) => (podSpec.containers as any[]).find((c) => c.name === name);
  const svcContainer = container("cerbos-forwardauth");
  const cerbos = container("cerbos");
  const containerPort = (c: any, port: string | number) =>
    typeof port === "number" ? port : (c.ports as any[]).find((p) => p.name === port)?.containerPort;
  /** The file a container sees at `path`, as [ConfigMap name, key]. */
  const mountedConfigMapFile = (c: any, path: string): [string, string] | undefined => {
    for (const m of c.volumeMounts as any[]) {
      if (!path.startsWith(m.mountPath + "/")) continue;
      const rest = path.slice(m.mountPath.length + 1);
      const volume = (podSpec.volumes as any[]).find((v) => v.name === m.name);
      const items = (volume?.configMap?.items ?? []) as Array<{ key: string; path: string }>;
      const item = items.find((i) => i.path === rest);
      if (volume?.configMap) return [volume.configMap.name, item ? item.key : rest];
    }
    return undefined;
  };

  it("every manifest in the folder is in kustomization.yaml, and everything is in one namespace", () => {
    const yamls = readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
    expect([...(kustomization.resources as string[])].sort()).toEqual(yamls.sort());
    const ns = find("Namespace", "demo").metadata.name;
    for (const o of objects) if (o.kind !== "Namespace") expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(ns);
  });

  it("the service config (ConfigMap) is valid: listens on the pod IP, asks the sidecar on loopback", () => {
    expect(hostOf(config.listen)).toBe("0.0.0.0");
    expect(hostOf(config.admin.listen)).toBe("0.0.0.0");
    expect(config.pdp.address).toBe(cerbosConfig.server.grpcListenAddr);
    expect(hostOf(cerbosConfig.server.grpcListenAddr)).toBe("127.0.0.1");
    expect(hostOf(cerbosConfig.server.httpListenAddr)).toBe("127.0.0.1");
  });

  it("the Deployment runs the image the Dockerfile builds with the mounted config, ports and probes lined up", () => {
    expect(svcContainer.image).toBe(`cerbos-forwardauth:${pkg.version}`);
    const args = svcContainer.args as string[];
    const configPath = args[args.indexOf("--config") + 1]!;
    expect(configPath).toBe(dockerfileCmdConfigPath());
    expect(mountedConfigMapFile(svcContainer, configPath)).toEqual(["cerbos-forwardauth-config", "config.yaml"]);
    expect(containerPort(svcContainer, "http")).toBe(portOf(config.listen));
    expect(containerPort(svcContainer, "admin")).toBe(portOf(config.admin.listen));
    // Readiness is /readyz and liveness /healthz, both on the admin listener.
    expect(svcContainer.readinessProbe.httpGet.path).toBe("/readyz");
    expect(containerPort(svcContainer, svcContainer.readinessProbe.httpGet.port)).toBe(portOf(config.admin.listen));
    expect(svcContainer.livenessProbe.httpGet.path).toBe("/healthz");
    expect(containerPort(svcContainer, svcContainer.livenessProbe.httpGet.port)).toBe(portOf(config.admin.listen));
    // Non-root, matching the Dockerfile's USER.
    expect(svcContainer.securityContext.runAsUser).toBe(Number(dockerfileUser().split(":")[0]));
    expect(podSpec.securityContext.runAsNonRoot).toBe(true);
  });

  it("the Cerbos sidecar runs the tested version with its config and the policies from ConfigMaps", () => {
    expect(cerbos.image).toBe(`ghcr.io/cerbos/cerbos:${CERBOS_VERSION}`);
    const cerbosConfigPath = (cerbos.args as string[]).find((a) => a.startsWith("--config="))!.split("=")[1]!;
    expect(mountedConfigMapFile(cerbos, cerbosConfigPath)).toEqual(["cerbos-forwardauth-config", "cerbos.yaml"]);
    const policiesDir = cerbosConfig.storage.disk.directory as string;
    const mount = (cerbos.volumeMounts as any[]).find((m) => m.mountPath === policiesDir);
    const volume = (podSpec.volumes as any[]).find((v) => v.name === mount?.name);
    expect(volume?.configMap?.name).toBe("cerbos-policies");
    expect(cerbos.readinessProbe.exec.command).toEqual(["/cerbos", "healthcheck", `--config=${cerbosConfigPath}`]);
  });

  it("the policies ConfigMap is exactly examples/quickstart/policies", () => {
    const dirPath = at("examples/quickstart/policies");
    const files = readdirSync(dirPath).filter((f) => f.endsWith(".yaml") && statSync(join(dirPath, f)).isFile());
    const data = find("ConfigMap", "cerbos-policies").data as Record<string, string>;
    expect(Object.keys(data).sort()).toEqual(files.sort());
    for (const f of files) expect(data[f], f).toBe(readFileSync(join(dirPath, f), "utf8"));
  });

  it("the Service selects the Deployment's pods and targets the ForwardAuth port", () => {
    const svc = find("Service", "cerbos-forwardauth");
    const labels = deployment.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(svc.spec.selector)) expect(labels[k]).toBe(v);
    expect(deployment.spec.selector.matchLabels).toEqual(svc.spec.selector);
    expect(svc.spec.ports).toHaveLength(1);
    expect(containerPort(svcContainer, svc.spec.ports[0].targetPort)).toBe(portOf(config.listen));
  });

  it("the Traefik Middleware validates against the CRD model and matches the Service and the service config", () => {
    const m = find("Middleware", "cerbos-forwardauth");
    expect(m.apiVersion).toBe("traefik.io/v1alpha1");
    expect(() => new Middleware(m as any).validate()).not.toThrow();
    const svc = find("Service", "cerbos-forwardauth");
    checkForwardAuth(m.spec.forwardAuth, config, `http://${svc.metadata.name}.${svc.metadata.namespace}.svc.cluster.local:${svc.spec.ports[0].port}/`);
    // Same settings as the compose example's file-provider middleware, but for the address.
    const { address: _a, ...k8s } = m.spec.forwardAuth;
    const { address: _b, ...file } = yamlFile("examples/traefik/dynamic.yml").http.middlewares["cerbos-forwardauth"].forwardAuth;
    expect(k8s).toEqual(file);
  });

  it("the CRD model refuses a broken Middleware (the validation is real)", () => {
    const m = structuredClone(find("Middleware", "cerbos-forwardauth"));
    m.spec.forwardAuth.trustForwardHeader = "false";
    expect(() => new Middleware(m as any).validate()).toThrow(/trustForwardHeader/);
    const noSpec = { apiVersion: m.apiVersion, kind: m.kind, metadata: m.metadata };
    expect(() => new Middleware(noSpec as any).validate()).toThrow(/spec/);
  });

  it("the demo IngressRoute validates and runs the Middleware first", () => {
    const route = find("IngressRoute", "whoami");
    expect(() => new IngressRoute(route as any).validate()).not.toThrow();
    const m = find("Middleware", "cerbos-forwardauth");
    for (const r of route.spec.routes) {
      expect(r.middlewares[0]).toEqual({ name: m.metadata.name, namespace: m.metadata.namespace });
      for (const s of r.services) expect(find("Service", s.name)).toBeDefined();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Caddy and nginx: the header lists match what the service sets (the e2e tests run these files
// with the quickstart's response headers).

describe("examples/caddy and examples/nginx", () => {
  const quickstart = serviceConfig(read("examples/quickstart/config.yaml"), "examples/quickstart/config.yaml");
  const own = Object.keys(quickstart.response.headers);

  it("Caddy copies every identity header the service sets", () => {
    const m = /^\s*copy_headers\s+(.+)$/m.exec(read("examples/caddy/Caddyfile"));
    expect(m?.[1]!.trim().split(/\s+/).sort()).toEqual([...own].sort());
  });

  it("nginx passes every identity header the service sets, replacing the client's", () => {
    const conf = read("examples/nginx/nginx.conf");
    for (const name of own) {
      const variable = `$upstream_http_${name.toLowerCase().replaceAll("-", "_")}`;
      const set = new RegExp(`auth_request_set \\$(\\w+) \\${variable};`).exec(conf);
      expect(set, name).not.toBeNull();
      expect(conf).toContain(`proxy_set_header ${name} $${set![1]};`);
    }
    expect(conf).toContain("proxy_set_header X-Forwarded-Uri $request_uri;");
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

function dockerfile(): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let pending = "";
  for (const raw of read("Dockerfile").split("\n")) {
    const line = raw.trimEnd();
    if (pending === "" && (line.trim() === "" || line.trim().startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    const full = (pending + line).trim();
    pending = "";
    const [op, ...rest] = full.split(/\s+/);
    if (op!.toUpperCase() === "FROM") stage++;
    out.push({ op: op!.toUpperCase(), args: rest.join(" "), stage });
  }
  return out;
}

const exec = (args: string): string[] => JSON.parse(args) as string[];
const lastStage = () => Math.max(...dockerfile().map((i) => i.stage));
function dockerfileCmdConfigPath(): string {
  const cmd = exec(dockerfile().find((i) => i.op === "CMD" && i.stage === lastStage())!.args);
  return cmd[cmd.indexOf("--config") + 1]!;
}
function dockerfileUser(): string {
  return dockerfile().find((i) => i.op === "USER" && i.stage === lastStage())!.args;
}

interface Copy {
  stage: number;
  from?: string;
  sources: string[];
  dest: string;
}

function copies(): Copy[] {
  return dockerfile()
    .filter((i) => i.op === "COPY")
    .map((i) => {
      const words = i.args.split(/\s+/);
      const flags = words.filter((w) => w.startsWith("--"));
      const paths = words.filter((w) => !w.startsWith("--"));
      const from = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
      return { stage: i.stage, ...(from ? { from } : {}), sources: paths.slice(0, -1), dest: paths.at(-1)! };
    });
}

/** .dockerignore semantics (last matching pattern wins, "!" re-includes; a match on a parent excludes the tree). */
function dockerIgnored(path: string): boolean {
  const patterns = read(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const toRegex = (p: string) =>
    new RegExp(
      "^" +
        posix
          .normalize(p)
          .replace(/[.+^${}()|[\]\\]/g, "\\$&")
          .replace(/\*\*/g, "\u0000")
          .replace(/\*/g, "[^/]*")
          .replace(/\?/g, "[^/]")
          .replace(/\u0000/g, ".*") +
        "$",
    );
  const prefixes = path.split("/").map((_, i, parts) => parts.slice(0, i + 1).join("/"));
  let ignored = false;
  for (const pattern of patterns) {
    const negated = pattern.startsWith("!");
    const re = toRegex(negated ? pattern.slice(1) : pattern);
    if (prefixes.some((p) => re.test(p))) ignored = !negated;
  }
  return ignored;
}

describe("Dockerfile", () => {
  const instructions = dockerfile();
  const stages = instructions.filter((i) => i.op === "FROM");
  const final = lastStage();
  const inFinal = (op: string) => instructions.filter((i) => i.op === op && i.stage === final);
  const buildStageName = stages[0]!.args.split(/\s+AS\s+/i)[1]!;
  let tmp: string | undefined;
  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("is multi-stage on node:20-bookworm-slim", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.args.split(/\s+/)[0]).toBe("node:20-bookworm-slim");
  });

  it("copies only paths that exist in the repository and are not excluded by .dockerignore", () => {
    for (const c of copies().filter((c) => !c.from)) {
      for (const src of c.sources) {
        expect(existsSync(at(src)), src).toBe(true);
        expect(dockerIgnored(src), `${src} is excluded by .dockerignore`).toBe(false);
      }
    }
    expect(dockerIgnored("node_modules")).toBe(true);
    expect(dockerIgnored("dist")).toBe(true);
    expect(dockerIgnored("test/unit/deploy-files.test.ts")).toBe(true);
    expect(dockerIgnored("examples/traefik/config.yaml")).toBe(true);
  });

  it("installs with npm ci: everything to build, production and optional dependencies to run", () => {
    const runs = (stage: number) => instructions.filter((i) => i.op === "RUN" && i.stage === stage).map((i) => i.args);
    expect(runs(0).some((r) => /\bnpm ci\b/.test(r) && !r.includes("--omit"))).toBe(true);
    expect(runs(0)).toContain("npm run build");
    const install = runs(final).find((r) => /\bnpm ci\b/.test(r));
    expect(install).toContain("--omit=dev");
    // The Cerbos binary (embedded mode) is an optional dependency: it must not be omitted.
    expect(install).not.toContain("--omit=optional");
    expect(Object.keys(pkg.optionalDependencies)).toContain("@cerbos/cerbos-linux-x64");
  });

  it("runs as a non-root user, exposes the two listeners, checks /healthz on the admin port with node", () => {
    const user = dockerfileUser();
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(inFinal("EXPOSE").map((i) => i.args)).toEqual(["8080 9090"]);
    const health = inFinal("HEALTHCHECK")[0]!.args;
    expect(health).toContain('CMD ["node", "-e"');
    expect(health).toContain("http://127.0.0.1:9090/healthz");
  });

  it("its entry point is the file `npm run build` produces, package.json's bin", () => {
    const workdir = inFinal("WORKDIR")[0]!.args;
    const entry = exec(inFinal("ENTRYPOINT")[0]!.args);
    expect(entry[0]).toBe("node");
    expect(entry[1]).toBe(pkg.bin["cerbos-forwardauth"]);
    expect(existsSync(at(entry[1]!)), "dist/src/cli.js (npm test builds first)").toBe(true);
    // The compiled tree comes from the build stage, into the final WORKDIR.
    const fromBuild = copies().find((c) => c.stage === final && c.from === buildStageName)!;
    const buildWorkdir = instructions.find((i) => i.op === "WORKDIR" && i.stage === 0)!.args;
    const produced = posix.relative(buildWorkdir, fromBuild.sources[0]!);
    expect(produced).toBe("dist/src");
    expect(posix.join(workdir, fromBuild.dest)).toBe(posix.join(workdir, produced));
    expect(posix.join(workdir, entry[1]!).startsWith(posix.join(workdir, produced) + "/")).toBe(true);
  });

  it("the build stage compiles from exactly the files it copies", () => {
    tmp = mkdtempSync(join(tmpdir(), "docker-build-stage-"));
    for (const c of copies().filter((c) => c.stage === 0)) {
      for (const src of c.sources) cpSync(at(src), join(tmp, src), { recursive: true });
    }
    symlinkSync(at("node_modules"), join(tmp, "node_modules"), "dir");
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    const script = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts["build"];
    expect(script).toBe("tsc -p tsconfig.json");
    execFileSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: tmp, stdio: "pipe", timeout: 120_000 });
    expect(existsSync(join(tmp, pkg.bin["cerbos-forwardauth"]!))).toBe(true);
  }, 180_000);
});

// ---------------------------------------------------------------------------------------------
// The README's deployment sections point only at files these tests check or the e2e tests run.

/** The README from "## Deploy with Traefik" up to "## Metrics and dashboards" (the checklist included). */
function deploySections(): string {
  const text = read("README.md");
  const start = text.indexOf("\n## Deploy with Traefik");
  const end = text.indexOf("\n## Metrics and dashboards");
  expect(start).toBeGreaterThan(0);
  expect(end).toBeGreaterThan(start);
  return text.slice(start, end);
}

describe("README: Deploy with Traefik", () => {
  const CHECKED = new Set([
    "Dockerfile",
    ".dockerignore",
    "examples/traefik",
    "examples/traefik/traefik.yml",
    "examples/traefik/dynamic.yml",
    "examples/traefik/docker-compose.yml",
    "examples/traefik/config.yaml",
    "examples/kubernetes",
    ...readdirSync(at("examples/kubernetes")).map((f) => `examples/kubernetes/${f}`),
    "examples/caddy/Caddyfile",
    "examples/nginx/nginx.conf",
    "examples/quickstart/config.yaml",
    "examples/quickstart/policies",
  ]);

  it("every repository file it names exists and is checked here or run by the e2e tests", () => {
    const text = deploySections();
    const named = new Set<string>();
    for (const m of text.matchAll(/(?<![\w.-])((?:examples\/[\w./-]*[\w-])|Dockerfile|\.dockerignore)/g)) named.add(m[1]!.replace(/\/$/, ""));
    expect(named.size).toBeGreaterThan(0);
    for (const name of named) {
      expect(existsSync(at(name)), name).toBe(true);
      expect(CHECKED.has(name), `${name} is not checked by any test`).toBe(true);
    }
  });
});
