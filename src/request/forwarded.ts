/**
 * Rebuild the original request from the auth request's headers (SPEC §5.1) and canonicalise it.
 * Pure: no uWebSockets.js, no I/O. One pass over the header list collects everything, then the
 * checks run in a fixed order (so the verdict does not depend on header order):
 *   0. header block (names + values) over maxHeaderBytes → 431 header_too_large;
 *   1. X-Forwarded-Uri over maxUriBytes → 414 uri_too_long;
 *   2. one of our own identity headers (response.headers keys, any spelling) → 400;
 *   3. X-Forwarded-Method / -Uri / -Host missing, empty or repeated, X-Forwarded-Proto repeated → 400;
 *   4. method, scheme, URI, path, query, host, X-Forwarded-For syntax → 400.
 * Every refusal is a Refusal("bad_request" | "uri_too_long") whose message is for logs only and
 * never echoes header values.
 *
 * Decisions:
 * - X-Forwarded-Proto must be exactly "http" or "https" (lower-case, what every gateway sends);
 *   "HTTPS", "https,http" or "" → 400. Absent → "http".
 * - Values are not trimmed: the HTTP parser already removed optional whitespace, so any space left
 *   in method, URI or host is malformed.
 * - The URI may contain only visible ASCII (0x21–0x7E): raw spaces, controls and non-ASCII cannot
 *   appear in a valid request target, in the path or the query.
 * - Query: "&"-separated, "name=value" split at the first "=", "+" read as space, percent-decoded
 *   once as UTF-8; a malformed escape or invalid UTF-8 → 400. Empty pairs ("a=1&&b") and pairs with
 *   an empty name ("=x") are skipped; "a" alone gives a → "". A repeated name gives the list of its
 *   values in order. The result has a null prototype ("__proto__" is an ordinary key).
 * - Host: lower-cased; "[IPv6]" literals (validated, no zone id) with an optional port; otherwise
 *   labels of [a-z0-9_-] separated by single dots, one trailing dot removed (so "a.." → 400). A port
 *   is 1–5 digits without leading zero, 1–65535; ":" with an empty port → 400. The scheme's default
 *   port is removed, any other kept.
 * - X-Forwarded-For: the right-most element of the last X-Forwarded-For line, trimmed; "" when the
 *   header is absent. That element was written by the gateway itself, so when it is not an IP
 *   address the chain is not what we expect → 400 (also when it is empty, e.g. "1.2.3.4,"). Accepted
 *   forms: IPv4 (no leading zeros), IPv6, "[IPv6]", "IPv4:port", "[IPv6]:port"; the port is dropped
 *   and IPv6 is lower-cased.
 * - headers: a Map, lower-case name → value; repeats are joined with ", ", except "cookie", joined with "; "
 *   (RFC 9113 §8.2.3; a ", " join would corrupt the last cookie of each line).
 */
import { normalizeHeaderName } from "../config/schema.js";
import { Refusal } from "../errors.js";
import type { ForwardedRequest } from "../model.js";
import { canonicalizePath, type PathOptions } from "./canonical-path.js";

const DEFAULT_MAX_HEADER_BYTES = 32 * 1024;

export interface RebuildOptions {
  readonly paths: PathOptions;
  /** normalizeHeaderName() of the keys of response.headers. */
  readonly ownHeaderNames: ReadonlySet<string>;
  /** X-Forwarded-Uri size limit in UTF-8 bytes (414 above it). Default 8192. */
  readonly maxUriBytes?: number;
  /** Bound on the summed length of header names and values (default 32 KiB; SPEC: at least 16 KiB). */
  readonly maxHeaderBytes?: number;
}

type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

const DEFAULT_MAX_URI_BYTES = 8192;
const MAX_METHOD_LENGTH = 32;

function bad(detail: string): Refusal {
  return new Refusal("bad_request", detail);
}

/** Lower-cases a header name only when it has an upper-case letter (uWebSockets.js gives lower-case). */
function lowerName(name: string): string {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) return name.toLowerCase();
  }
  return name;
}

/** normalizeHeaderName() for an already lower-cased name, allocating only when it has a character other than [a-z0-9-]. */
function normalizedName(lower: string): string {
  for (let i = 0; i < lower.length; i++) {
    const c = lower.charCodeAt(i);
    const alnum = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
    if (!alnum && c !== 0x2d) return normalizeHeaderName(lower);
  }
  return lower;
}

