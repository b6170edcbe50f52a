import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalizePath, type PathOptions } from "../../src/request/canonical-path.js";

const STRICT: PathOptions = { mergeSlashes: false, stripMatrixParams: false, caseInsensitive: false };
const MERGE: PathOptions = { ...STRICT, mergeSlashes: true };
const STRIP: PathOptions = { ...STRICT, stripMatrixParams: true };
const CI: PathOptions = { ...STRICT, caseInsensitive: true };
const ALL: PathOptions = { mergeSlashes: true, stripMatrixParams: true, caseInsensitive: true };
const OPTION_SETS = [STRICT, MERGE, STRIP, CI, ALL];

function accepted(raw: string, opts: PathOptions = STRICT): string {
  const r = canonicalizePath(raw, opts);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(raw)} to be accepted, refused: ${r.reason}`);
  return r.path;
}

/** Rejection classes of SPEC §5.2, several spellings each; refused under every option set listed. */
const REJECTED: Record<string, { inputs: string[]; opts?: PathOptions[] }> = {
  "does not start with /": { inputs: ["", "a/b", "%2Fa", "*", "http://x/y", ".", "%2e/a", " /a"] },
  "encoded slash": { inputs: ["/a%2Fb", "/a%2fb", "/%2F", "/a/%2f/b", "/a;%2F/b"] },
  "backslash raw or encoded": { inputs: ["/a\\b", "/\\", "/a%5Cb", "/a%5cb", "/%5C..%5C"] },
  "encoded semicolon": { inputs: ["/a%3Bb", "/a%3bb", "/admin%3B/x", "/%3B"] },
  "dot segments": {
    inputs: [
      "/.",
      "/..",
      "/./",
      "/../",
      "/a/./b",
      "/a/../b",
      "/a/..",
      "/a/.",
      "/%2e",
      "/%2E",
      "/%2e%2e",
      "/%2E%2E",
      "/.%2E",
      "/%2e.",
      "/.%2e/",
      "/a/%2e%2E/b",
      "/%2E%2e/etc/passwd",
    ],
  },
  "dot segments left by matrix stripping": { inputs: ["/..;x/b", "/.;x", "/a/%2e%2e;jsessionid=1/b", "/.;/"], opts: [STRIP, ALL] },
  "control characters": {
    inputs: [
      "/a\u0000",
      "/a%00",
      "/a%0a",
      "/a%0A",
      "/a%0D",
      "/a%0d%0aSet-Cookie:x",
      "/a\t",
      "/a\n",
      "/a%09",
      "/a%1F",
      "/a%1f",
      "/a\u007f",
      "/a%7F",
      "/a%7f",
      "/%C2%80",
      "/%c2%9f",
    ],
  },
  "invalid percent-escapes": { inputs: ["/%", "/a%", "/%4", "/a%4", "/%G1", "/%1G", "/%g0", "/%%41", "/%-1", "/% 1", "/%+1", "/%\u00e9"] },
  "overlong and invalid UTF-8": {
    inputs: [
      "/%C0%AE",
      "/%c0%ae",
      "/%C0%AF",
      "/%C1%BF",
      "/%E0%80%AE",
      "/%e0%80%af",
      "/%E0%9F%BF",
      "/%F0%80%80%AE",
      "/%F0%8F%BF%BF",
      "/%ED%A0%80",
      "/%ed%bf%bf",
      "/%F4%90%80%80",
      "/%F5%80%80%80",
      "/%F8%88%80%80%80",
      "/%FE",
      "/%FF",
      "/%80",
      "/%BF",
      "/a%A9",
      "/%C3",
      "/%C3a",
      "/%C3/",
      "/%C3%C3",
      "/%E2%82",
      "/%E2%82/",
      "/%F0%9F%98",
      "/%C3%A9%A9",
    ],
  },
  "double encoding": {
    inputs: ["/%252F", "/%252f", "/%255C", "/%252e", "/%2541", "/%2525", "/%25%34%31", "/%25%32%66", "/a/%2541b", "/%252E%252E/"],
  },
  fragment: { inputs: ["/a#b", "/#", "/a/#/b", "/a#"] },
  "raw non-ASCII": { inputs: ["/é", "/caf\u00e9", "/\u00a0", "/\u0080", "/\u{1F600}", "/a\u2028", "/\uFEFF", "/\uD800"] },
  "raw space": { inputs: ["/a b", "/ ", "/a/ /b"] },
  "raw question mark (query not split)": { inputs: ["/a?b", "/?"] },
  "empty segment (//)": { inputs: ["//", "//a", "/a//b", "/a//", "/a///b"], opts: [STRICT, STRIP, CI] },
  "empty segment left by matrix stripping": { inputs: ["/a/;x/b", "/;x/b", "/a/;/b"], opts: [STRIP] },
  "matrix parameters": { inputs: ["/a;b", "/a;jsessionid=1/b", "/;", "/a/b;", "/..;/admin"], opts: [STRICT, MERGE, CI] },
};

describe("canonicalizePath: rejections (SPEC §5.2)", () => {
  for (const [name, { inputs, opts = OPTION_SETS }] of Object.entries(REJECTED)) {
    it.each(inputs)(`${name}: %j`, (raw) => {
      for (const o of opts) {
        const r = canonicalizePath(raw, o);
        expect(r, JSON.stringify(o)).toMatchObject({ ok: false });
        if (!r.ok) expect(r.reason).toEqual(expect.any(String));
      }
    });
  }
});

describe("canonicalizePath: accepted forms", () => {
  it.each([
    ["/", "/"],
    ["/a", "/a"],
    ["/orders/42", "/orders/42"],
    ["/orders/42/", "/orders/42/"],
    ["/a/b/c/", "/a/b/c/"],
    ["/a/.b", "/a/.b"],
    ["/a/b.", "/a/b."],
    ["/a/...", "/a/..."],
    ["/.well-known/jwks.json", "/.well-known/jwks.json"],
    ["/Mixed/Case", "/Mixed/Case"],
    ["/a-b_c~d", "/a-b_c~d"],
    ["/sub:delims@!$&'()*+,=", "/sub:delims@!$&'()*+,="],
    // Unreserved characters are decoded, in either hex case.
    ["/%41%42%43", "/ABC"],
    ["/%61%62%63", "/abc"],
    ["/%7e%7E", "/~~"],
    ["/%2D%5F%2e%2E%30", "/-_..0"],
    ["/a%2Eb", "/a.b"],
    ["/%2E%2E%2E", "/..."],
    ["/%2ewell-known", "/.well-known"],
    // pchar sub-delims, ":" and "@" are decoded too.
    ["/%3a%40%21%24%26%27%28%29%2A%2b%2C%3D", "/:@!$&'()*+,="],
    // UTF-8 stays encoded, upper-case.
    ["/caf%C3%A9", "/caf%C3%A9"],
    ["/caf%c3%a9", "/caf%C3%A9"],
    ["/caf%C3%a9", "/caf%C3%A9"],
    ["/%E2%82%AC", "/%E2%82%AC"],
    ["/%f0%9f%98%80", "/%F0%9F%98%80"],
    ["/%C2%A0", "/%C2%A0"],
    ["/%EF%BF%BF", "/%EF%BF%BF"],
    ["/%F4%8F%BF%BF", "/%F4%8F%BF%BF"],
    ["/%ED%9F%BF", "/%ED%9F%BF"],
    ["/%EE%80%80", "/%EE%80%80"],
    // Delimiters and characters not valid raw stay (or become) encoded, upper-case.
    ["/a%3fb", "/a%3Fb"],
    ["/a%3Fb", "/a%3Fb"],
    ["/a%23b", "/a%23b"],
    ["/a%20b", "/a%20b"],
    ["/100%25", "/100%25"],
    ["/%25zz", "/%25zz"],
    ["/%25g1", "/%25g1"],
    ["/%25/41", "/%25/41"],
    ["/%25A", "/%25A"],
    ["/a|b", "/a%7Cb"],
    ["/a%7cb", "/a%7Cb"],
    ['/"<>[]^`{|}', "/%22%3C%3E%5B%5D%5E%60%7B%7C%7D"],
  ])("%j → %j", (raw, expected) => {
    expect(accepted(raw)).toBe(expected);
  });

  it("mergeSlashes collapses runs of / (trailing slash kept)", () => {
    expect(accepted("//a///b//", MERGE)).toBe("/a/b/");
    expect(accepted("//", MERGE)).toBe("/");
    expect(accepted("/a//b", MERGE)).toBe("/a/b");
    expect(canonicalizePath("/a//b", STRICT).ok).toBe(false);
    expect(canonicalizePath("/a//../b", MERGE).ok).toBe(false);
  });

  it("stripMatrixParams drops ;params up to the end of the segment", () => {
    expect(accepted("/a;x=1/b;y", STRIP)).toBe("/a/b");
    expect(accepted("/a;jsessionid=ABC", STRIP)).toBe("/a");
    expect(accepted("/a;x/", STRIP)).toBe("/a/");
    expect(accepted("/a/;x", STRIP)).toBe("/a/");
    expect(accepted("/;x", STRIP)).toBe("/");
    expect(accepted("/a;%41%C3%A9/b", STRIP)).toBe("/a/b");
    expect(accepted("/a/;x/b", ALL)).toBe("/a/b");
    // The stripped part is still validated.
    expect(canonicalizePath("/a;%00/b", STRIP).ok).toBe(false);
    expect(canonicalizePath("/a;%2F/b", STRIP).ok).toBe(false);
    expect(canonicalizePath("/a;%C0%AE/b", STRIP).ok).toBe(false);
    // Encoded ";" is refused even when stripping.
    expect(canonicalizePath("/a%3Bx/b", STRIP).ok).toBe(false);
  });

  it("caseInsensitive lower-cases the decoded characters, not the escapes' hex", () => {
    expect(accepted("/API/Users/", CI)).toBe("/api/users/");
    expect(accepted("/%41%42", CI)).toBe("/ab");
    expect(accepted("/CAF%C3%89", CI)).toBe("/caf%C3%A9");
    expect(accepted("/caf%c3%89", CI)).toBe("/caf%C3%A9");
    expect(accepted("/caf%c3%a9", CI)).toBe("/caf%C3%A9");
    expect(accepted("/%C3%A9", STRICT)).toBe("/%C3%A9");
    expect(accepted("/%3F%3f", CI)).toBe("/%3F%3F");
    expect(accepted("/A|B", CI)).toBe("/a%7Cb");
    // Kelvin sign and dotted capital I lower-case to ASCII.
    expect(accepted("/%E2%84%AAey", CI)).toBe("/key");
    expect(accepted("/%C4%B0", CI)).toBe("/i%CC%87");
    // Double encoding is found whatever the case.
    expect(canonicalizePath("/%25aB", CI).ok).toBe(false);
    expect(canonicalizePath("/%25%61%42", CI).ok).toBe(false);
  });

  it("matches find-my-way's trailing-slash semantics by keeping the trailing slash", () => {
    expect(accepted("/x/")).toBe("/x/");
    expect(accepted("/x")).toBe("/x");
  });
});

