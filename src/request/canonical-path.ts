/**
 * Strict path canonicalisation (SPEC §5.2): decide, once, which path the backend will serve, and
 * refuse every spelling that different servers could read differently. Pure, no I/O, one pass over
 * the char codes, no regular expressions; a fast path returns plain-ASCII paths untouched.
 *
 * Canonical form (the output, and the only form this function returns unchanged):
 * - starts with "/", segments separated by single "/", no "." or ".." segment;
 * - raw characters are exactly RFC 3986 `pchar` minus ";" : ALPHA DIGIT - . _ ~ ! $ & ' ( ) * + , = : @
 *   A percent-encoded one of these is decoded ("%41" → "A", "%3a" → ":", "%2B" → "+"): after the
 *   single decoding every backend does, raw and encoded forms mean the same byte, so one spelling
 *   keeps route matching, the generic resource id and the cache key from being bypassed by
 *   re-encoding.
 * - every other byte is an upper-case percent-escape: non-ASCII UTF-8 ("%c3%a9" → "%C3%A9") and
 *   the ASCII that would change the URI's structure or is not valid raw in a request target when
 *   decoded: "%" (%25), "?" (%3F), "#" (%23), space (%20), and " < > [ ] ^ ` { | }. The last group
 *   is accepted raw too (some clients send "|" or "[" unencoded) and becomes encoded.
 *
 * Refused (the reason is a short log-only string):
 * - not starting with "/"; a raw "?" (the query must already be split off) or "#";
 * - "%2F" and "%5C" in any case, a raw "\";
 * - "%3B" (encoded ";"), always, even with stripMatrixParams. It is ambiguous: Tomcat/Jetty keep it
 *   as a literal ";" while servers (or Spring versions) that decode before removing path
 *   parameters truncate the segment there, so "/admin%3Bx" could be "/admin" to the backend.
 * - dot segments after decoding: ".", "..", "%2e", ".%2E", … (also when matrix stripping leaves one);
 * - controls 0x00–0x1F and DEL, raw or encoded, and the C1 controls U+0080–U+009F (%C2%80–%C2%9F);
 * - raw space and any raw character above 0x7E;
 * - invalid escapes ("%", "%4", "%G1") and escapes that are not well-formed UTF-8: overlong forms
 *   (%C0%AE, %E0%80%AE, %F0%80%80%AE), surrogates (%ED%A0%80), above U+10FFFF, stray or missing
 *   continuation bytes (the same rules as TextDecoder("utf-8", { fatal: true }), Unicode Table 3-7);
 * - "%25" followed by two hex digits in the decoded result (double encoding), however spelled
 *   ("%2541", "%25%34%31");
 * - an empty segment ("//", or one left empty by matrix stripping) unless mergeSlashes, which drops
 *   it. A final empty segment is the trailing slash and is kept;
 * - raw ";" unless stripMatrixParams, which removes ";" up to the end of its segment (the removed
 *   part is still validated).
 *
 * caseInsensitive lower-cases the decoded characters: ASCII letters (no letter ever stays inside an
 * escape — they are all unreserved and decoded), and non-ASCII code points one at a time with
 * String.prototype.toLowerCase (locale-independent, context-free, so "/CAF%C3%89" → "/caf%C3%A9").
 * Two code points lower-case to ASCII: U+0130 → "i" U+0307 and U+212A (Kelvin) → "k"; the ASCII
 * result is emitted raw like any other letter. Escape hex digits stay upper-case.
 *
 * Idempotent: for every accepted output p, canonicalizePath(p, sameOptions) returns p.
 */

export interface PathOptions {
  readonly mergeSlashes: boolean;
  readonly stripMatrixParams: boolean;
  readonly caseInsensitive: boolean;
}

export type CanonicalPath = { ok: true; path: string } | { ok: false; reason: string };

const SLASH = 0x2f;
const PERCENT = 0x25;
const SEMI = 0x3b;
const DOT = 0x2e;

// Character classes of raw ASCII input (CLASS, indexed by char code 0–127).
/** pchar minus ";" and "%": stays raw in the canonical form. */
const PLAIN = 1;
/** Accepted raw but written as a percent-escape: " < > [ ] ^ ` { | } */
const ENCODE = 2;
/** Refused raw: controls, DEL, space, "\", "#", "?". */
const BAD = 3;
const PERCENT_CLASS = 4;
const SEMI_CLASS = 5;
const SLASH_CLASS = 6;

