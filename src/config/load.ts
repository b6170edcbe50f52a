/**
 * Loads the YAML config (SPEC §4): parse → `${ENV}` substitution → schema → relative paths →
 * deep freeze. Every problem is collected and thrown at once as one `ConfigError`, each a line
 * `path: message` with paths written `routes[1].resource.id`.
 *
 * Environment substitution, in string *values* only (never in keys):
 * - `${VAR}` is the value of VAR; unset is a problem (set but empty is fine: "").
 * - `${VAR:-default}` is the default when VAR is unset *or empty* (shell and Compose semantics).
 *   The default is literal text up to the first `}`; it cannot itself contain `}` or `${…}`.
 * - `$${` is a literal `${` (Compose-style escape); a `$` not followed by `{` is just a `$`.
 * - Substituted text is not scanned again: a `${` inside an environment value stays literal.
 * - A *plain* (unquoted) scalar that contained a `${…}` is re-read as a YAML scalar after
 *   substitution, so `timeoutMs: ${TIMEOUT:-250}` is the number 250 and `tls: ${TLS:-false}` the
 *   boolean false, exactly as if the text had been written there (an empty result stays "").
 *   Quote it — `id: "${TENANT}"` — to always keep a string. (Inside a YAML flow collection,
 *   `{ a: ${X} }`, the braces are YAML syntax: quote the value there or use block style.)
 *
 * Problems are reported in that order: YAML syntax (then nothing else, since the tree is
 * unknown), substitution, schema. A schema problem at or below a path that already has a
 * substitution problem is left out: it would only repeat it.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, Scalar, visit, type Document, type YAMLError } from "yaml";
import type { z } from "zod";
import { ConfigError } from "../errors.js";
import { configSchema, type Config } from "./schema.js";

export interface ParseConfigOptions {
  /** Folder that relative file paths in the config are resolved against. */
  readonly baseDir: string;
  /** Variables for `${VAR}`; defaults to `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** Name used in YAML syntax errors (`source:line:col: …`), usually the file path. */
  readonly source?: string;
}

type Path = readonly (string | number)[];

const MAX_YAML_ERRORS = 5;

/** Reads, validates and freezes the config file; relative paths are resolved against its folder. */
export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError([`cannot read config file ${JSON.stringify(path)}: ${(error as Error).message}`]);
  }
  return parseConfig(text, { baseDir: dirname(resolve(path)), env, source: path });
}

