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
 */
import type { AttrValue, Attributes } from "../model.js";

export interface Evaluation {
  readonly subject: { readonly type: string; readonly id: string; readonly properties: Attributes };
  readonly resource: { readonly type: string; readonly id: string; readonly properties: Attributes };
  readonly action: string;
}

/** A growable byte buffer with the few protobuf primitives we need. */
class Writer {
  buf = Buffer.allocUnsafe(1024);
  pos = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  varint(v: number): void {
    this.ensure(10);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  string(field: number, s: string): void {
    const len = Buffer.byteLength(s);
    this.tag(field, 2);
    this.varint(len);
    this.ensure(len);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  double(field: number, n: number): void {
    this.tag(field, 1);
    this.ensure(8);
    this.buf.writeDoubleLE(n, this.pos);
    this.pos += 8;
  }

  bool(field: number, b: boolean): void {
    this.tag(field, 0);
    this.varint(b ? 1 : 0);
  }

  /** Writes a length-delimited sub-message produced by `body`. */
  message(field: number, body: () => void): void {
    this.tag(field, 2);
    // Reserve 5 bytes for the length (max 2^35), then shift the body if the length is shorter.
    this.ensure(5);
    const lenAt = this.pos;
    this.pos += 5;
    const start = this.pos;
    body();
    const len = this.pos - start;
    let lenBytes = 1;
    for (let v = len; v > 0x7f; v = Math.floor(v / 128)) lenBytes++;
    this.buf.copy(this.buf, lenAt + lenBytes, start, this.pos);
    let v = len;
    let at = lenAt;
    while (v > 0x7f) {
      this.buf[at++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[at] = v;
    this.pos = lenAt + lenBytes + len;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

function writeValue(w: Writer, v: AttrValue): void {
  if (v === null) {
    w.tag(1, 0);
    w.varint(0);
  } else if (typeof v === "string") w.string(3, v);
  else if (typeof v === "number") w.double(2, v);
  else if (typeof v === "boolean") w.bool(4, v);
  else if (Array.isArray(v)) w.message(6, () => (v as readonly AttrValue[]).forEach((item) => w.message(1, () => writeValue(w, item))));
  else w.message(5, () => writeFields(w, 1, v as Attributes));
}

/** map<string, Value> as repeated entries { string key = 1; Value value = 2; }. */
function writeFields(w: Writer, field: number, attrs: Attributes): void {
  for (const key of Object.keys(attrs)) {
    const value = attrs[key];
    if (value === undefined) continue;
    w.message(field, () => {
      w.string(1, key);
      w.message(2, () => writeValue(w, value));
    });
  }
}

export function encodeBatchRequest(evaluations: readonly Evaluation[]): Buffer {
  const w = new Writer();
  for (const e of evaluations) {
    w.message(5, () => {
      w.message(1, () => {
        w.string(1, e.subject.type);
        w.string(2, e.subject.id);
        writeFields(w, 3, e.subject.properties);
      });
      w.message(2, () => {
        w.string(1, e.resource.type);
        w.string(2, e.resource.id);
        writeFields(w, 3, e.resource.properties);
      });
      w.message(3, () => w.string(1, e.action));
    });
  }
  return Buffer.from(w.finish());
}

function readVarint(buf: Buffer, pos: number): [value: number, next: number] {
  let value = 0;
  let mul = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error("truncated varint");
    const b = buf[pos++]!;
    value += (b & 0x7f) * mul;
    if (b < 0x80) return [value, pos];
    mul *= 128;
    if (mul > 2 ** 63) throw new Error("varint too long");
  }
}

function skip(buf: Buffer, pos: number, wire: number): number {
  switch (wire) {
    case 0:
      return readVarint(buf, pos)[1];
    case 1:
      return pos + 8;
    case 2: {
      const [len, next] = readVarint(buf, pos);
      return next + len;
    }
    case 5:
      return pos + 4;
    default:
      throw new Error(`unsupported wire type ${wire}`);
  }
}

/**
 * Decodes the decisions in order. A missing `decision` (the field is optional) is `undefined`,
 * which the caller treats as a deny like anything but an explicit `true`.
 */
export function decodeBatchResponse(buf: Buffer): Array<boolean | undefined> {
  const decisions: Array<boolean | undefined> = [];
  let pos = 0;
  while (pos < buf.length) {
    const [tag, next] = readVarint(buf, pos);
    pos = next;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1 && wire === 2) {
      const [len, start] = readVarint(buf, pos);
      const end = start + len;
      if (end > buf.length) throw new Error("truncated message");
      let decision: boolean | undefined;
      let p = start;
      while (p < end) {
        const [t, n] = readVarint(buf, p);
        p = n;
        if (Math.floor(t / 8) === 1 && (t & 7) === 0) {
          const [v, after] = readVarint(buf, p);
          decision = v === 1;
          p = after;
        } else p = skip(buf, p, t & 7);
      }
      if (p !== end) throw new Error("malformed evaluation");
      decisions.push(decision);
      pos = end;
    } else {
      pos = skip(buf, pos, wire);
    }
  }
  if (pos !== buf.length) throw new Error("malformed response");
  return decisions;
}
