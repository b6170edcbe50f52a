/**
 * The route table: which configured route (if any) a forwarded request falls under.
 * Compiled once when the config loads; `match()` does no parsing of its own: one find-my-way
 * lookup per group (below), then set look-ups for method and host.
 *
 * Rules (SPEC §4, §5.2):
 * - The first route in config order whose hosts, path and methods all match wins.
 * - `hosts` (optional, any host when absent): exact lower-case names. "*.example.org" matches
 *   any subdomain at one or more levels ("a.example.org", "a.b.example.org"), never the apex
 *   "example.org". A host written without a port matches that name on any port; a host written
 *   with one ("api.example.com:8443") matches only that exact host:port. The request host has
 *   its default port removed already, so ":80"/":443" in config is refused (it could never
 *   match the default-port requests it was meant for).
 * - `methods` (optional, all when absent): exact upper-case tokens; HEAD is not GET.
 * - `path` (optional, all paths when absent), in find-my-way syntax restricted to what is safe
 *   and unambiguous here: static segments, `:name` taking a whole segment, and a final `*`
 *   (`/x/*` matches "/x/" and below but not "/x"; its value is `params["*"]`). find-my-way's
 *   regex parameters, multi-parameter segments (":a-:b", ":file.png") and optional parameters
 *   (":id?") are refused, so no regex ever runs on a request path. A literal ":" is written "::".
 *   Static text goes through the request paths' own canonicaliser (src/http/canonical-path.ts),
 *   so "%7E", "~" and "%7e" are the same route, raw non-ASCII is fine ("/café" = "/caf%C3%A9"),
 *   and text no canonical path can contain (dot segments, "//", %2F, ";", double encoding …) is
 *   refused. A literal "*" (raw or "%2A") cannot be matched: find-my-way reads it as the
 *   wildcard. With `paths.caseInsensitive` the static text is case-folded the same way as the
 *   request path; parameter names are kept as written.
 * - The query never takes part in matching (the caller passes only the canonical path).
 *
 * Parameters are returned in the canonical form exactly as they appear in the path: no further
 * decoding, so an encoded reserved byte ("%3A", "%C3%A9") stays encoded and nothing can turn
 * into a "/" (the canonical path never contains "%2F" anyway). find-my-way decodes paths and
 * parameters itself (decodeURI on the path, then reserved escapes in each parameter); we undo
 * that by handing it the path with every "%" written as "%25": its decoding then yields exactly
 * our canonical text, both for comparing static parts and for parameter values.
 *
 * Parameter length: find-my-way refuses a parameter longer than `maxParamLength` (the route
 * simply does not match and the lookup falls through to the next candidate). A silent
 * fall-through to a later route or the generic mapping would change the resource a policy sees
 * depending on the id's length, so the limit is set to the longest X-Forwarded-Uri we accept
 * (8,192 bytes; longer is a 414 before mapping) and reaching it anyway is a 400, never a
 * fall-through. Wildcard values are not limited by find-my-way.
 *
 * How first-match-wins is kept with find-my-way, whose own priority is specificity (static
 * before parametric before wildcard), not order:
 * consecutive routes are packed into groups, each with one find-my-way router, such that within
 * a group no request path can match two different patterns (checked conservatively: two
 * patterns share a group only if they are provably disjoint — a static segment differs at the
 * same position, or their segment counts cannot agree — or if they are the very same pattern).
 * Routes with the very same pattern share one router node, whose entries keep config order and
 * are checked for method and host in that order. A lookup walks the groups in order: in each,
 * find-my-way returns the only pattern that can match, its first entry accepting the method and
 * host wins, otherwise the next group is asked. So the result is exactly "first route in config
 * order that matches", with one find-my-way lookup per group instead of per route; a typical
 * table (distinct static prefixes, a catch-all at the end) is one or two groups. All patterns
 * are registered under a single find-my-way method (methods are checked by us, which also
 * allows method tokens find-my-way does not know). Measured: about 150 ns per map() on a
 * 22-route table in two groups; a path with percent-escapes costs about 1 µs more (find-my-way's
 * decoding).
 *
 * A route that can never match because an earlier one matches every request it would
 * (same or catch-all path, and a superset of its hosts and methods) is a config error.
 */
import FindMyWay from "find-my-way";
import { Refusal } from "../errors.js";
// The route patterns' static text must be spelled exactly like request paths: one canonicaliser.
import { canonicalizePath } from "../request/canonical-path.js";

/** The longest X-Forwarded-Uri accepted (SPEC §5.2: over 8,192 bytes → 414); no parameter can be longer. */
export const MAX_PARAM_LENGTH = 8192;

/** One path segment of a pattern: static text (canonical form) or something that matches variably. */
type Segment = { readonly static: string } | { readonly dynamic: true };