/** Same as `loadConfigFile`, from YAML text. Throws `ConfigError` listing every problem. */
export function parseConfig(text: string, opts: ParseConfigOptions): Config {
  const env = opts.env ?? process.env;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter });
  const yamlErrors = [...doc.errors, ...doc.warnings];
  if (yamlErrors.length > 0) {
    // One syntax error often sets off a cascade of follow-on errors; the first few locate it.
    const shown = yamlErrors.slice(0, MAX_YAML_ERRORS).map((e) => yamlProblem(e, doc, lineCounter, opts.source));
    if (yamlErrors.length > MAX_YAML_ERRORS) shown.push(`… and ${yamlErrors.length - MAX_YAML_ERRORS} more YAML errors`);
    throw new ConfigError(shown);
  }

  const subst = substituteDocument(doc, env);
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (error) {
    // e.g. the alias-count limit that guards against "billion laughs" documents
    throw new ConfigError([...subst.problems, `yaml: ${(error as Error).message}`]);
  }
  // An empty file is an empty mapping, so the missing keys are reported by name.
  if (data === null || data === undefined) data = {};

  const result = configSchema.safeParse(data, { reportInput: true });
  const problems = [...subst.problems];
  if (!result.success) {
    for (const issue of result.error.issues) {
      for (const p of issueProblems(issue, [], subst.retyped)) {
        if (!subst.failedPaths.some((f) => isAtOrBelow(p.path, f))) problems.push(`${formatPath(p.path)}: ${p.message}`);
      }
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(dedupe(problems));

  const config = result.data;
  resolveFilePaths(config, opts.baseDir);
  return deepFreeze(config);
}

/** `ConfigError` → one problem per line (for `--check` and start-up errors); anything else → its message. */
export function describeConfigProblems(err: unknown): string {
  if (err instanceof ConfigError) return err.problems.join("\n");
  if (err instanceof Error) return err.message;
  return String(err);
}

/** A config-relative file path made absolute. Every key naming a file goes through this. */
export function resolveConfigPath(baseDir: string, path: string): string {
  return resolve(baseDir, path);
}

/** The keys that name files (SPEC §4: relative to the config file's folder). Add new ones here. */
function resolveFilePaths(config: Config, baseDir: string): void {
  const embedded = config.pdp.embedded;
  if (embedded) {
    embedded.policies = resolveConfigPath(baseDir, embedded.policies);
    if (embedded.config !== undefined) embedded.config = resolveConfigPath(baseDir, embedded.config);
  }
  const jwt = config.identity.jwt;
  if (jwt) {
    if (jwt.jwksFile !== undefined) jwt.jwksFile = resolveConfigPath(baseDir, jwt.jwksFile);
    if (jwt.jwksCa !== undefined) jwt.jwksCa = resolveConfigPath(baseDir, jwt.jwksCa);
  }
  const tls = config.pdp.tls;
  if (typeof tls === "object") {
    for (const key of ["ca", "cert", "key"] as const) {
      const file = tls[key];
      if (file !== undefined) tls[key] = resolveConfigPath(baseDir, file);
    }
  }
}

// ── YAML ────────────────────────────────────────────────────────────────────────────────────

function yamlProblem(e: YAMLError, doc: Document, lines: LineCounter, source: string | undefined): string {
  const { line, col } = lines.linePos(e.pos[0]);
  let message = e.message;
  if (e.code === "DUPLICATE_KEY") {
    // The composer keeps the duplicate pair, so its key is found by where it starts.
    let key: unknown;
    visit(doc, {
      Pair(_, pair) {
        if (isScalar(pair.key) && pair.key.range?.[0] === e.pos[0]) {
          key = pair.key.value;
          return visit.BREAK;
        }
        return undefined;
      },
    });
    if (key !== undefined) message += ` (${JSON.stringify(String(key))})`;
  }
  return source === undefined ? `line ${line}, column ${col}: ${message}` : `${source}:${line}:${col}: ${message}`;
}

// ── ${ENV} substitution ────────────────────────────────────────────────────────────────────

interface Substitution {
  /** Problems, each already `path: message`. */
  readonly problems: string[];
  /** Paths whose value has a substitution problem (their schema problems would only repeat it). */
  readonly failedPaths: Path[];
  /** Formatted paths of plain scalars whose type changed by re-reading them after substitution. */
  readonly retyped: Set<string>;
}

/** Substitutes in place in every string value of the document tree. */
function substituteDocument(doc: Document, env: NodeJS.ProcessEnv): Substitution {
  const out: Substitution = { problems: [], failedPaths: [], retyped: new Set() };
  const walk = (node: unknown, path: Path): void => {
    if (isMap(node)) {
      for (const pair of node.items) walk(pair.value, [...path, keyName(pair.key)]);
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, [...path, i]));
    } else if (isScalar(node) && typeof node.value === "string" && node.value.includes("${")) {
      const r = substitute(node.value, env);
      for (const message of r.problems) out.problems.push(`${formatPath(path)}: ${message}`);
      if (r.problems.length > 0) out.failedPaths.push(path);
      node.value = r.text;
      if (r.substituted && node.type === Scalar.PLAIN) {
        node.value = resolvePlainScalar(doc, r.text);
        if (typeof node.value !== "string") out.retyped.add(formatPath(path));
      }
    }
    // An Alias is substituted where its anchor is defined, so it is not visited twice.
  };
  walk(doc.contents, []);
  return out;
}