export function rebuildRequest(headers: HeaderList, opts: RebuildOptions): ForwardedRequest {
  const maxUri = opts.maxUriBytes ?? DEFAULT_MAX_URI_BYTES;
  const own = opts.ownHeaderNames;
  const checkOwn = own.size > 0;
  // A Map, not an object: fresh header names (uWS makes new strings) need no internalising.
  const all = new Map<string, string>();

  let method: string | undefined;
  let uri: string | undefined;
  let host: string | undefined;
  let proto: string | undefined;
  let xff: string | undefined;
  let duplicate: string | undefined;
  let planted: string | undefined;
  let uriTooLong = false;
  let headerBytes = 0;
  let contentLength: string | undefined;

  for (let h = 0; h < headers.length; h++) {
    const entry = headers[h]!;
    const name = lowerName(entry[0]);
    const value = entry[1];

    headerBytes += name.length + value.length + 4;
    const prev = all.get(name);
    all.set(name, prev === undefined ? value : prev + (name === "cookie" ? "; " : ", ") + value);

    if (checkOwn && planted === undefined) {
      const norm = normalizedName(name);
      if (own.has(norm)) planted = norm;
    }

    switch (name) {
      case "x-forwarded-method":
        if (method !== undefined) duplicate ??= "X-Forwarded-Method";
        method = value;
        break;
      case "x-forwarded-uri":
        if (uri !== undefined) duplicate ??= "X-Forwarded-Uri";
        uri = value;
        if (utf8Length(value, maxUri) > maxUri) uriTooLong = true;
        break;
      case "x-forwarded-host":
        if (host !== undefined) duplicate ??= "X-Forwarded-Host";
        host = value;
        break;
      case "x-forwarded-proto":
        if (proto !== undefined) duplicate ??= "X-Forwarded-Proto";
        proto = value;
        break;
      case "x-forwarded-for":
        xff = value;
        break;
      case "content-length":
        // Two lengths frame the message two ways (a smuggling shape): never decide on it.
        if (contentLength !== undefined && contentLength !== value) duplicate ??= "Content-Length (with different values)";
        contentLength = value;
        break;
    }
  }

  const maxHeaders = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  if (headerBytes > maxHeaders) throw new Refusal("header_too_large", `request headers over ${maxHeaders} bytes`);
  if (uriTooLong) throw new Refusal("uri_too_long", `X-Forwarded-Uri over ${maxUri} bytes`);
  if (planted !== undefined) throw bad(`identity header ${planted} sent by the client`);
  if (duplicate !== undefined) throw bad(`${duplicate} repeated`);
  if (!method) throw bad(method === undefined ? "X-Forwarded-Method missing" : "X-Forwarded-Method empty");
  if (!uri) throw bad(uri === undefined ? "X-Forwarded-Uri missing" : "X-Forwarded-Uri empty");
  if (!host) throw bad(host === undefined ? "X-Forwarded-Host missing" : "X-Forwarded-Host empty");

  if (!isMethod(method)) throw bad("X-Forwarded-Method is not an upper-case token");

  let scheme: "http" | "https";
  if (proto === undefined || proto === "http") scheme = "http";
  else if (proto === "https") scheme = "https";
  else throw bad("X-Forwarded-Proto is not http or https");

  // URI: origin-form only, visible ASCII, no fragment; split at the first "?".
  if (uri.charCodeAt(0) !== 0x2f) throw bad("X-Forwarded-Uri is not origin-form");
  let q = -1;
  for (let i = 0; i < uri.length; i++) {
    const c = uri.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) throw bad("X-Forwarded-Uri has a space, control or non-ASCII character");
    if (c === 0x23) throw bad("X-Forwarded-Uri has a fragment");
    if (c === 0x3f && q < 0) q = i;
  }
  const rawPath = q < 0 ? uri : uri.slice(0, q);
  const rawQuery = q < 0 ? "" : uri.slice(q + 1);
  const canon = canonicalizePath(rawPath, opts.paths);
  if (!canon.ok) throw bad(`X-Forwarded-Uri path: ${canon.reason}`);

  return {
    method,
    scheme,
    host: canonicalHost(host, scheme),
    path: canon.path,
    rawQuery,
    query: parseQuery(rawQuery),
    ip: xff === undefined ? "" : clientIp(xff),
    headers: all,
  };
}