const CLASS = new Uint8Array(128).fill(BAD);
/** 1 when the decoded ASCII byte stays raw (pchar minus ";"). */
const RAW_SAFE = new Uint8Array(128);
{
  const plain = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@";
  for (let i = 0; i < plain.length; i++) {
    CLASS[plain.charCodeAt(i)] = PLAIN;
    RAW_SAFE[plain.charCodeAt(i)] = 1;
  }
  const encode = "\"<>[]^`{|}";
  for (let i = 0; i < encode.length; i++) CLASS[encode.charCodeAt(i)] = ENCODE;
  CLASS[PERCENT] = PERCENT_CLASS;
  CLASS[SEMI] = SEMI_CLASS;
  CLASS[SLASH] = SLASH_CLASS;
}

const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX_VALUE[0x41 + i] = 10 + i;
  HEX_VALUE[0x61 + i] = 10 + i;
}

/** "%00" … "%FF", upper-case. */
const ESCAPE: readonly string[] = Array.from({ length: 256 }, (_, b) => "%" + b.toString(16).toUpperCase().padStart(2, "0"));

function hexValue(code: number): number {
  return code < 128 ? HEX_VALUE[code]! : -1;
}

function isHexDigit(code: number): boolean {
  return code < 128 && HEX_VALUE[code]! >= 0;
}

function fail(reason: string): CanonicalPath {
  return { ok: false, reason };
}

/** True when s[from, to) is "." or "..". */
function isDotSegment(s: string, from: number, to: number): boolean {
  const len = to - from;
  return (len === 1 && s.charCodeAt(from) === DOT) || (len === 2 && s.charCodeAt(from) === DOT && s.charCodeAt(from + 1) === DOT);
}

export function canonicalizePath(rawPath: string, opts: PathOptions): CanonicalPath {
  const n = rawPath.length;
  if (n === 0 || rawPath.charCodeAt(0) !== SLASH) return fail("path does not start with /");

  // Fast path: only Plain characters and "/", no empty or dot segment. Already canonical
  // (up to ASCII case).
  let segStart = 1;
  let i = 1;
  for (; i < n; i++) {
    const c = rawPath.charCodeAt(i);
    if (c === SLASH) {
      if (i === segStart || isDotSegment(rawPath, segStart, i)) break;
      segStart = i + 1;
    } else if (c >= 128 || CLASS[c] !== PLAIN) {
      break;
    }
  }
  if (i === n && !isDotSegment(rawPath, segStart, n)) {
    return { ok: true, path: opts.caseInsensitive ? rawPath.toLowerCase() : rawPath };
  }
  return slowPath(rawPath, opts);
}