function keyName(key: unknown): string {
  return String(isScalar(key) ? key.value : key);
}

const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(:-([^]*))?$/;

/** `${VAR}`, `${VAR:-default}`, `$${` → `${` in one string (see the file comment). */
export function substitute(src: string, env: NodeJS.ProcessEnv): { text: string; substituted: boolean; problems: string[] } {
  const problems: string[] = [];
  let text = "";
  let substituted = false;
  let i = 0;
  for (;;) {
    const at = src.indexOf("${", i);
    if (at < 0) break;
    if (at > 0 && src[at - 1] === "$") {
      text += src.slice(i, at - 1) + "${"; // "$${" → literal "${"
      i = at + 2;
      continue;
    }
    text += src.slice(i, at);
    const end = src.indexOf("}", at + 2);
    if (end < 0) {
      problems.push(`unclosed "\${" (write "$\${" for a literal "\${")`);
      text += src.slice(at);
      i = src.length;
      break;
    }
    const inner = src.slice(at + 2, end);
    const m = REFERENCE.exec(inner);
    if (!m) {
      problems.push(`malformed "\${${inner}}": expected \${NAME} or \${NAME:-default} (write "$\${" for a literal "\${")`);
    } else {
      const name = m[1]!;
      const fallback = m[2] === undefined ? undefined : (m[3] ?? "");
      const value = env[name];
      if (fallback !== undefined && (value === undefined || value === "")) text += fallback;
      else if (value !== undefined) text += value;
      else problems.push(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
      substituted = true;
    }
    i = end + 1;
  }
  text += src.slice(i);
  return { text, substituted, problems };
}

/**
 * What YAML would have made of `text` written as a plain scalar here: a number, boolean, null
 * or string, by the document schema's own tag tests. An empty result stays "" (not null), so
 * `scope: ${SCOPE:-}` is an empty string.
 */
function resolvePlainScalar(doc: Document, text: string): unknown {
  if (text === "") return "";
  for (const tag of doc.schema.tags) {
    if (tag.default === true && tag.test?.test(text) && "resolve" in tag && tag.resolve) {
      let failed = false;
      const value = (tag.resolve as (v: string, onError: (m: string) => void, o: typeof doc.options) => unknown)(text, () => (failed = true), doc.options);
      if (!failed) return value instanceof Scalar ? value.value : value;
    }
  }
  return text;
}

// ── zod issues → problem lines ─────────────────────────────────────────────────────────────

type Issue = z.core.$ZodIssue;

interface Problem {
  readonly path: Path;
  readonly message: string;
}

function issueProblems(issue: Issue, prefix: Path, retyped: ReadonlySet<string>): Problem[] {
  const path: Path = [...prefix, ...issue.path.map((k) => (typeof k === "number" ? k : String(k)))];
  switch (issue.code) {
    case "unrecognized_keys":
      // One line per key, each with its full path.
      return issue.keys.map((key) => ({ path: [...path, key], message: "unknown key" }));
    case "invalid_key":
      // The path already ends with the offending key.
      return issue.issues.flatMap((sub) => issueProblems(sub, path, retyped).map((p) => ({ ...p, message: `invalid key: ${p.message}` })));
    case "invalid_element":
      return issue.issues.flatMap((sub) => issueProblems(sub, path, retyped));
    case "invalid_union":
      return unionProblems(issue, path, retyped);
    case "invalid_type": {
      if (issue.input === undefined) return [{ path, message: "required" }];
      let message = `expected ${article(issue.expected)}, got ${typeOf(issue.input)}`;
      if (issue.expected === "string" && retyped.has(formatPath(path))) {
        message += ` (the unquoted \${…} made it ${typeOf(issue.input)}; quote the value to keep a string)`;
      }
      return [{ path, message }];
    }
    case "invalid_value": {
      const expected = issue.values.map((v) => JSON.stringify(v)).join(" | ");
      return [{ path, message: `expected ${issue.values.length > 1 ? "one of " : ""}${expected}, got ${shortValue(issue.input)}` }];
    }
    case "invalid_format":
      return [{ path, message: `${stripPrefix(issue.message)}, got ${shortValue(issue.input)}` }];
    case "too_small":
      return [{ path, message: sizeMessage(issue.origin, "min", issue.minimum, issue.inclusive) }];
    case "too_big":
      return [{ path, message: sizeMessage(issue.origin, "max", issue.maximum, issue.inclusive) }];
    default:
      return [{ path, message: stripPrefix(issue.message) }];
  }
}

/**
 * zod reports a union that matched no branch with every branch's issues. A branch that failed
 * only because the value has another type (`tls: {…}` against `false`) says nothing useful; the
 * issues of a branch that got further are the real problem. With none, list the accepted types.
 */
function unionProblems(issue: Extract<Issue, { code: "invalid_union" }>, path: Path, retyped: ReadonlySet<string>): Problem[] {
  const branches = issue.errors;
  const typeOnly = (errs: readonly Issue[]) => errs.every((e) => e.path.length === 0 && (e.code === "invalid_type" || e.code === "invalid_value"));
  const deeper = branches.find((errs) => errs.length > 0 && !typeOnly(errs));
  if (deeper) return deeper.flatMap((e) => issueProblems(e, path, retyped));
  const expected = new Set<string>();
  for (const errs of branches) {
    for (const e of errs) {
      if (e.code === "invalid_type") expected.add(article(e.expected));
      else if (e.code === "invalid_value") for (const v of e.values) expected.add(JSON.stringify(v));
    }
  }
  if (expected.size === 0) return [{ path, message: stripPrefix(issue.message) }];
  const list = [...expected];
  const alternatives = list.length > 1 ? `${list.slice(0, -1).join(", ")} or ${list.at(-1)}` : list.join("");
  return [{ path, message: `expected ${alternatives}, got ${typeOf(issue.input)}` }];
}

function sizeMessage(origin: string, side: "min" | "max", bound: number | bigint, inclusive: boolean | undefined): string {
  const b = Number(bound);
  if (origin === "string" || origin === "array" || origin === "set" || origin === "map") {
    const what = origin === "string" ? "characters" : "items";
    if (side === "min" && b === 1) return "must not be empty";
    return side === "min" ? `must have at least ${b} ${what}` : `must have at most ${b} ${what}`;
  }
  if (side === "min") return inclusive === false ? `must be greater than ${b}` : `must be at least ${b}`;
  return inclusive === false ? `must be less than ${b}` : `must be at most ${b}`;
}

function article(expected: string): string {
  switch (expected) {
    case "int":
      return "an integer";
    // In the words of YAML, which is what the reader wrote.
    case "object":
    case "record":
      return "a mapping";
    case "array":
      return "a list";
    case "null":
      return "null";
    default:
      return `a ${expected}`;
  }
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${String(v)}`;
  return `a ${typeof v}`;
}

function shortValue(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  return typeOf(v);
}

function stripPrefix(message: string): string {
  return message.replace(/^Invalid input: /, "");
}

// ── paths, freezing ────────────────────────────────────────────────────────────────────────

const SIMPLE_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `["routes", 1, "resource", "id"]` → `routes[1].resource.id`; odd keys as `headers["X Y"]`. */
export function formatPath(path: Path): string {
  let out = "";
  for (const k of path) {
    if (typeof k === "number") out += `[${k}]`;
    else if (SIMPLE_KEY.test(k)) out += out === "" ? k : `.${k}`;
    else out += `[${JSON.stringify(k)}]`;
  }
  return out === "" ? "(top level)" : out;
}

function isAtOrBelow(path: Path, ancestor: Path): boolean {
  return ancestor.length <= path.length && ancestor.every((k, i) => path[i] === k);
}

function dedupe(lines: readonly string[]): string[] {
  return [...new Set(lines)];
}

/** Object.freeze, recursively: the config is shared by every request and must never change. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
