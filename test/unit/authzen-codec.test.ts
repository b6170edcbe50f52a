/**
 * Our AuthZEN wire codec (src/pdp/authzen-codec.ts) against an independent implementation:
 * protobufjs (a dependency of @grpc/proto-loader), given a .proto text written here for the same
 * fields. What we encode must decode there to the same values — and be the same bytes that
 * protobufjs writes for that message — and what protobufjs encodes as a response must decode
 * here to the same decisions.
 */
import fc from "fast-check";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { UnencodableValue } from "../../src/pdp/protobuf-wire.js";
import { decodeBatchResponse, encodeBatchRequest, type Evaluation } from "../../src/pdp/authzen-codec.js";
import type { AttrValue, Attributes } from "../../src/model.js";

// google/protobuf/struct.proto, the fields we use, written from the protobuf documentation.
const STRUCT_PROTO = `
syntax = "proto3";
package google.protobuf;
message Struct { map<string, Value> fields = 1; }
message Value {
  oneof kind {
    NullValue null_value = 1;
    double number_value = 2;
    string string_value = 3;
    bool bool_value = 4;
    Struct struct_value = 5;
    ListValue list_value = 6;
  }
}
enum NullValue { NULL_VALUE = 0; }
message ListValue { repeated Value values = 1; }
`;

// The messages of authzen.authorization.v1 that the codec writes and reads. The response carries
// a `context` map (field 2) that our decoder does not read: it must be skipped.
const AUTHZEN_PROTO = `
syntax = "proto3";
package authzen.authorization.v1;
message Subject { string type = 1; string id = 2; map<string, google.protobuf.Value> properties = 3; }
message Resource { string type = 1; string id = 2; map<string, google.protobuf.Value> properties = 3; }
message Action { string name = 1; map<string, google.protobuf.Value> properties = 2; }
message Evaluation {
  Subject subject = 1;
  Resource resource = 2;
  Action action = 3;
  map<string, google.protobuf.Value> context = 4;
}
message AccessEvaluationBatchRequest { repeated Evaluation evaluations = 5; }
message AccessEvaluationResponse { optional bool decision = 1; map<string, google.protobuf.Value> context = 2; }
message AccessEvaluationBatchResponse { repeated AccessEvaluationResponse evaluations = 1; }
`;

const root = new protobuf.Root();
protobuf.parse(STRUCT_PROTO, root);
protobuf.parse(AUTHZEN_PROTO, root);
root.resolveAll();
const BatchRequest = root.lookupType("authzen.authorization.v1.AccessEvaluationBatchRequest");
const BatchResponse = root.lookupType("authzen.authorization.v1.AccessEvaluationBatchResponse");

// --- JS values ↔ protobufjs objects of google.protobuf.Value -------------------------------

type PbValue = Record<string, unknown>;

function toPbValue(v: AttrValue): PbValue {
  if (v === null) return { nullValue: 0 };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: (v as readonly AttrValue[]).map(toPbValue) } };
  return { structValue: { fields: toPbFields(v as Attributes) } };
}

function toPbFields(attrs: Attributes): Record<string, PbValue> {
  const out: Record<string, PbValue> = {};
  for (const [k, v] of Object.entries(attrs)) out[k] = toPbValue(v);
  return out;
}

function fromPbValue(v: PbValue): AttrValue {
  switch (v.kind) {
    case "nullValue":
      return null;
    case "numberValue":
      return v.numberValue as number;
    case "stringValue":
      return v.stringValue as string;
    case "boolValue":
      return v.boolValue as boolean;
    case "listValue":
      return (((v.listValue as { values?: PbValue[] }).values ?? []) as PbValue[]).map(fromPbValue);
    case "structValue":
      return fromPbFields((v.structValue as { fields?: Record<string, PbValue> }).fields);
    default:
      throw new Error(`Value without a kind: ${JSON.stringify(v)}`);
  }
}

function fromPbFields(fields: Record<string, PbValue> | undefined): Attributes {
  const out: Record<string, AttrValue> = {};
  for (const [k, v] of Object.entries(fields ?? {})) out[k] = fromPbValue(v);
  return out;
}

interface PbEntity {
  type?: string;
  id?: string;
  properties?: Record<string, PbValue>;
}

