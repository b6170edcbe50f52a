/**
 * Our own wire encoding of the AuthZEN messages we use (package authzen.authorization.v1 on the
 * Cerbos PDP's gRPC port): AccessEvaluationBatchRequest out, AccessEvaluationBatchResponse in.
 * Only the fields this service sends or reads are written down here:
 *
 *   Subject  { string type = 1; string id = 2; map<string, google.protobuf.Value> properties = 3; }
 *   Resource { string type = 1; string id = 2; map<string, google.protobuf.Value> properties = 3; }
 *   Action   { string name = 1; }
 *   Evaluation { Subject subject = 1; Resource resource = 2; Action action = 3; }
 *   AccessEvaluationBatchRequest  { repeated Evaluation evaluations = 5; }
 *   AccessEvaluationResponse      { optional bool decision = 1; }
 *   AccessEvaluationBatchResponse { repeated AccessEvaluationResponse evaluations = 1; }
 *   google.protobuf.Value { null_value = 1; number_value = 2 (double); string_value = 3;
 *                           bool_value = 4; struct_value = 5 (Struct { map fields = 1 });
 *                           list_value = 6 (ListValue { repeated Value values = 1 }) }
 *
 * The encoder runs once per PDP call over every evaluation, so it is written for speed: no
 * closures, one length byte reserved per sub-message (the body is moved only when it turns out to
 * need a longer length), short ASCII strings copied by hand, and a subject object that recurs in a
 * call is encoded once and its bytes copied after that (packUnits gives every evaluation of a
 * principal the same subject object), as is a resource object in adjacent evaluations (one unit's
 * actions). The output must stay byte for byte what protobufjs writes for the same message
 * (test/unit/authzen-codec.test.ts).
 */
import type { AttrValue, Attributes } from "../model.js";
import { UnencodableValue } from "./checkresources-codec.js";

export interface Evaluation {
  readonly subject: { readonly type: string; readonly id: string; readonly properties: Attributes };
  readonly resource: { readonly type: string; readonly id: string; readonly properties: Attributes };
  readonly action: string;
}

type Entity = Evaluation["subject"] | Evaluation["resource"];

// Tags (field << 3 | wire type) of every field we write; all fit in one byte.
const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const fieldTag = (field: number, wire: number) => (field << 3) | wire;
const EVALUATIONS = fieldTag(5, LEN); // AccessEvaluationBatchRequest.evaluations
const SUBJECT = fieldTag(1, LEN); // Evaluation.subject
const RESOURCE = fieldTag(2, LEN); // Evaluation.resource
const ACTION = fieldTag(3, LEN); // Evaluation.action
const TYPE = fieldTag(1, LEN); // Subject/Resource.type
const ID = fieldTag(2, LEN); // Subject/Resource.id
const PROPERTIES = fieldTag(3, LEN); // Subject/Resource.properties
const NAME = fieldTag(1, LEN); // Action.name
const NULL_VALUE = fieldTag(1, VARINT);
const NUMBER_VALUE = fieldTag(2, FIXED64);
const STRING_VALUE = fieldTag(3, LEN);
const BOOL_VALUE = fieldTag(4, VARINT);
const STRUCT_VALUE = fieldTag(5, LEN);
const LIST_VALUE = fieldTag(6, LEN);
const STRUCT_FIELDS = fieldTag(1, LEN); // Struct.fields
const LIST_VALUES = fieldTag(1, LEN); // ListValue.values
const ENTRY_KEY = fieldTag(1, LEN); // a map entry's key
const ENTRY_VALUE = fieldTag(2, LEN); // a map entry's value

/** Bytes of the varint for a length. */
function varintSize(v: number): number {
  let n = 1;
  for (; v > 0x7f; v = Math.floor(v / 128)) n++;
  return n;
}