/** UTF-8 byte length, exact only when it matters for the limit (a string of length ≤ max/3 fits). */
function utf8Length(s: string, max: number): number {
  if (s.length > max || s.length * 3 <= max) return s.length;
  return Buffer.byteLength(s, "utf8");
}

// ---------------------------------------------------------------------------------------------
// Method

/** tchar (RFC 9110) without lower-case letters. */
const METHOD_CHAR = new Uint8Array(128);
{
  const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+.^_`|~-";
  for (let i = 0; i < chars.length; i++) METHOD_CHAR[chars.charCodeAt(i)] = 1;
}

function isMethod(m: string): boolean {
  if (m.length > MAX_METHOD_LENGTH) return false;
  const first = m.charCodeAt(0);
  if (first < 0x41 || first > 0x5a) return false;
  for (let i = 1; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if (c >= 128 || METHOD_CHAR[c] !== 1) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Host

/** Host name characters after lower-casing: a-z 0-9 - _ . */
const HOST_CHAR = new Uint8Array(128);
{
  const chars = "abcdefghijklmnopqrstuvwxyz0123456789-_.";
  for (let i = 0; i < chars.length; i++) HOST_CHAR[chars.charCodeAt(i)] = 1;
}

function canonicalHost(value: string, scheme: "http" | "https"): string {
  let upper = false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) throw bad("X-Forwarded-Host has a space, control or non-ASCII character");
    switch (c) {
      case 0x40: // @
        throw bad("X-Forwarded-Host has userinfo");
      case 0x2f: // /
      case 0x5c: // \
      case 0x3f: // ?
      case 0x23: // #
        throw bad("X-Forwarded-Host has a path");
      case 0x2c: // ,
        throw bad("X-Forwarded-Host is a list");
    }
    if (c >= 0x41 && c <= 0x5a) upper = true;
  }
  const h = upper ? value.toLowerCase() : value;

  let name: string;
  let port: string | undefined;
  if (h.charCodeAt(0) === 0x5b) {
    // [IPv6]
    const close = h.indexOf("]");
    if (close < 0 || !isIPv6(h, 1, close)) throw bad("X-Forwarded-Host has a malformed IPv6 literal");
    name = h.slice(0, close + 1);
    if (close + 1 < h.length) {
      if (h.charCodeAt(close + 1) !== 0x3a) throw bad("X-Forwarded-Host is malformed");
      port = h.slice(close + 2);
    }
  } else {
    const colon = h.indexOf(":");
    name = colon < 0 ? h : h.slice(0, colon);
    if (colon >= 0) port = h.slice(colon + 1);
    if (name.charCodeAt(name.length - 1) === 0x2e) name = name.slice(0, -1);
    if (!isHostName(name)) throw bad("X-Forwarded-Host has a malformed name");
  }
  if (port === undefined) return name;
  if (!isPort(port)) throw bad("X-Forwarded-Host has a malformed port");
  if ((scheme === "http" && port === "80") || (scheme === "https" && port === "443")) return name;
  return `${name}:${port}`;
}

/** Labels of [a-z0-9_-], separated by single dots, no empty label. */
function isHostName(s: string): boolean {
  if (s.length === 0) return false;
  let labelLength = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e) {
      if (labelLength === 0) return false;
      labelLength = 0;
    } else if (c < 128 && HOST_CHAR[c] === 1) {
      labelLength++;
    } else {
      return false;
    }
  }
  return labelLength > 0;
}

/** 1–65535, decimal digits, no leading zero. */
function isPort(s: string): boolean {
  if (s.length === 0 || s.length > 5 || s.charCodeAt(0) === 0x30) return false;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
    v = v * 10 + (c - 0x30);
  }
  return v <= 65535;
}

// ---------------------------------------------------------------------------------------------
// IP addresses

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}

/** Dotted-quad s[from, to): four decimal octets 0–255 without leading zeros. */
export function isIPv4(s: string, from = 0, to = s.length): boolean {
  let parts = 0;
  let i = from;
  while (true) {
    const start = i;
    let v = 0;
    while (i < to && isDigit(s.charCodeAt(i)) && i - start < 3) {
      v = v * 10 + (s.charCodeAt(i) - 0x30);
      i++;
    }
    const len = i - start;
    if (len === 0 || v > 255 || (len > 1 && s.charCodeAt(start) === 0x30)) return false;
    parts++;
    if (i === to) return parts === 4;
    if (parts === 4 || s.charCodeAt(i) !== 0x2e) return false;
    i++;
  }
}

/** IPv6 text s[from, to) (RFC 4291 §2.2, optional trailing dotted quad, no zone id). */
export function isIPv6(s: string, from = 0, to = s.length): boolean {
  const n = to - from;
  if (n < 2 || n > 45) return false;
  let groups = 0;
  let compressed = false;
  let i = from;
  if (s.charCodeAt(i) === 0x3a) {
    if (s.charCodeAt(i + 1) !== 0x3a) return false;
    compressed = true;
    i += 2;
    if (i === to) return true;
  }
  while (true) {
    const start = i;
    while (i < to && isHex(s.charCodeAt(i))) i++;
    if (i < to && s.charCodeAt(i) === 0x2e) {
      // Trailing IPv4: two groups' worth.
      if (!isIPv4(s, start, to)) return false;
      groups += 2;
      break;
    }
    const len = i - start;
    if (len === 0 || len > 4) return false;
    groups++;
    if (i === to) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i === to) return false; // a single trailing ":"
    if (s.charCodeAt(i) === 0x3a) {
      if (compressed) return false;
      compressed = true;
      i++;
      if (i === to) break;
    }
  }
  return compressed ? groups <= 7 : groups === 8;
}

/** The right-most X-Forwarded-For element as an address, port and brackets removed. */
function clientIp(xff: string): string {
  let end = xff.length;
  const comma = xff.lastIndexOf(",");
  let start = comma + 1;
  while (start < end && isOws(xff.charCodeAt(start))) start++;
  while (end > start && isOws(xff.charCodeAt(end - 1))) end--;
  if (start === end) throw bad("X-Forwarded-For right-most entry is empty");

  if (xff.charCodeAt(start) === 0x5b) {
    const close = xff.indexOf("]", start);
    if (close < 0 || close >= end || !isIPv6(xff, start + 1, close)) throw bad("X-Forwarded-For right-most entry is not an IP address");
    if (close + 1 < end && (xff.charCodeAt(close + 1) !== 0x3a || !isPort(xff.slice(close + 2, end)))) {
      throw bad("X-Forwarded-For right-most entry has a malformed port");
    }
    return xff.slice(start + 1, close).toLowerCase();
  }
  if (isIPv4(xff, start, end)) return xff.slice(start, end);
  if (isIPv6(xff, start, end)) return xff.slice(start, end).toLowerCase();
  const colon = xff.lastIndexOf(":", end - 1);
  if (colon > start && isIPv4(xff, start, colon) && isPort(xff.slice(colon + 1, end))) return xff.slice(start, colon);
  throw bad("X-Forwarded-For right-most entry is not an IP address");
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

// ---------------------------------------------------------------------------------------------
// Query

function parseQuery(raw: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null);
  const n = raw.length;
  let start = 0;
  while (start < n) {
    let end = raw.indexOf("&", start);
    if (end < 0) end = n;
    if (end > start) {
      let eq = raw.indexOf("=", start);
      if (eq < 0 || eq > end) eq = end;
      const name = decodeQueryPart(raw.slice(start, eq));
      if (name !== "") {
        const value = eq < end ? decodeQueryPart(raw.slice(eq + 1, end)) : "";
        const prev = out[name];
        if (prev === undefined) out[name] = value;
        else if (typeof prev === "string") out[name] = [prev, value];
        else prev.push(value);
      }
    }
    start = end + 1;
  }
  return out;
}

function decodeQueryPart(s: string): string {
  let plus = false;
  let percent = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) plus = true;
    else if (c === 0x25) percent = true;
  }
  if (plus) s = s.replaceAll("+", " ");
  if (!percent) return s;
  try {
    // Strict: throws on a malformed escape and on escapes that are not well-formed UTF-8.
    return decodeURIComponent(s);
  } catch {
    throw bad("X-Forwarded-Uri query has a malformed percent-escape");
  }
}