// ------------------------------------------------------------------------------------------------
// Properties

const optionsArb: fc.Arbitrary<PathOptions> = fc.record({ mergeSlashes: fc.boolean(), stripMatrixParams: fc.boolean(), caseInsensitive: fc.boolean() });

const TOKENS = [
  "/",
  "/",
  "//",
  ".",
  "..",
  "%",
  "a",
  "Z",
  "0",
  "f",
  "F",
  "G",
  "%2e",
  "%2E",
  "%2F",
  "%2f",
  "%5C",
  "%5c",
  "\\",
  ";",
  ";x=1",
  "%3B",
  "%25",
  "%2541",
  "%41",
  "%61",
  "%7E",
  "%3A",
  "%3f",
  "%23",
  "%20",
  "%C3",
  "%A9",
  "%c3%a9",
  "%C3%89",
  "%C0%AE",
  "%E0%80%AE",
  "%ED%A0%80",
  "%E2%84%AA",
  "%C4%B0",
  "%F0%9F%98%80",
  "%E0",
  "%80",
  "%FF",
  "%00",
  "%7F",
  "%C2%85",
  "\u0000",
  "\t",
  " ",
  "\u007f",
  "é",
  "\u{1F600}",
  "#",
  "?",
  "|",
  "~",
  "+",
  ":",
  "@",
  "[",
];
const grammarPath = fc
  .tuple(fc.boolean(), fc.array(fc.constantFrom(...TOKENS), { maxLength: 24 }))
  .map(([slash, parts]) => (slash ? "/" : "") + parts.join(""));
