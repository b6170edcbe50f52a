/**
 * Our CheckResources and health codec (src/pdp/checkresources-codec.ts) against the Cerbos SDK it
 * replaced in the pool. The SDK's own client (@cerbos/core) runs over a transport that does what
 * @cerbos/grpc's transport does — toBinary of the request message, fromBinary of the response,
 * with the generated message types of @cerbos/api — minus the network. So:
 * - what we encode must be the very bytes the SDK sent for the same request (pool.ts handed it
 *   the request built by toSdkRequest below), and must decode with the SDK's message types;
 * - what the SDK's encoder writes as a response must decode here to the same answers the SDK
 *   gave: allowed only for an explicit EFFECT_ALLOW;
 * - truncated or malformed responses throw, as they did in the SDK.
 */
import { UnencodableValue } from "../../src/pdp/protobuf-wire.js";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { Effect } from "@cerbos/api/cerbos/effect/v1/effect_pb";
import { CheckResourcesRequestSchema } from "@cerbos/api/cerbos/request/v1/request_pb";
import { CheckResourcesResponseSchema, CheckResourcesResponse_ResultEntrySchema } from "@cerbos/api/cerbos/response/v1/response_pb";
import { HealthCheckResponseSchema, HealthCheckResponse_ServingStatus } from "@cerbos/api/grpc/health/v1/health_pb";
import { Client, type CheckResourcesRequest as SdkCheckResourcesRequest, type CheckResourcesResponse as SdkResponse } from "@cerbos/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AttrValue, Attributes, Principal, Resource } from "../../src/model.js";
import {
  CHECK_RESOURCES_METHOD,
  decodeCheckResourcesResponse,
  decodeHealthCheckResponse,
  encodeCheckResourcesRequest,
  encodeHealthCheckRequest,
  HEALTH_CHECK_METHOD,
  SERVING,
} from "../../src/pdp/checkresources-codec.js";
import { toUnavailable, type ResourcesRequest } from "../../src/pdp/pool.js";

// --- the SDK, without a network ---------------------------------------------------------------

interface Sent {
  readonly method: string;
  readonly bytes: Buffer;
}

/** Descriptor of a unary method, as much of it as the transport reads. */
interface Method {
  readonly name: string;
  readonly parent: { readonly typeName: string };
  readonly input: Parameters<typeof toBinary>[0];
  readonly output: Parameters<typeof fromBinary>[0];
}

/** @cerbos/grpc's transport logic without the network: the request's bytes are kept, `reply` is answered. */
class Wire {
  readonly sent: Sent[] = [];
  reply: Uint8Array = new Uint8Array();

  async unary(method: Method, request: Parameters<typeof toBinary>[1]) {
    this.sent.push({ method: `/${method.parent.typeName}/${method.name}`, bytes: Buffer.from(toBinary(method.input, request)) });
    return fromBinary(method.output, this.reply, { readUnknownFields: false });
  }

  serverStream(): never {
    throw new Error("not used");
  }
}

/** The SDK's own client (the GRPC class is this plus a grpc-js transport). */
class Sdk extends Client {
  constructor(readonly wire: Wire) {
    super(wire as never, {});
  }
}

const wire = new Wire();
const sdk = new Sdk(wire);

/** What pool.ts handed the SDK for a request (its former toRequest); no request id, which the SDK would make up. */
function toSdkRequest(req: ResourcesRequest): SdkCheckResourcesRequest {
  const p = req.principal;
  return {
    requestId: "",
    principal: {
      id: p.id,
      roles: [...p.roles],
      attr: p.attr as Record<string, never>,
      ...(p.scope ? { scope: p.scope } : {}),
      ...(p.policyVersion ? { policyVersion: p.policyVersion } : {}),
    },
    resources: req.entries.map(({ resource: r, actions }) => ({
      resource: {
        kind: r.kind,
        id: r.id,
        attr: r.attr as Record<string, never>,
        ...(r.scope ? { scope: r.scope } : {}),
        ...(r.policyVersion ? { policyVersion: r.policyVersion } : {}),
      },
      actions: [...actions],
    })),
    ...(req.token ? { auxData: { jwt: { token: req.token } } } : {}),
  };
}

const EMPTY_RESPONSE = toBinary(CheckResourcesResponseSchema, create(CheckResourcesResponseSchema, {}));