export interface PathPattern {
  /** As written in the config ("" when the route has no path). */
  readonly source: string;
  /** What is registered with find-my-way. */
  readonly fmw: string;
  /** Names of the parameters the pattern produces (`:name`s in order, then "*" when it ends in a wildcard). */
  readonly params: readonly string[];
  /** True when the pattern matches every path (no `path`, or "/*"). */
  readonly catchAll: boolean;
  /** Segments split on "/" (the first is always the empty text before the leading "/"). */
  readonly segments: readonly Segment[];
  /** Index of the segment holding the wildcard, or -1. */
  readonly wildcardAt: number;
}

/** Parses a route path (undefined = all paths). Returns an error message instead of throwing. */
export function parsePathPattern(path: string | undefined, caseInsensitive: boolean): PathPattern | string {
  if (path === undefined) {
    return { source: "", fmw: "/*", params: [], catchAll: true, segments: [{ static: "" }, { dynamic: true }], wildcardAt: 1 };
  }
  if (!path.startsWith("/")) return "must start with /";
  const raw = path.split("/");
  const segments: Segment[] = [{ static: "" }];
  const fmwParts: string[] = [""];
  const params: string[] = [];
  let wildcardAt = -1;
  for (let k = 1; k < raw.length; k++) {
    const seg = raw[k]!;
    const last = k === raw.length - 1;
    if (seg.startsWith(":") && !seg.startsWith("::")) {
      const name = seg.slice(1);
      if (!/^[A-Za-z0-9_]+$/.test(name)) {
        return `"${seg}": a parameter takes a whole segment, ":name" with a name of [A-Za-z0-9_] (regex, optional and multi-parameter segments are not supported; write "::" for a literal ":")`;
      }
      if (params.includes(name)) return `parameter ":${name}" appears twice`;
      params.push(name);
      segments.push({ dynamic: true });
      fmwParts.push(`:${name}`);
      continue;
    }
    const star = seg.indexOf("*");
    if (star >= 0 && (!last || star !== seg.length - 1)) return `"*" must be the last character of the path`;
    if (star < 0 && !last && seg === "") return `"//" never appears in a canonical path`;
    const text = normalizeStatic(star >= 0 ? seg.slice(0, star) : seg, caseInsensitive, star >= 0);
    if (text.error !== undefined) return `"${seg}": ${text.error}`;
    if (star >= 0) {
      wildcardAt = k;
      params.push("*");
      segments.push({ dynamic: true });
      fmwParts.push(`${text.fmw}*`);
    } else {
      segments.push({ static: text.value });
      fmwParts.push(text.fmw);
    }
  }
  const fmw = fmwParts.join("/");
  return { source: path, fmw, params, catchAll: fmw === "/*", segments, wildcardAt };
}

/**
 * Static text of one segment → its canonical form, by the request paths' own canonicaliser (so
 * both sides are spelled alike: pchar escapes decoded, other escapes upper-case, raw non-ASCII
 * encoded, case folded the same way when case-insensitive), and the find-my-way spelling of it
 * (":" as "::"). `wildcardPrefix`: the text is followed by "*" in the same segment (".*" is not a
 * dot segment).
 */
function normalizeStatic(
  text: string,
  caseInsensitive: boolean,
  wildcardPrefix: boolean,
): { value: string; fmw: string; error?: undefined } | { error: string } {
  let raw = "";
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === ":") {
      if (text[i + 1] !== ":") return { error: 'a parameter takes a whole segment; write "::" for a literal ":"' };
      raw += ":";
      i++;
    } else if (ch.charCodeAt(0) >= 0x80) {
      const cp = text.codePointAt(i)!;
      if (cp > 0xffff) i++;
      try {
        raw += encodeURIComponent(String.fromCodePoint(cp));
      } catch {
        return { error: "invalid Unicode (lone surrogate)" }; // encodeURIComponent throws on one
      }
    } else {
      raw += ch;
    }
  }
  // A final "a" keeps a wildcard prefix such as "." from being judged a whole dot segment.
  const canonical = canonicalizePath(`/${raw}${wildcardPrefix ? "a" : ""}`, { mergeSlashes: false, stripMatrixParams: false, caseInsensitive });
  if (!canonical.ok) return { error: `no canonical path contains it (${canonical.reason})` };
  const value = canonical.path.slice(1, wildcardPrefix ? -1 : undefined);
  if (value.includes("*")) return { error: 'a literal "*" cannot be matched (find-my-way reads it as the wildcard)' };
  return { value, fmw: value.replaceAll(":", "::") };
}

/**
 * Whether no path can match both patterns. Conservative: false means "maybe".
 * Sound because a `:name` never spans a "/", so without a wildcard a pattern of n segments
 * only matches paths of n segments, with one a pattern whose wildcard sits in segment w only
 * matches paths of at least w + 1 segments, and before any wildcard segment k of the path is
 * matched by segment k of the pattern.
 */