/** Decodes our bytes with protobufjs and maps them back to Evaluation objects. */
function referenceDecode(bytes: Buffer): Evaluation[] {
  const msg = BatchRequest.toObject(BatchRequest.decode(bytes), { oneofs: true, defaults: false, longs: Number }) as {
    evaluations?: Array<{ subject?: PbEntity; resource?: PbEntity; action?: { name?: string } }>;
  };
  return (msg.evaluations ?? []).map((e) => ({
    subject: { type: e.subject?.type ?? "", id: e.subject?.id ?? "", properties: fromPbFields(e.subject?.properties) },
    resource: { type: e.resource?.type ?? "", id: e.resource?.id ?? "", properties: fromPbFields(e.resource?.properties) },
    action: e.action?.name ?? "",
  }));
}

/** What protobufjs itself writes for the same request. */
function referenceEncode(evaluations: readonly Evaluation[]): Buffer {
  const obj = {
    evaluations: evaluations.map((e) => ({
      subject: { type: e.subject.type, id: e.subject.id, properties: toPbFields(e.subject.properties) },
      resource: { type: e.resource.type, id: e.resource.id, properties: toPbFields(e.resource.properties) },
      action: { name: e.action },
    })),
  };
  return Buffer.from(BatchRequest.encode(BatchRequest.fromObject(obj)).finish());
}

const ev = (subjectProps: Attributes, resourceProps: Attributes = {}, action = "read", ids: [string, string] = ["alice", "1"]): Evaluation => ({
  subject: { type: "principal", id: ids[0], properties: subjectProps },
  resource: { type: "doc", id: ids[1], properties: resourceProps },
  action,
});

function roundTrip(evaluations: Evaluation[]): void {
  const bytes = encodeBatchRequest(evaluations);
  expect(referenceDecode(bytes)).toEqual(evaluations);
  expect(bytes.equals(referenceEncode(evaluations)), "same bytes as protobufjs").toBe(true);
}

// --- encodeBatchRequest --------------------------------------------------------------------