/** The bytes the SDK sent for this request. */
async function sdkBytes(req: ResourcesRequest): Promise<Buffer> {
  wire.reply = EMPTY_RESPONSE;
  await sdk.checkResources(toSdkRequest(req));
  const sent = wire.sent.pop()!;
  expect(sent.method).toBe(CHECK_RESOURCES_METHOD);
  return sent.bytes;
}

/** Our bytes equal the SDK's, and decode with the SDK's message type. */
async function expectSameAsSdk(req: ResourcesRequest): Promise<void> {
  const ours = encodeCheckResourcesRequest(req);
  expect(ours.toString("hex")).toBe((await sdkBytes(req)).toString("hex"));
  const decoded = fromBinary(CheckResourcesRequestSchema, ours);
  expect(decoded.principal?.id).toBe(req.principal.id);
  expect(decoded.resources.map((r) => r.resource?.id)).toEqual(req.entries.map((e) => e.resource.id));
}

/** What the SDK made of a response's bytes. */
async function sdkDecode(bytes: Uint8Array): Promise<SdkResponse> {
  wire.reply = bytes;
  try {
    return await sdk.checkResources({ principal: { id: "p", roles: ["r"] }, resources: [] });
  } finally {
    wire.sent.pop();
  }
}

/** Ours and the SDK's answers to the same response bytes agree, for every action asked about. */
async function expectSameAnswers(bytes: Uint8Array, actions: readonly string[]): Promise<void> {
  const theirs = await sdkDecode(bytes);
  const ours = decodeCheckResourcesResponse(Buffer.from(bytes));
  expect(ours.callId).toBe(theirs.cerbosCallId);
  expect(ours.results).toHaveLength(theirs.results.length);
  ours.results.forEach((r, i) => {
    const t = theirs.results[i]!;
    expect(r.kind).toBe(t.resource.kind);
    expect(r.id).toBe(t.resource.id);
    for (const a of actions) expect(r.allowed(a), `result ${i}, action ${JSON.stringify(a)}`).toBe(t.isAllowed(a) === true);
  });
}

type ResponseInit = MessageInitShape<typeof CheckResourcesResponseSchema>;
/** The one-byte length of a short hex-written body. */
const lengthHex = (hex: string) => (hex.length / 2).toString(16).padStart(2, "0");
const response = (init: ResponseInit) => toBinary(CheckResourcesResponseSchema, create(CheckResourcesResponseSchema, init));

// --- inputs ---------------------------------------------------------------------------------

const alice: Principal = { id: "alice", roles: ["user"], attr: {} };
const route = (id: string, attr: Attributes = {}): Resource => ({ kind: "route", id, attr });
const one = (principal: Principal, resource: Resource, actions: readonly string[] = ["GET"], token?: string): ResourcesRequest => ({
  principal,
  entries: [{ resource, actions }],
  ...(token !== undefined ? { token } : {}),
});

const NESTED: Attributes = {
  str: "value",
  empty: "",
  int: 42,
  negative: -17,
  decimal: 3.25,
  tiny: 5e-324,
  huge: 1.7976931348623157e308,
  big: 2 ** 53 + 2,
  minusZero: -0,
  yes: true,
  no: false,
  nothing: null,
  list: ["a", 1, true, null, [], {}, ["nested", [2.5]]],
  emptyList: [],
  emptyObject: {},
  object: { deep: { deeper: { deepest: ["x", { k: "v" }] } }, "": "empty key", "2": "integer-like key", "1": "comes first" },
  unicode: "héllo wörld — 日本語 😀 \u0000 \u007f \u0080 \uffff",
  "ключ 🔑": "unicode key",
};