const anyPath = fc.oneof(
  grammarPath,
  grammarPath,
  fc.string({ unit: "binary", maxLength: 40 }).map((s) => "/" + s),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: fc.constantFrom(..."/.%;aA0fF2eE5cC"), maxLength: 30 }).map((s) => "/" + s),
);

function checkInvariants(path: string): void {
  expect(path.startsWith("/")).toBe(true);
  expect(path).not.toContain("//");
  for (const seg of path.split("/")) expect(seg === "." || seg === "..").toBe(false);
  expect(path).not.toMatch(/%2F|%5C|\\|%3B|;/i);
  expect(path).not.toMatch(/[\u0000-\u0020\u007f]/);
  expect(path).not.toMatch(/[^\u0000-\u007e]/);
  expect(path).not.toMatch(/%25[0-9A-Fa-f]{2}/);
  expect(path).not.toMatch(/[#?]/);
  // Every "%" starts an upper-case escape.
  expect(path.replace(/%[0-9A-F]{2}/g, "")).not.toContain("%");
  // The escapes decode to well-formed UTF-8 without C0 controls.
  expect(() => decodeURIComponent(path)).not.toThrow();
}

describe("canonicalizePath: properties", () => {
  it("never throws, and every accepted output is canonical and idempotent", () => {
    fc.assert(
      fc.property(anyPath, optionsArb, (raw, opts) => {
        const r = canonicalizePath(raw, opts);
        if (!r.ok) {
          expect(typeof r.reason).toBe("string");
          return;
        }
        checkInvariants(r.path);
        expect(canonicalizePath(r.path, opts)).toEqual({ ok: true, path: r.path });
      }),
      { numRuns: 20_000 },
    );
  });

  it("caseInsensitive output has no upper-case letter outside escapes", () => {
    fc.assert(
      fc.property(anyPath, (raw) => {
        const r = canonicalizePath(raw, CI);
        if (r.ok) expect(r.path.replace(/%[0-9A-F]{2}/g, "")).not.toMatch(/[A-Z]/);
      }),
      { numRuns: 5_000 },
    );
  });

  it("with every option off, the canonical path decodes to the same string as the input", () => {
    fc.assert(
      fc.property(anyPath, (raw) => {
        const r = canonicalizePath(raw, STRICT);
        if (r.ok) expect(decodeURIComponent(r.path)).toBe(decodeURIComponent(raw));
      }),
      { numRuns: 10_000 },
    );
  });

  it("percent-encoded bytes are accepted exactly when they are well-formed UTF-8 without controls (TextDecoder fatal)", () => {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const byte = fc.oneof(fc.integer({ min: 0x20, max: 0xff }), fc.constantFrom(0xc0, 0xc1, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0x80, 0x9f, 0xa0, 0xbf));
    fc.assert(
      fc.property(fc.array(byte, { minLength: 1, maxLength: 12 }), (bytes) => {
        const raw = "/x" + bytes.map((b) => "%" + b.toString(16).padStart(2, "0")).join("");
        let text: string | undefined;
        try {
          text = decoder.decode(Uint8Array.from(bytes));
        } catch {
          text = undefined;
        }
        const r = canonicalizePath(raw, STRICT);
        if (text === undefined) {
          expect(r.ok).toBe(false);
          return;
        }
        // Other refusals are about the ASCII decoded (controls, "/", "\", ";", "%25XX", dot segments).
        const asciiTrouble = /[\u0000-\u001f\u007f-\u009f/\\;]|%[0-9A-Fa-f]{2}/.test(text) || text === "." || text === "..";
        if (!asciiTrouble) expect(r).toMatchObject({ ok: true });
        if (r.ok) expect(decodeURIComponent(r.path)).toBe("/x" + text);
      }),
      { numRuns: 20_000 },
    );
  });

  it("fast path and slow path agree on plain ASCII", () => {
    // "%41" forces the slow path; the result must equal the fast-path result with "A" spelled raw.
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."abcAB/.-_~:@"), maxLength: 30 }), optionsArb, (s, opts) => {
        const fast = canonicalizePath("/" + s + "A", opts);
        const slow = canonicalizePath("/" + s + "%41", opts);
        expect(slow.ok).toBe(fast.ok);
        if (fast.ok && slow.ok) expect(slow.path).toBe(fast.path);
      }),
      { numRuns: 10_000 },
    );
  });
});