export function disjoint(a: PathPattern, b: PathPattern): boolean {
  if (a.catchAll || b.catchAll) return false;
  const wa = a.wildcardAt < 0 ? Infinity : a.wildcardAt;
  const wb = b.wildcardAt < 0 ? Infinity : b.wildcardAt;
  const n = Math.min(a.segments.length, b.segments.length, wa, wb);
  for (let k = 1; k < n; k++) {
    const sa = a.segments[k]!;
    const sb = b.segments[k]!;
    if ("static" in sa && "static" in sb && sa.static !== sb.static) return true;
  }
  if (wa === Infinity && wb === Infinity) return a.segments.length !== b.segments.length;
  if (wa === Infinity) return a.segments.length < wb + 1;
  if (wb === Infinity) return b.segments.length < wa + 1;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Hosts

interface HostRules {
  /** Entries with a port: the request host must equal one of them. */
  readonly withPort: ReadonlySet<string>;
  /** Entries without a port: the request host name (port removed) must equal one of them. */
  readonly names: ReadonlySet<string>;
  /** "*.x" entries: ".x" (optionally ".x:port", compared with the whole host) with at least one character before it. */
  readonly suffixes: readonly { readonly suffix: string; readonly withPort: boolean }[];
}

function compileHosts(hosts: readonly string[], where: string, problems: string[]): HostRules {
  const withPort = new Set<string>();
  const names = new Set<string>();
  const suffixes: { suffix: string; withPort: boolean }[] = [];
  hosts.forEach((h, j) => {
    const colon = h.lastIndexOf(":");
    if (colon >= 0) {
      const port = h.slice(colon + 1);
      if (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65535) {
        problems.push(`${where}.hosts[${j}]: port must be 1–65535 without leading zeros`);
      } else if (port === "80" || port === "443") {
        problems.push(`${where}.hosts[${j}]: the default port (:80/:443) is removed from request hosts, write "${h.slice(0, colon)}"`);
      }
    }
    if (h.startsWith("*.")) suffixes.push({ suffix: h.slice(1), withPort: colon >= 0 });
    else if (colon >= 0) withPort.add(h);
    else names.add(h);
  });
  return { withPort, names, suffixes };
}

function hostMatches(rules: HostRules, host: string, name: string): boolean {
  if (rules.names.has(name) || rules.withPort.has(host)) return true;
  for (const s of rules.suffixes) {
    const subject = s.withPort ? host : name;
    if (subject.length > s.suffix.length && subject.endsWith(s.suffix)) return true;
  }
  return false;
}

/** The request host without its port ("[::1]:8080" → "[::1]"). */
function hostName(host: string): string {
  const colon = host.lastIndexOf(":");
  if (colon < 0) return host;
  if (host.charCodeAt(0) === 91 /* [ */ && colon < host.indexOf("]")) return host;
  return host.slice(0, colon);
}

/** Whether every request host `inner` accepts is accepted by `outer` (conservative: false means "maybe not"). */
function hostsCover(outer: readonly string[] | undefined, inner: readonly string[] | undefined): boolean {
  if (outer === undefined) return true;
  if (inner === undefined) return false;
  const rules = compileHosts(outer, "", []);
  return inner.every((h) => {
    if (!h.startsWith("*.")) return hostMatches(rules, h, hostName(h));
    // A wildcard is covered by the same wildcard, by it without a port, or by a wildcard for a parent domain.
    const colon = h.lastIndexOf(":");
    const suffix = h.slice(1, colon >= 0 ? colon : undefined);
    return rules.suffixes.some((s) =>
      s.withPort ? h === `*${s.suffix}` : suffix === s.suffix || suffix.endsWith(s.suffix),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// The table

export interface RouteEntry<T> {
  /** Config path of the route, for messages ("routes[2]"). */
  readonly where: string;
  readonly hosts?: readonly string[] | undefined;
  readonly pattern: PathPattern;
  readonly methods?: readonly string[] | undefined;
  readonly value: T;
}

export interface RouteMatch<T> {
  readonly value: T;
  /** Path parameters in canonical form (`:name` → segment, "*" → rest); empty for routes without a path. */
  readonly params: Readonly<Record<string, string>>;
}

export interface RouteTable<T> {
  /**
   * The first route matching the request, or null.
   * @param path the canonical path (starts with "/", no query, no "#").
   * @throws Refusal bad_request when a path parameter exceeds MAX_PARAM_LENGTH (cannot happen
   *   for an X-Forwarded-Uri within the 8,192-byte limit) or the path is not canonical.
   */
  match(method: string, host: string, path: string): RouteMatch<T> | null;
  /** How many find-my-way routers a lookup may ask (for tests and diagnostics). */
  readonly groupCount: number;
}

interface CompiledEntry<T> {
  readonly value: T;
  readonly methods: ReadonlySet<string> | null;
  readonly hosts: HostRules | null;
  /** false for a route without a path: its "*" is an implementation detail, not a parameter. */
  readonly exposeParams: boolean;
}

/** One find-my-way node: every route of a group with this exact pattern, in config order. */
interface Node<T> {
  readonly pattern: PathPattern;
  readonly entries: CompiledEntry<T>[];
}

const EMPTY_PARAMS: Readonly<Record<string, string>> = Object.freeze(Object.create(null) as Record<string, string>);
const NO_QUERY = Object.freeze({});
/** find-my-way registers per method; we register everything under one and check methods ourselves. */
const ANY = "GET";

/**
 * Builds the table. Problems (a pattern find-my-way refuses, a host with a bad port, a route
 * that can never match) are pushed onto `problems` with their config paths; the returned
 * table is only meaningful when none were added.
 */
export function compileRouteTable<T>(entries: readonly RouteEntry<T>[], problems: string[]): RouteTable<T> {
  // Unreachable routes: an earlier route matches everything this one would.
  entries.forEach((e, j) => {
    for (let i = 0; i < j; i++) {
      const d = entries[i]!;
      const pathCovered = d.pattern.catchAll || d.pattern.fmw === e.pattern.fmw;
      const methodsCovered = d.methods === undefined || (e.methods !== undefined && e.methods.every((m) => d.methods!.includes(m)));
      if (pathCovered && methodsCovered && hostsCover(d.hosts, e.hosts)) {
        problems.push(`${e.where}: can never match, ${d.where} comes first and matches every request it would (first match wins)`);
        return;
      }
    }
  });

  const groups: Map<string, Node<T>>[] = [];
  let current: Map<string, Node<T>> | null = null;
  let hasHostRules = false;
  for (const e of entries) {
    // Validate with find-my-way itself, alone, so its refusal is reported for this route.
    try {
      FindMyWay().on(ANY, e.pattern.fmw, noop);
    } catch (err) {
      problems.push(`${e.where}.path: ${(err as Error).message}`);
      continue;
    }
    const compiled: CompiledEntry<T> = {
      value: e.value,
      methods: e.methods === undefined ? null : new Set(e.methods),
      hosts: e.hosts === undefined ? null : compileHosts(e.hosts, e.where, problems),
      exposeParams: e.pattern.source !== "",
    };
    hasHostRules ||= compiled.hosts !== null;
    const key = `${e.pattern.source === "" ? "" : "p"}${e.pattern.fmw}`;
    const fits =
      current !== null && [...current.entries()].every(([k, node]) => k === key || disjoint(node.pattern, e.pattern));
    if (!fits || current === null) {
      current = new Map();
      groups.push(current);
    }
    const node = current.get(key);
    if (node) node.entries.push(compiled);
    else current.set(key, { pattern: e.pattern, entries: [compiled] });
  }

  const routers = groups.map((group) => {
    const router = FindMyWay({
      ignoreTrailingSlash: false,
      ignoreDuplicateSlashes: false,
      caseSensitive: true, // case-insensitivity is handled by lower-casing both sides beforehand
      maxParamLength: MAX_PARAM_LENGTH,
      onMaxParamLength: noop, // makes find() return a result with store null instead of falling through
      querystringParser: () => NO_QUERY,
    });
    for (const node of group.values()) router.on(ANY, node.pattern.fmw, noop, node);
    // Compiled lookups (generated code, same semantics as the tree walk; the property test in
    // test/unit/mapping.test.ts checks them against tree-walking routers): about 90 ns less per
    // request on a 20-route table.
    return router.compile();
  });

  return {
    groupCount: routers.length,
    match(method, host, path) {
      if (path.charCodeAt(0) !== 47 /* / */ || path.includes("?") || path.includes("#")) {
        throw new Refusal("bad_request", "path is not canonical");
      }
      // See the file comment: find-my-way's decoding of "%25" gives back our canonical text.
      const lookupPath = path.includes("%") ? path.replaceAll("%", "%25") : path;
      const name = hasHostRules ? hostName(host) : host;
      for (const router of routers) {
        const found = router.find(ANY, lookupPath);
        if (found === null) continue;
        const node = found.store as Node<T> | null;
        if (node === null) throw new Refusal("bad_request", `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`);
        for (const entry of node.entries) {
          if (entry.methods !== null && !entry.methods.has(method)) continue;
          if (entry.hosts !== null && !hostMatches(entry.hosts, host, name)) continue;
          return {
            value: entry.value,
            params: entry.exposeParams ? (found.params as Record<string, string>) : EMPTY_PARAMS,
          };
        }
      }
      return null;
    },
  };
}

function noop(): void {}