describe("CheckResources request: the SDK's bytes", () => {
  it("a minimal request", async () => {
    await expectSameAsSdk(one(alice, route("/api/1")));
  });

  it("principal with roles, attributes, scope and policy version; several resources with nested attributes, lists, numbers, booleans, null and unicode; a token", async () => {
    const principal: Principal = { id: "bob@example.com", roles: ["user", "admin", "", "rôle ü"], attr: NESTED, scope: "acme.hr", policyVersion: "20210210" };
    await expectSameAsSdk({
      principal,
      entries: [
        { resource: { kind: "document", id: "doc-1", attr: NESTED, scope: "acme", policyVersion: "v2" }, actions: ["view", "edit", "delete"] },
        { resource: route("/api/ü/日本", { method: "GET", query: { a: "1", b: ["2", "3"] }, ip: "" }), actions: ["GET"] },
        { resource: route("/empty-attr"), actions: [""] },
        { resource: { kind: "k", id: "", attr: {} }, actions: [] },
      ],
      token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl",
    });
  });

  it("empty strings are left out of singular fields, as proto3 (and the SDK) write them", async () => {
    const ours = encodeCheckResourcesRequest({ principal: { id: "", roles: [], attr: {}, scope: "", policyVersion: "" }, entries: [{ resource: { kind: "", id: "", attr: {} }, actions: [] }], token: "" });
    // principal {} and one resource entry { resource {} }: nothing else.
    expect(ours.toString("hex")).toBe("1a00" + "22021200");
    await expectSameAsSdk({ principal: { id: "", roles: [], attr: {} }, entries: [{ resource: { kind: "", id: "", attr: {} }, actions: [] }], token: "" });
  });

  it("NaN and the infinities are sent as doubles, as the SDK sent them", async () => {
    await expectSameAsSdk(one({ ...alice, attr: { nan: NaN, inf: Infinity, minusInf: -Infinity, list: [NaN, -Infinity] } }, route("/x", { n: { inf: Infinity } })));
  });

  it("length prefixes at the varint boundaries: strings, attribute values and whole messages", async () => {
    for (const n of [0, 1, 126, 127, 128, 129, 16_383, 16_384, 16_385, 2_097_151, 2_097_152]) {
      const s = "x".repeat(n);
      await expectSameAsSdk(one({ ...alice, id: s || "p" }, route("/r")));
      await expectSameAsSdk(one(alice, route("/r", { s })));
      await expectSameAsSdk(one(alice, route("/r"), [s]));
      await expectSameAsSdk(one(alice, route("/r"), ["GET"], s));
      // Non-ASCII: byte length ≠ string length.
      await expectSameAsSdk(one(alice, route("/r", { s: "é".repeat(Math.ceil(n / 2)) })));
    }
    // Every body size around 127/128 for the map entry, the Value, the resource and the entry.
    for (let n = 90; n < 140; n++) {
      await expectSameAsSdk(one(alice, route("/r", { k: "y".repeat(n) })));
      await expectSameAsSdk(one(alice, route("/r", { k: { kk: "y".repeat(n) } })));
      await expectSameAsSdk(one(alice, route("/r", { k: ["y".repeat(n)] })));
    }
  });

  it("16 KiB of attributes and many resources (the buffer grows)", async () => {
    const big: Attributes = Object.fromEntries(Array.from({ length: 512 }, (_, i) => [`attr${i}`, `value-${"v".repeat(20)}-${i}`]));
    expect(JSON.stringify(big).length).toBeGreaterThan(16 * 1024);
    await expectSameAsSdk(one({ ...alice, attr: big }, route("/r", big)));
    await expectSameAsSdk({
      principal: alice,
      entries: Array.from({ length: 500 }, (_, i) => ({ resource: route(`/api/${i}`, { i, tags: ["a", "b"] }), actions: ["GET", "POST"] })),
    });
  });

  it("any JSON-like attributes (property test)", async () => {
    const key = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }), fc.constantFrom("", "1", "__proto__", "constructor"));
    const str = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }), fc.string({ minLength: 120, maxLength: 135 }));
    const { value } = fc.letrec<{ value: AttrValue }>((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        str,
        fc.double(),
        fc.integer(),
        fc.boolean(),
        fc.constant(null),
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(key, tie("value"), { maxKeys: 4 }),
      ),
    }));
    const attrs = fc.dictionary(key, value, { maxKeys: 5 });
    const optional = fc.option(str, { nil: undefined });
    const principal = fc.record({ id: str, roles: fc.array(str, { maxLength: 3 }), attr: attrs, scope: optional, policyVersion: optional });
    const resource = fc.record({ kind: str, id: str, attr: attrs, scope: optional, policyVersion: optional });
    const request = fc.record({
      principal,
      entries: fc.array(fc.record({ resource, actions: fc.array(str, { maxLength: 3 }) }), { maxLength: 4 }),
      token: optional,
    });
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        const r = req as ResourcesRequest;
        expect(encodeCheckResourcesRequest(r).toString("hex")).toBe((await sdkBytes(r)).toString("hex"));
      }),
      { numRuns: 300 },
    );
  });
});