describe("encodeBatchRequest: decoded by protobufjs to the same values", () => {
  it("strings, with unicode, empty strings and empty keys", () => {
    roundTrip([
      ev(
        { "cerbos.roles": ["user", "ädmin", "管理者"], name: "René", emoji: "😀 🏳️‍🌈", empty: "", nul: "a\u0000b", "": "empty key", "ключ": "значение" },
        { title: "日本語のタイトル", path: "/a b/%2F?x=1" },
        "läsen",
        ["ユーザー", "ドキュメント/1"],
      ),
    ]);
  });

  it("numbers: integers, floats, negatives, zero and negative zero, extremes", () => {
    const numbers = [0, -0, 1, -1, 42, -42, 127, 128, 2 ** 31, -(2 ** 31), 2 ** 53, -(2 ** 53), 0.1, -2.5, 1e-7, 1.7976931348623157e308, 5e-324, Math.PI];
    const props: Record<string, AttrValue> = {};
    numbers.forEach((n, i) => (props[`n${i}`] = n));
    roundTrip([ev(props, { list: numbers })]);
    const decoded = referenceDecode(encodeBatchRequest([ev(props)]));
    expect(Object.is(decoded[0]!.subject.properties["n1"], -0)).toBe(true);
  });

  it("booleans and null, alone and inside lists and objects", () => {
    roundTrip([ev({ t: true, f: false, n: null }, { list: [true, false, null], obj: { t: true, f: false, n: null } })]);
  });

  it("nested lists and objects, empty lists, empty objects and empty maps", () => {
    roundTrip([
      ev(
        { deep: { a: [1, [2, [3, { b: [] }]], {}], c: { d: { e: { f: "g" } } } }, emptyList: [], emptyObject: {}, listOfEmpties: [[], {}, ""] },
        {},
      ),
      // No properties at all on either side: the map field is simply absent.
      ev({}, {}, "delete", ["bob", "2"]),
    ]);
  });

  it("many evaluations keep their order", () => {
    const evaluations = Array.from({ length: 300 }, (_, i) => ev({ "cerbos.roles": [`r${i % 7}`], i }, { i: -i }, `a${i}`, [`p${i}`, `${i}`]));
    roundTrip(evaluations);
  });

  it("an empty batch is an empty message", () => {
    expect(encodeBatchRequest([]).length).toBe(0);
    expect(referenceDecode(encodeBatchRequest([]))).toEqual([]);
  });

  // Writer.begin reserves 1 byte for a length and end() moves the body up when the length needs
  // more. The Action message's body is tag (1 byte) + length of the name + the name, so these
  // name lengths put the Action's own length right at each varint boundary: 127 | 128 (1 → 2
  // bytes), 16383 | 16384 (2 → 3 bytes), 2097151 | 2097152 (3 → 4 bytes). The enclosing
  // Evaluation (and, for the large ones, the request) crosses boundaries of its own as well.
  it.each([
    ["1-byte length (empty body)", 0],
    ["1-byte length, 127", 125],
    ["2-byte length, 128", 126],
    ["2-byte length, 16383", 16380],
    ["3-byte length, 16384", 16381],
    ["3-byte length, 2097151", 2097147],
    ["4-byte length, 2097152", 2097148],
  ])("sub-message lengths across varint sizes: %s", (_name, nameLength) => {
    const action = "x".repeat(nameLength);
    const e = ev({ "cerbos.roles": ["user"] }, { big: "y".repeat(nameLength) }, action);
    const bytes = encodeBatchRequest([e, ev({ after: "the big one" }, {}, "read", ["bob", "2"])]);
    const decoded = referenceDecode(bytes);
    expect(decoded).toHaveLength(2);
    expect(decoded[0]!.action.length).toBe(nameLength);
    expect(decoded[0]!.resource.properties["big"]).toHaveLength(nameLength);
    expect(decoded[1]).toEqual(ev({ after: "the big one" }, {}, "read", ["bob", "2"]));
    expect(bytes.equals(referenceEncode([e, ev({ after: "the big one" }, {}, "read", ["bob", "2"])]))).toBe(true);
  });

  it("a multi-byte UTF-8 string across a length boundary", () => {
    // 64 × "é" (2 bytes) = 128 bytes: the string's own length needs 2 bytes although it has 64 characters.
    roundTrip([ev({ s: "é".repeat(64), t: "😀".repeat(4096) })]);
  });

  it("grows its buffer past its initial size in the middle of a nested message", () => {
    const props: Record<string, AttrValue> = {};
    for (let i = 0; i < 200; i++) props[`k${i}`] = { list: [i, `v${i}`, { nested: [true, null] }] };
    roundTrip([ev(props, props)]);
  });

  it("returns a buffer of its own (not a view on a reused one)", () => {
    const a = encodeBatchRequest([ev({ a: "1" })]);
    const copy = Buffer.from(a);
    encodeBatchRequest([ev({ b: "2".repeat(5000) })]);
    expect(a.equals(copy)).toBe(true);
  });

  it("property: any attribute values round-trip and equal protobufjs's bytes", () => {
    // "__proto__" would be a prototype, not a key, in the plain objects both sides build.
    const key = fc.string({ maxLength: 8, unit: "grapheme" }).filter((k) => k !== "__proto__");
    const { value } = fc.letrec<{ value: AttrValue }>((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.constant(null),
        fc.boolean(),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.integer(),
        fc.string({ unit: "grapheme", maxLength: 20 }),
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(key, tie("value"), { maxKeys: 4 }),
      ),
    }));
    const attrs = fc.dictionary(key, value, { maxKeys: 5 });
    const evaluation = fc.record({
      subject: fc.record({ type: fc.string({ maxLength: 10 }), id: fc.string({ unit: "grapheme", maxLength: 10 }), properties: attrs }),
      resource: fc.record({ type: fc.string({ maxLength: 10 }), id: fc.string({ unit: "grapheme", maxLength: 10 }), properties: attrs }),
      action: fc.string({ unit: "grapheme", maxLength: 10 }),
    });
    fc.assert(
      fc.property(fc.array(evaluation, { maxLength: 5 }), (evaluations) => {
        const bytes = encodeBatchRequest(evaluations);
        expect(referenceDecode(bytes)).toEqual(evaluations);
        expect(bytes.equals(referenceEncode(evaluations))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

// --- encodeBatchRequest: the fast paths ----------------------------------------------------
// The encoder reserves one byte per length and moves a body up when it needs more, copies short
// ASCII strings by hand, and encodes a subject or resource object once per call, copying its
// bytes for later evaluations. Each of these must still give protobufjs's bytes.

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Our bytes, checked against protobufjs's for the same request. */
function sameBytes(evaluations: readonly Evaluation[]): Buffer {
  const bytes = encodeBatchRequest(evaluations);
  expect(bytes.equals(referenceEncode(evaluations)), "same bytes as protobufjs").toBe(true);
  return bytes;
}

/** A deep copy: equal values, no object shared with the original. */
const copy = <T>(v: T): T => structuredClone(v);

describe("encodeBatchRequest: lengths, strings, shared subjects and resources", () => {
  // A string of n bytes at some depth, inside `levels` length-delimited fields counting its own.
  // When n grows by 1 the request grows by 1, plus 1 for every level whose length just went from
  // 127 to 128 (or 16383 to 16384) bytes. So a sweep where the growth adds up to `levels` extra
  // bytes has taken every level across the boundary, each one at exactly 127 | 128.
  const after = ev({ "cerbos.roles": ["user"] }, { after: true }, "read", ["bob", "2"]);
  it.each<[string, number, (s: string) => Evaluation]>([
    ["a resource property", 5, (s) => ev({ "cerbos.roles": ["user"] }, { p: s })],
    ["a string in a list", 7, (s) => ev({}, { l: [s] })],
    ["a string in an object in a list", 10, (s) => ev({}, { l: [{ k: s }, 1] })],
    ["a subject property", 5, (s) => ev({ k: s }, { p: 1 })],
    ["a map key", 4, (s) => ev({}, { [s]: null })],
    ["the subject id", 3, (s) => ev({}, {}, "read", [s, "1"])],
    ["the action", 3, (s) => ev({}, {}, s)],
  ])("%s: every enclosing length goes 1 → 2 → 3 bytes", (_name, levels, make) => {
    for (const [from, to] of [
      [40, 140],
      [16290, 16390],
    ] as const) {
      let extra = 0;
      let previous = -1;
      for (const n of range(from, to)) {
        const length = sameBytes([make("x".repeat(n)), after]).length;
        if (previous >= 0) extra += length - previous - 1;
        previous = length;
      }
      expect(extra, `levels crossing a boundary between ${from} and ${to}`).toBe(levels);
    }
  });

  it.each([
    ["empty", ""],
    ["the last ASCII character", "\u007f"],
    ["the first non-ASCII character", "\u0080"],
    ["a NUL", "a\u0000b"],
    ["127 ASCII (the longest 1-byte length)", "a".repeat(127)],
    ["128 ASCII", "a".repeat(128)],
    ["non-ASCII at the end of a short string", "a".repeat(126) + "é"],
    ["non-ASCII at the start", "é" + "a".repeat(126)],
    ["42 × 3 bytes = 126", "€".repeat(42)],
    ["43 × 3 bytes = 129: 43 characters but a 2-byte length", "€".repeat(43)],
    ["a surrogate pair", "a😀b"],
    ["a long mix", "x😀é€".repeat(2000)],
  ])("strings: %s, as a key, a value, an id, a type and an action", (_name, str) => {
    const e: Evaluation = {
      subject: { type: str, id: str, properties: { [str]: str, list: [str, { [str]: [str] }] } },
      resource: { type: str, id: str, properties: { [str]: str } },
      action: str,
    };
    roundTrip([e, e, copy(e)]);
  });

  it("lone surrogates are refused (UnencodableValue), never rewritten as U+FFFD", () => {
    for (const str of ["\uD800", "a\uDC00", "\uDFFFx", "x\uD83D", "\uDE00\uD83D", "long " + "x".repeat(200) + "\uD800"]) {
      expect(() => encodeBatchRequest([ev({ k: str }, {}, "read")]), JSON.stringify(str)).toThrow(UnencodableValue);
      expect(() => encodeBatchRequest([ev({}, {}, str)]), JSON.stringify(str)).toThrow(UnencodableValue);
    }
    expect(encodeBatchRequest([ev({ k: "a\uD83D\uDE00b" }, {}, "read")]).length).toBeGreaterThan(0); // a pair is fine
  });

  it("numbers: NaN and the infinities are written as doubles like any other", () => {
    const props = { nan: NaN, inf: Infinity, minusInf: -Infinity, minusZero: -0, list: [NaN, -0, Infinity] };
    const bytes = sameBytes([ev(props, props)]);
    const decoded = referenceDecode(bytes)[0]!.subject.properties;
    expect(decoded["nan"]).toBeNaN();
    expect(decoded["inf"]).toBe(Infinity);
    expect(decoded["minusInf"]).toBe(-Infinity);
    expect(Object.is(decoded["minusZero"], -0)).toBe(true);
  });

  it("a sparse array's holes are left out (and undefined properties too)", () => {
    const sparse = [1, , "two", , , null] as unknown as AttrValue[];
    const withUndefined = { a: 1, gone: undefined, b: [2] } as unknown as Attributes;
    expect(encodeBatchRequest([ev({ sparse }, withUndefined)]).equals(referenceEncode([ev({ sparse: [1, "two", null] }, { a: 1, b: [2] })]))).toBe(true);
  });

  // Subject sizes that put the subject and its first evaluation on each side of 128 and 16384
  // bytes: the copied bytes come from where the subject ended up after the evaluation's length
  // was written, which moves the evaluation's body by 0, 1 or 2 bytes.
  it.each([
    ["small", 0],
    ["evaluation over 127 bytes", 60],
    ["subject over 127 bytes", 120],
    ["evaluation over 16383 bytes", 16300],
    ["subject over 16383 bytes", 16400],
  ])("one subject object in many evaluations: the same bytes as equal separate subjects (%s)", (_name, n) => {
    const alice: Evaluation["subject"] = { type: "principal", id: "alice", properties: { "cerbos.roles": ["user"], pad: "p".repeat(n) } };
    const bob: Evaluation["subject"] = { type: "principal", id: "bob", properties: { "cerbos.roles": ["admin"], note: "ü".repeat(n) } };
    const doc = (id: string): Evaluation["resource"] => ({ type: "doc", id, properties: { owner: "alice" } });
    const shared = doc("shared");
    const evaluations: Evaluation[] = [
      { subject: alice, resource: doc("1"), action: "read" },
      { subject: alice, resource: doc("2"), action: "edit" },
      { subject: bob, resource: shared, action: "read" },
      { subject: alice, resource: shared, action: "read" },
      { subject: bob, resource: shared, action: "delete" },
      { subject: alice, resource: doc("3"), action: "x".repeat(n) },
      { subject: bob, resource: doc("4"), action: "read" },
    ];
    const bytes = sameBytes(evaluations);
    expect(bytes.equals(encodeBatchRequest(evaluations.map(copy)))).toBe(true);
    expect(referenceDecode(bytes)).toEqual(evaluations);
  });

  it("one object as subject and as resource, in one evaluation and across evaluations", () => {
    const both = { type: "t", id: "same", properties: { k: "v".repeat(200) } };
    const evaluations: Evaluation[] = [
      { subject: both, resource: both, action: "a" },
      { subject: both, resource: both, action: "b" },
      { subject: ev({}).subject, resource: both, action: "c" },
    ];
    expect(sameBytes(evaluations).equals(encodeBatchRequest(evaluations.map(copy)))).toBe(true);
  });

  it("grows its buffer at any point, also while moving a body or copying a subject", () => {
    // A sweep of sizes from well under to well over the initial buffer of a small call, so that
    // every write, the moves in end() and the copy of a shared subject each meet a full buffer.
    const subject = { type: "principal", id: "alice", properties: { "cerbos.roles": ["user"], pad: "p".repeat(150) } };
    for (const n of range(0, 900)) {
      const big = ev({ "cerbos.roles": ["user"] }, { s: "s".repeat(n) });
      sameBytes([big]);
      sameBytes([{ ...big, subject }, { subject, resource: big.resource, action: "edit" }, { subject, resource: ev({}).resource, action: "x" }]);
    }
  });

  it("two calls return separate buffers that later calls leave alone", () => {
    const first = encodeBatchRequest([ev({ a: "1" }), ev({ a: "1" })]);
    const second = encodeBatchRequest([ev({ b: "2" })]);
    const [firstCopy, secondCopy] = [Buffer.from(first), Buffer.from(second)];
    for (let i = 0; i < 50; i++) encodeBatchRequest([ev({ c: "3".repeat(i * 100) })]);
    expect(first.equals(firstCopy)).toBe(true);
    expect(second.equals(secondCopy)).toBe(true);
  });

  it("property: shared and equal subjects and resources, long and short strings: protobufjs's bytes", () => {
    const text = fc.oneof(
      fc.string({ unit: "grapheme", maxLength: 8 }),
      fc.tuple(fc.string({ unit: "grapheme", maxLength: 3 }), fc.nat(300)).map(([s, n]) => s + "y".repeat(n) + s),
    );
    const key = text.filter((k) => k !== "__proto__");
    const { value } = fc.letrec<{ value: AttrValue }>((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.constant(null),
        fc.boolean(),
        fc.double(),
        text,
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(key, tie("value"), { maxKeys: 4 }),
      ),
    }));
    const entity = fc.record({ type: text, id: text, properties: fc.dictionary(key, value, { maxKeys: 4 }) });
    const pick = fc.tuple(fc.nat(), fc.nat(), text);
    fc.assert(
      fc.property(fc.array(entity, { minLength: 1, maxLength: 4 }), fc.array(pick, { maxLength: 12 }), (entities, picks) => {
        // Evaluations draw their subject and resource from a few objects, so they repeat.
        const evaluations: Evaluation[] = picks.map(([s, r, action]) => ({ subject: entities[s % entities.length]!, resource: entities[r % entities.length]!, action }));
        const bytes = encodeBatchRequest(evaluations);
        expect(bytes.equals(referenceEncode(evaluations))).toBe(true);
        expect(bytes.equals(encodeBatchRequest(evaluations.map(copy)))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

// --- decodeBatchResponse -------------------------------------------------------------------

type PbResponse = { decision?: boolean; context?: Record<string, PbValue> };

const encodeResponse = (evaluations: PbResponse[]) => Buffer.from(BatchResponse.encode(BatchResponse.fromObject({ evaluations })).finish());

/** Hand-written protobuf pieces for unknown fields of every wire type. */
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
};
const tag = (field: number, wire: number) => varint(field * 8 + wire);
const lengthDelimited = (field: number, body: number[]) => [...tag(field, 2), ...varint(body.length), ...body];

describe("decodeBatchResponse", () => {
  it("reads true, false and an absent decision in order", () => {
    const bytes = encodeResponse([{ decision: true }, { decision: false }, {}, { decision: true }]);
    expect(decodeBatchResponse(bytes)).toEqual([true, false, undefined, true]);
  });

  it("an empty response has no decisions", () => {
    expect(decodeBatchResponse(Buffer.alloc(0))).toEqual([]);
  });

  it("skips a context map the PDP may add to an evaluation (Cerbos's cerbos.response)", () => {
    const context = { "cerbos.response": toPbValue({ requestId: "r1", results: [{ actions: { read: "EFFECT_ALLOW" } }] }) };
    const bytes = encodeResponse([
      { decision: true, context },
      { context, decision: false },
      { context },
    ]);
    expect(decodeBatchResponse(bytes)).toEqual([true, false, undefined]);
  });

  it("skips unknown fields of every wire type, inside an evaluation and around them", () => {
    const evaluationTrue = [
      ...tag(7, 0), ...varint(300), // varint
      ...tag(8, 1), 1, 2, 3, 4, 5, 6, 7, 8, // fixed64
      ...lengthDelimited(9, [0xff, 0x00, 0x08, 0x00]), // bytes that look like a decision field
      ...tag(10, 5), 1, 2, 3, 4, // fixed32
      ...tag(1, 0), 1, // decision = true
      ...tag(11, 0), ...varint(2 ** 40), // a long varint after it
    ];
    const bytes = Buffer.from([
      ...tag(2, 0), 5, // unknown top-level varint
      ...lengthDelimited(1, evaluationTrue),
      ...tag(3, 1), 0, 0, 0, 0, 0, 0, 0, 0, // unknown top-level fixed64
      ...lengthDelimited(1, [...tag(1, 0), 0]), // decision = false
      ...tag(4, 5), 9, 9, 9, 9, // unknown top-level fixed32
      ...lengthDelimited(1, []), // no decision
      ...lengthDelimited(5, [...tag(1, 0), 1]), // a field-5 message that is not an evaluation
    ]);
    expect(decodeBatchResponse(bytes)).toEqual([true, false, undefined]);
  });

  it("the last decision field of an evaluation wins (protobuf's rule for repeated scalars)", () => {
    const bytes = Buffer.from(lengthDelimited(1, [...tag(1, 0), 1, ...tag(1, 0), 0]));
    expect(decodeBatchResponse(bytes)).toEqual([false]);
  });

  it("many decisions with a 2-byte message count", () => {
    const decisions = Array.from({ length: 2500 }, (_, i) => (i % 3 === 0 ? true : i % 3 === 1 ? false : undefined));
    const bytes = encodeResponse(decisions.map((d) => (d === undefined ? {} : { decision: d })));
    expect(decodeBatchResponse(bytes)).toEqual(decisions);
  });

  it("evaluations with 1-, 2- and 3-byte lengths (a context of any size is skipped)", () => {
    const sizes = [0, 100, 130, 16_370, 16_400, 40_000];
    const bytes = encodeResponse(sizes.map((n, i) => ({ decision: i % 2 === 0, context: { pad: toPbValue("c".repeat(n)) } })));
    expect(decodeBatchResponse(bytes)).toEqual(sizes.map((_, i) => i % 2 === 0));
  });

  it("property: whatever protobufjs encodes decodes to the same decisions", () => {
    const context = fc.dictionary(
      fc.string({ maxLength: 6 }),
      fc.oneof(fc.string({ maxLength: 300 }), fc.double(), fc.boolean(), fc.constant(null)).map(toPbValue),
      { maxKeys: 3 },
    );
    // Absent keys, not undefined ones: an absent decision, with or without a context.
    const response: fc.Arbitrary<PbResponse> = fc.record({ decision: fc.boolean(), context }, { requiredKeys: [] });
    fc.assert(
      fc.property(fc.array(response, { maxLength: 60 }), (responses) => {
        expect(decodeBatchResponse(encodeResponse(responses))).toEqual(responses.map((r) => r.decision));
      }),
      { numRuns: 200 },
    );
  });

  it("throws on every truncation that does not end on an evaluation boundary", () => {
    const parts = [
      encodeResponse([{ decision: true, context: { k: toPbValue("x".repeat(200)) } }]),
      encodeResponse([{ decision: false }]),
      Buffer.from([...tag(3, 1), 1, 2, 3, 4, 5, 6, 7, 8]),
      encodeResponse([{}]),
      Buffer.from([...tag(4, 5), 1, 2, 3, 4]),
      encodeResponse([{ decision: true }]),
    ];
    const whole = Buffer.concat(parts);
    const boundaries = new Set<number>([0]);
    let at = 0;
    for (const p of parts) boundaries.add((at += p.length));
    expect(decodeBatchResponse(whole)).toEqual([true, false, undefined, true]);
    for (let cut = 1; cut < whole.length; cut++) {
      const prefix = whole.subarray(0, cut);
      if (boundaries.has(cut)) expect(() => decodeBatchResponse(prefix), `cut at ${cut}`).not.toThrow();
      else expect(() => decodeBatchResponse(prefix), `cut at ${cut}`).toThrow();
    }
  });

  it.each([
    ["a lone tag", [0x0a]],
    ["a truncated varint tag", [0x80]],
    ["a length beyond the end", [0x0a, 0x05, 0x08, 0x01]],
    ["a truncated decision varint", [0x0a, 0x02, 0x08, 0x80]],
    ["an inner field running past its evaluation", [0x0a, 0x02, 0x12, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00]],
    ["an inner fixed64 running past its evaluation", [0x0a, 0x03, 0x09, 0x00, 0x00]],
    ["a top-level fixed64 running past the end", [0x19, 0x00, 0x00]],
    ["a top-level fixed32 running past the end", [0x25, 0x00]],
    ["a start-group wire type", [0x0b, 0x0c]],
    ["an end-group wire type", [0x0c]],
    ["wire type 6", [0x0e]],
    ["wire type 7 inside an evaluation", [0x0a, 0x02, 0x0f, 0x00]],
    ["a varint longer than 10 bytes", [0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]],
  ])("throws on malformed input: %s", (_name, bytes) => {
    expect(() => decodeBatchResponse(Buffer.from(bytes))).toThrow();
  });
});