/** A growable byte buffer with the few protobuf primitives we need. */
class Writer {
  buf: Buffer;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** Writes a length (any non-negative integer up to Buffer sizes) at `at`; returns the end. */
  private lengthAt(at: number, v: number): number {
    const buf = this.buf;
    while (v > 0x7f) {
      buf[at++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    buf[at++] = v;
    return at;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** A tag and a one-byte value: null_value = 0, or a bool. */
  tagAndByte(t: number, b: number): void {
    this.ensure(2);
    this.buf[this.pos++] = t;
    this.buf[this.pos++] = b;
  }

  string(t: number, s: string): void {
    const n = s.length;
    // Short strings: copy the characters by hand while they are ASCII (then the byte length is
    // s.length and fits in one byte), which beats Buffer.byteLength + buf.write on so few bytes.
    if (n < 0x80) {
      this.ensure(n + 2);
      const buf = this.buf;
      const at = this.pos;
      let p = at + 2;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) {
          p = -1;
          break;
        }
        buf[p++] = c;
      }
      if (p >= 0) {
        buf[at] = t;
        buf[at + 1] = n;
        this.pos = p;
        return;
      }
    }
    // Anything else (long or not ASCII): Node's UTF-8 encoder, overwriting a partial copy above.
    // It would write a lone surrogate as U+FFFD, a different string: refuse it, as the
    // CheckResources codec does (INVALID_ARGUMENT: the batcher then retries item by item).
    if (!(s as unknown as { isWellFormed(): boolean }).isWellFormed()) throw new UnencodableValue("a string with a lone surrogate");
    const len = Buffer.byteLength(s, "utf8");
    this.ensure(len + 6);
    this.buf[this.pos] = t;
    this.pos = this.lengthAt(this.pos + 1, len);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  double(t: number, n: number): void {
    this.ensure(9);
    this.buf[this.pos] = t;
    this.buf.writeDoubleLE(n, this.pos + 1);
    this.pos += 9;
  }

  /**
   * Starts a length-delimited field: writes its tag and reserves one byte for the length, which
   * is all a body under 128 bytes needs. Returns where the body starts, for end().
   */
  begin(t: number): number {
    this.ensure(2);
    this.buf[this.pos] = t;
    this.pos += 2;
    return this.pos;
  }

  /**
   * Ends the field begun at `start` by writing its length. A body of 128 bytes or more needs a
   * longer varint, so the body moves up to make room. Returns how far it moved.
   */
  end(start: number): number {
    const len = this.pos - start;
    if (len < 0x80) {
      this.buf[start - 1] = len;
      return 0;
    }
    const moved = varintSize(len) - 1;
    this.ensure(moved);
    this.buf.copyWithin(start + moved, start, this.pos);
    this.lengthAt(start - 1, len);
    this.pos += moved;
    return moved;
  }

  /** Appends a copy of bytes written earlier, [from, to). */
  repeat(from: number, to: number): void {
    this.ensure(to - from);
    this.buf.copyWithin(this.pos, from, to);
    this.pos += to - from;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

function writeValue(w: Writer, v: AttrValue): void {
  if (v === null) w.tagAndByte(NULL_VALUE, 0);
  else if (typeof v === "string") w.string(STRING_VALUE, v);
  else if (typeof v === "number") w.double(NUMBER_VALUE, v);
  else if (typeof v === "boolean") w.tagAndByte(BOOL_VALUE, v ? 1 : 0);
  else if (Array.isArray(v)) {
    const list = w.begin(LIST_VALUE);
    const items = v as readonly AttrValue[];
    for (let i = 0; i < items.length; i++) {
      // Holes of a sparse array are left out, as the forEach of earlier versions did.
      if (items[i] === undefined && !(i in items)) continue;
      const item = w.begin(LIST_VALUES);
      writeValue(w, items[i]!);
      w.end(item);
    }
    w.end(list);
  } else {
    const struct = w.begin(STRUCT_VALUE);
    writeFields(w, STRUCT_FIELDS, v as Attributes);
    w.end(struct);
  }
}

/** map<string, Value> as repeated entries { string key = 1; Value value = 2; }. */
function writeFields(w: Writer, t: number, attrs: Attributes): void {
  for (const key of Object.keys(attrs)) {
    const value = attrs[key];
    if (value === undefined) continue;
    const entry = w.begin(t);
    w.string(ENTRY_KEY, key);
    const v = w.begin(ENTRY_VALUE);
    writeValue(w, value);
    w.end(v);
    w.end(entry);
  }
}

/** Where an entity's length and body already are in the output, to copy them from. */
interface Span {
  from: number;
  to: number;
}

/**
 * Writes a Subject or Resource field, copying `copyOf` (the same object's bytes written earlier in
 * this call) when given. Returns true when it encoded the entity instead (the caller records the span).
 */
function writeEntity(w: Writer, t: number, entity: Entity, copyOf: Span | undefined): boolean {
  if (copyOf) {
    w.byte(t);
    w.repeat(copyOf.from, copyOf.to);
    return false;
  }
  const body = w.begin(t);
  w.string(TYPE, entity.type);
  w.string(ID, entity.id);
  writeFields(w, PROPERTIES, entity.properties);
  w.end(body);
  return true;
}

export function encodeBatchRequest(evaluations: readonly Evaluation[]): Buffer {
  // About what the usual evaluation takes (~210 bytes); the buffer doubles when it is not enough.
  // A fresh buffer each call: grpc-js may still hold the previous one.
  const w = new Writer(256 + evaluations.length * 256);
  // Subjects recur all over a call (one per principal); a resource recurs only in the adjacent
  // evaluations of one unit's actions, so only the last one is kept (a Map entry per evaluation
  // would cost more than it saves).
  const subjects = new Map<Entity, Span>();
  let lastResource: Entity | undefined;
  const lastResourceSpan: Span = { from: 0, to: 0 };
  for (const e of evaluations) {
    const body = w.begin(EVALUATIONS);
    const subjectAt = w.pos + 1; // past the tag: spans hold length + body
    const newSubject = writeEntity(w, SUBJECT, e.subject, subjects.get(e.subject));
    const resourceAt = w.pos + 1;
    const newResource = writeEntity(w, RESOURCE, e.resource, e.resource === lastResource ? lastResourceSpan : undefined);
    const resourceEnd = w.pos;
    const action = w.begin(ACTION);
    w.string(NAME, e.action);
    w.end(action);
    // The spans are recorded once the evaluation's own length is written, which may move its body.
    const moved = w.end(body);
    if (newSubject) subjects.set(e.subject, { from: subjectAt + moved, to: resourceAt - 1 + moved });
    if (newResource) {
      lastResource = e.resource;
      lastResourceSpan.from = resourceAt + moved;
      lastResourceSpan.to = resourceEnd + moved;
    }
  }
  return w.finish();
}

/** Reads protobuf from a buffer; every read checks the bounds and throws on truncated input. */
class Reader {
  pos = 0;

  constructor(readonly buf: Buffer) {}

  /** A varint of up to 10 bytes (as a double: exact below 2^53, which is all we compare). */
  varint(): number {
    const buf = this.buf;
    let pos = this.pos;
    let value = 0;
    let mul = 1;
    for (;;) {
      if (pos >= buf.length) throw new Error("truncated varint");
      const b = buf[pos++]!;
      value += (b & 0x7f) * mul;
      if (b < 0x80) {
        this.pos = pos;
        return value;
      }
      mul *= 128;
      if (mul > 2 ** 63) throw new Error("varint too long");
    }
  }

  /** Skips the value of a field of wire type `wire`; a length past the end is caught by the caller. */
  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        return;
      case 2: {
        const len = this.varint();
        this.pos += len;
        return;
      }
      case 5:
        this.pos += 4;
        return;
      default:
        throw new Error(`unsupported wire type ${wire}`);
    }
  }
}

/**
 * Decodes the decisions in order. A missing `decision` (the field is optional) is `undefined`,
 * which the caller treats as a deny like anything but an explicit `true`.
 */
export function decodeBatchResponse(buf: Buffer): Array<boolean | undefined> {
  const decisions: Array<boolean | undefined> = [];
  const r = new Reader(buf);
  while (r.pos < buf.length) {
    const key = r.varint();
    const wire = key & 7;
    if (Math.floor(key / 8) === 1 && wire === 2) {
      const len = r.varint();
      const end = r.pos + len;
      if (end > buf.length) throw new Error("truncated message");
      let decision: boolean | undefined;
      while (r.pos < end) {
        const t = r.varint();
        if (Math.floor(t / 8) === 1 && (t & 7) === 0) decision = r.varint() === 1;
        else r.skip(t & 7);
      }
      // A field inside the evaluation that ran past its end (the reads above only stop at the buffer's).
      if (r.pos !== end) throw new Error("malformed evaluation");
      decisions.push(decision);
    } else {
      r.skip(wire);
    }
  }
  if (r.pos !== buf.length) throw new Error("malformed response");
  return decisions;
}