describe("CheckResources request: values the PDP cannot take fail the call as INVALID_ARGUMENT", () => {
  const bad: Array<[string, ResourcesRequest]> = [
    ["undefined attribute", one({ ...alice, attr: { a: undefined } as unknown as Attributes }, route("/r"))],
    ["undefined nested in an object", one(alice, route("/r", { o: { a: undefined } } as unknown as Attributes))],
    ["undefined in a list", one(alice, route("/r", { l: [1, undefined] } as unknown as Attributes))],
    ["a hole in a list", one(alice, route("/r", { l: [1, , 2] } as unknown as Attributes))],
    ["a function", one(alice, route("/r", { f: (() => 1) as unknown as AttrValue }))],
    ["a bigint", one(alice, route("/r", { b: 10n as unknown as AttrValue }))],
    ["a symbol", one(alice, route("/r", { s: Symbol("s") as unknown as AttrValue }))],
  ];
  it.each(bad)("%s: we throw UnencodableValue, where the SDK threw too", async (_, req) => {
    expect(() => encodeCheckResourcesRequest(req)).toThrow(UnencodableValue);
    await expect(sdkBytes(req)).rejects.toThrow();
  });

  const lone: Array<[string, ResourcesRequest]> = [
    ["principal id", one({ ...alice, id: "a\uD800" }, route("/r"))],
    ["a role", one({ ...alice, roles: ["\uDC00"] }, route("/r"))],
    ["an attribute key", one({ ...alice, attr: { "k\uD83D": 1 } }, route("/r"))],
    ["a nested attribute value", one(alice, route("/r", { o: { l: ["ok", "x\uDE00y"] } }))],
    ["a long string", one(alice, route("/r", { s: "x".repeat(200) + "\uD800" }))],
    ["resource id", one(alice, route("\uDFFF"))],
    ["an action", one(alice, route("/r"), ["GET\uD800"])],
    ["the token", one(alice, route("/r"), ["GET"], "tok\uD800")],
  ];
  it.each(lone)("a lone surrogate in %s is refused, not sent as U+FFFD (which the SDK did)", (_, req) => {
    expect(() => encodeCheckResourcesRequest(req)).toThrow(UnencodableValue);
  });

  it("a surrogate pair is fine", async () => {
    await expectSameAsSdk(one({ ...alice, id: "😀" }, route("/r", { e: "a😀b", "😀": ["😀".repeat(100)] })));
  });

  it("the pool names UnencodableValue INVALID_ARGUMENT (the batcher then retries item by item)", () => {
    expect(toUnavailable(new UnencodableValue("x")).grpcCode).toBe("INVALID_ARGUMENT");
  });
});

// --- responses --------------------------------------------------------------------------------

const ACTIONS = ["view", "edit", "delete", "unspecified", "no-match", "unknown-enum", "absent", "", "constructor", "__proto__"];