function slowPath(raw: string, opts: PathOptions): CanonicalPath {
  const n = raw.length;
  const lower = opts.caseInsensitive;
  let out = "/";
  /** Canonical text of the current segment (raw-safe characters and upper-case escapes only). */
  let seg = "";
  /** Inside ";params" being stripped: validate, emit nothing. */
  let inMatrix = false;
  /** UTF-8 decoding state: continuation bytes still needed, code point so far, allowed range of the next byte. */
  let need = 0;
  let cp = 0;
  let lo = 0x80;
  let hi = 0xbf;
  let seqEscapes = "";

  // Returns a reason when refused, undefined otherwise. Appends one decoded ASCII byte.
  const emitAscii = (b: number): string | undefined => {
    if (inMatrix) return undefined;
    if (RAW_SAFE[b] === 1) {
      if (lower && b >= 0x41 && b <= 0x5a) b += 0x20;
      // "%25" followed by two hex digits: the hex digit completing it is this one.
      const len = seg.length;
      if (
        isHexDigit(b) &&
        len >= 4 &&
        seg.charCodeAt(len - 4) === PERCENT &&
        seg.charCodeAt(len - 3) === 0x32 &&
        seg.charCodeAt(len - 2) === 0x35 &&
        isHexDigit(seg.charCodeAt(len - 1))
      ) {
        return "double percent-encoding";
      }
      seg += String.fromCharCode(b);
    } else {
      seg += ESCAPE[b]!;
    }
    return undefined;
  };

  const emitCodePoint = (): string | undefined => {
    if (inMatrix) return undefined;
    if (!lower) {
      seg += seqEscapes;
      return undefined;
    }
    const s = String.fromCodePoint(cp);
    const l = s.toLowerCase();
    if (l === s) {
      seg += seqEscapes;
      return undefined;
    }
    for (const ch of l) {
      const c = ch.codePointAt(0)!;
      if (c < 0x80) {
        const r = emitAscii(c);
        if (r !== undefined) return r;
      } else {
        seg += utf8Escapes(c);
      }
    }
    return undefined;
  };

  // Ends the current segment. Returns a reason when refused.
  const endSegment = (final: boolean): string | undefined => {
    inMatrix = false;
    const len = seg.length;
    if (len === 0) {
      if (final) return undefined; // root or trailing slash: `out` already ends with "/"
      return opts.mergeSlashes ? undefined : "empty segment (//)";
    }
    if (isDotSegment(seg, 0, len)) return "dot segment";
    out += final ? seg : seg + "/";
    seg = "";
    return undefined;
  };

  let i = 1;
  while (i < n) {
    const c = raw.charCodeAt(i);
    if (c === PERCENT) {
      if (i + 2 >= n) return fail("invalid percent-escape");
      const h1 = hexValue(raw.charCodeAt(i + 1));
      const h2 = hexValue(raw.charCodeAt(i + 2));
      if (h1 < 0 || h2 < 0) return fail("invalid percent-escape");
      const b = (h1 << 4) | h2;
      i += 3;
      if (need > 0) {
        if (b < lo || b > hi) return fail("invalid UTF-8 sequence");
        cp = (cp << 6) | (b & 0x3f);
        seqEscapes += ESCAPE[b]!;
        lo = 0x80;
        hi = 0xbf;
        if (--need === 0) {
          const r = emitCodePoint();
          if (r !== undefined) return fail(r);
        }
        continue;
      }
      if (b >= 0x80) {
        // Lead byte (Unicode Table 3-7, well-formed UTF-8 byte sequences).
        seqEscapes = ESCAPE[b]!;
        if (b >= 0xc2 && b <= 0xdf) {
          need = 1;
          cp = b & 0x1f;
          if (b === 0xc2) lo = 0xa0; // U+0080–U+009F are the C1 controls
        } else if (b >= 0xe0 && b <= 0xef) {
          need = 2;
          cp = b & 0x0f;
          if (b === 0xe0) lo = 0xa0; // overlong
          else if (b === 0xed) hi = 0x9f; // surrogates
        } else if (b >= 0xf0 && b <= 0xf4) {
          need = 3;
          cp = b & 0x07;
          if (b === 0xf0) lo = 0x90; // overlong
          else if (b === 0xf4) hi = 0x8f; // above U+10FFFF
        } else {
          return fail(b === 0xc0 || b === 0xc1 ? "overlong UTF-8" : "invalid UTF-8 sequence");
        }
        continue;
      }
      if (b < 0x20 || b === 0x7f) return fail("control character");
      if (b === SLASH) return fail("encoded slash");
      if (b === 0x5c) return fail("encoded backslash");
      if (b === SEMI) return fail("encoded semicolon");
      const r = emitAscii(b);
      if (r !== undefined) return fail(r);
      continue;
    }

    if (need > 0) return fail("invalid UTF-8 sequence");
    i++;
    if (c >= 128) return fail("raw non-ASCII character");
    switch (CLASS[c]) {
      case PLAIN:
      case ENCODE: {
        const r = emitAscii(c);
        if (r !== undefined) return fail(r);
        break;
      }
      case SLASH_CLASS: {
        const r = endSegment(false);
        if (r !== undefined) return fail(r);
        break;
      }
      case SEMI_CLASS:
        if (!opts.stripMatrixParams) return fail("matrix parameter (;)");
        inMatrix = true;
        break;
      default:
        if (c < 0x20 || c === 0x7f) return fail("control character");
        if (c === 0x5c) return fail("backslash");
        if (c === 0x23) return fail("fragment (#)");
        if (c === 0x3f) return fail("raw ? in path");
        return fail("raw space");
    }
  }
  if (need > 0) return fail("truncated UTF-8 sequence");
  const r = endSegment(true);
  if (r !== undefined) return fail(r);
  return { ok: true, path: out };
}

function utf8Escapes(cp: number): string {
  if (cp < 0x800) return ESCAPE[0xc0 | (cp >> 6)]! + ESCAPE[0x80 | (cp & 0x3f)]!;
  if (cp < 0x10000) return ESCAPE[0xe0 | (cp >> 12)]! + ESCAPE[0x80 | ((cp >> 6) & 0x3f)]! + ESCAPE[0x80 | (cp & 0x3f)]!;
  return (
    ESCAPE[0xf0 | (cp >> 18)]! + ESCAPE[0x80 | ((cp >> 12) & 0x3f)]! + ESCAPE[0x80 | ((cp >> 6) & 0x3f)]! + ESCAPE[0x80 | (cp & 0x3f)]!
  );
}