describe("CheckResources response: the SDK's answers", () => {
  it("ALLOW allows; DENY, unspecified, NO_MATCH, an unknown effect and an absent action deny; several results in order", async () => {
    const bytes = response({
      requestId: "req-1",
      cerbosCallId: "01HCALLID",
      results: [
        {
          resource: { kind: "document", id: "doc-1", policyVersion: "default", scope: "acme" },
          actions: { view: Effect.ALLOW, edit: Effect.DENY, unspecified: Effect.UNSPECIFIED, "no-match": Effect.NO_MATCH, "unknown-enum": 7 as Effect },
        },
        { resource: { kind: "route", id: "/api/1" }, actions: { view: Effect.DENY, edit: Effect.ALLOW, "": Effect.ALLOW } },
        { resource: { kind: "route", id: "/api/2" }, actions: {} },
      ],
    });
    await expectSameAnswers(bytes, ACTIONS);
    const ours = decodeCheckResourcesResponse(Buffer.from(bytes));
    expect(ours.callId).toBe("01HCALLID");
    expect(ours.results.map((r) => [r.kind, r.id, ACTIONS.filter((a) => r.allowed(a))])).toEqual([
      ["document", "doc-1", ["view"]],
      ["route", "/api/1", ["edit", ""]],
      ["route", "/api/2", []],
    ]);
  });

  it("missing fields: no call id, an empty resource, no actions, no results", async () => {
    await expectSameAnswers(response({ results: [{ resource: {} }] }), ACTIONS);
    await expectSameAnswers(response({}), ACTIONS);
    const ours = decodeCheckResourcesResponse(Buffer.from(response({ results: [{ resource: {} }] })));
    expect(ours).toMatchObject({ callId: "", results: [{ kind: "", id: "" }] });
    expect(decodeCheckResourcesResponse(Buffer.alloc(0))).toMatchObject({ callId: "", results: [] });
  });

  it("a result without its resource fails the call, as it did in the SDK", async () => {
    const bytes = response({ cerbosCallId: "c", results: [{ actions: { view: Effect.ALLOW } }] });
    await expect(sdkDecode(bytes)).rejects.toThrow();
    expect(() => decodeCheckResourcesResponse(Buffer.from(bytes))).toThrow();
  });

  it("the fields we do not read (validation errors, meta, outputs, request id) and unknown fields at every level are skipped", async () => {
    const unknown = [
      { no: 99, wireType: WireType.Varint, data: Uint8Array.of(0x96, 0x01) },
      { no: 100, wireType: WireType.Bit64, data: new Uint8Array(8).fill(0xff) },
      { no: 101, wireType: WireType.LengthDelimited, data: Uint8Array.of(3, 0x0a, 0x01, 0x41) },
      { no: 536_870_911, wireType: WireType.Bit32, data: new Uint8Array(4).fill(0x80) },
    ];
    const result = create(CheckResourcesResponse_ResultEntrySchema, {
      resource: { kind: "document", id: "doc-1", $unknown: unknown },
      actions: { view: Effect.ALLOW, edit: Effect.DENY },
      validationErrors: [{ path: "/owner", message: "expected string", source: 2 }],
      meta: { actions: { view: { matchedPolicy: "resource.document.vdefault", matchedScope: "" } }, effectiveDerivedRoles: ["owner"] },
      outputs: [{ src: "resource.document.vdefault#rule-1", action: "view", val: { kind: { case: "stringValue", value: "out" } } }],
      $unknown: unknown,
    });
    const bytes = toBinary(CheckResourcesResponseSchema, create(CheckResourcesResponseSchema, { requestId: "r", cerbosCallId: "call", results: [result, result], $unknown: unknown }));
    await expectSameAnswers(bytes, ACTIONS);
    expect(decodeCheckResourcesResponse(Buffer.from(bytes)).results.map((r) => r.allowed("view"))).toEqual([true, true]);

    // An unknown field (111, varint) inside an actions map entry { key "view", value ALLOW }.
    const entry = "0a04" + Buffer.from("view").toString("hex") + "1001" + "f80601";
    const entryResult = "0a00" + "12" + lengthHex(entry) + entry;
    const bytes2 = Buffer.from("12" + lengthHex(entryResult) + entryResult, "hex");
    await expectSameAnswers(bytes2, ACTIONS);
    expect(decodeCheckResourcesResponse(bytes2).results[0]!.allowed("view")).toBe(true);
  });

  it("a repeated action key: the last entry wins, as protobuf merges maps", async () => {
    const allowThenDeny = Buffer.concat([
      toBinary(CheckResourcesResponse_ResultEntrySchema, create(CheckResourcesResponse_ResultEntrySchema, { resource: { kind: "k", id: "1" }, actions: { view: Effect.ALLOW, edit: Effect.DENY } })),
      toBinary(CheckResourcesResponse_ResultEntrySchema, create(CheckResourcesResponse_ResultEntrySchema, { resource: { id: "2" }, actions: { view: Effect.DENY, edit: Effect.ALLOW } })),
    ]);
    const bytes = Buffer.concat([Buffer.from([0x12, allowThenDeny.length]), allowThenDeny]);
    await expectSameAnswers(bytes, ACTIONS);
    const [r] = decodeCheckResourcesResponse(bytes).results;
    expect([r!.kind, r!.id, r!.allowed("view"), r!.allowed("edit")]).toEqual(["k", "2", false, true]);
  });

  it("long strings and many results: length prefixes past one and two bytes", async () => {
    for (const n of [127, 128, 16_383, 16_384, 70_000]) {
      const id = "i".repeat(n);
      await expectSameAnswers(response({ cerbosCallId: "c".repeat(n), results: [{ resource: { kind: "k", id }, actions: { [id]: Effect.ALLOW, view: Effect.ALLOW } }] }), ["view", id, "absent"]);
    }
    const many = response({ results: Array.from({ length: 2000 }, (_, i) => ({ resource: { kind: "route", id: `/api/${i}` }, actions: { GET: i % 3 === 0 ? Effect.ALLOW : Effect.DENY } })) });
    expect(many.length).toBeGreaterThan(16 * 1024);
    await expectSameAnswers(many, ["GET"]);
  });

  it("every truncation of a response either throws or is a shorter valid message, exactly as for the SDK's decoder", async () => {
    const bytes = response({
      cerbosCallId: "call-id",
      results: [
        { resource: { kind: "document", id: "doc-1" }, actions: { view: Effect.ALLOW, edit: Effect.DENY }, validationErrors: [{ path: "/a", message: "m", source: 1 }] },
        { resource: { kind: "route", id: "x".repeat(130) }, actions: { ["a".repeat(130)]: Effect.ALLOW } },
      ],
    });
    for (let n = 0; n < bytes.length; n++) {
      const cut = bytes.subarray(0, n);
      const theirs = await sdkDecode(cut).then(
        () => "ok",
        () => "throws",
      );
      const ours = (() => {
        try {
          decodeCheckResourcesResponse(Buffer.from(cut));
          return "ok";
        } catch {
          return "throws";
        }
      })();
      expect(ours, `cut at ${n}`).toBe(theirs);
      if (ours === "ok") await expectSameAnswers(cut, ["view", "edit", "a".repeat(130)]);
    }
  });

  it.each([
    ["a truncated varint key", "ff"],
    ["a 11-byte varint", "08" + "ff".repeat(10) + "01"],
    ["field number 0", "0001"],
    ["a group (wire type 3)", "1b"],
    ["wire type 6", "1e00"],
    ["a result longer than the buffer", "120a0a00"],
    ["a call id longer than the buffer", "1a05abcd"],
    ["a resource longer than its result", "12040a0a0a00"],
    ["an action entry longer than its result", "1204" + "0a00" + "1206"],
    ["a string longer than its resource", "1206" + "0a04" + "0a05aaaa"],
    ["an unknown fixed64 past the end of a result", "1204" + "0a00" + "29" + "00".repeat(7)],
    // The skipped field ends exactly at the end of the enclosing result: only the inner check sees it.
    ["an unknown fixed64 past the end of a resource", "120b" + "0a02" + "29" + "00".repeat(8)],
    ["an unknown fixed64 past the end of an action entry", "120d" + "0a00" + "1202" + "29" + "00".repeat(8)],
    ["an unknown length past the end", "3a05aa"],
    ["an unknown fixed32 past the end", "3daabb"],
  ])("malformed: %s throws", (_, hex) => {
    expect(() => decodeCheckResourcesResponse(Buffer.from(hex, "hex"))).toThrow();
  });
});

describe("health check", () => {
  it("the request asks for the service the SDK asked for", async () => {
    wire.reply = toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING }));
    expect(await sdk.checkHealth()).toEqual({ status: "SERVING" });
    const sent = wire.sent.pop()!;
    expect(sent.method).toBe(HEALTH_CHECK_METHOD);
    expect(encodeHealthCheckRequest("cerbos.svc.v1.CerbosService").toString("hex")).toBe(sent.bytes.toString("hex"));
  });

  it.each([
    ["SERVING", HealthCheckResponse_ServingStatus.SERVING],
    ["NOT_SERVING", HealthCheckResponse_ServingStatus.NOT_SERVING],
    ["SERVICE_UNKNOWN", HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN],
    ["UNKNOWN (absent)", HealthCheckResponse_ServingStatus.UNKNOWN],
  ])("a %s response decodes to its status", (_, status) => {
    const bytes = toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, { status }));
    expect(decodeHealthCheckResponse(Buffer.from(bytes))).toBe(status);
    expect(decodeHealthCheckResponse(Buffer.from(bytes)) === SERVING).toBe(status === HealthCheckResponse_ServingStatus.SERVING);
  });

  it("unknown fields are skipped; truncated or malformed input throws", () => {
    expect(decodeHealthCheckResponse(Buffer.from("12020a00" + "0801" + "f806ff01", "hex"))).toBe(SERVING);
    for (const hex of ["08", "0881", "1203aa", "0b", "0001"]) expect(() => decodeHealthCheckResponse(Buffer.from(hex, "hex")), hex).toThrow();
  });
});
