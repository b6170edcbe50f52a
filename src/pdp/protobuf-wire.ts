/**
 * The protobuf wire primitives our two codecs share (authzen-codec.ts, checkresources-codec.ts):
 * a Writer with one length byte reserved per sub-message (the body moves up only when it turns out
 * to be 128 bytes or more), an ASCII fast path for short strings, and a bounds-checked Reader.
 * google.protobuf.Value's field tags live here too, since both requests carry attributes as Values.
 */

/** A value a request cannot carry as it is; the pool fails the call as INVALID_ARGUMENT. */
export class UnencodableValue extends Error {
  override readonly name = "UnencodableValue";
}

// Wire types, and a field's tag (field << 3 | wire type); every tag we write fits in one byte.
export const VARINT = 0;
export const FIXED64 = 1;
export const LEN = 2;
export const fieldTag = (field: number, wire: number) => (field << 3) | wire;

// google.protobuf.Value { null_value = 1; number_value = 2; string_value = 3; bool_value = 4;
// struct_value = 5; list_value = 6 }, Struct { map fields = 1 }, ListValue { repeated values = 1 },
// and a map entry { key = 1; value = 2 }.
export const NULL_VALUE = fieldTag(1, VARINT);
export const NUMBER_VALUE = fieldTag(2, FIXED64);
export const STRING_VALUE = fieldTag(3, LEN);
export const BOOL_VALUE = fieldTag(4, VARINT);
export const STRUCT_VALUE = fieldTag(5, LEN);
export const LIST_VALUE = fieldTag(6, LEN);
export const STRUCT_FIELDS = fieldTag(1, LEN);
export const LIST_VALUES = fieldTag(1, LEN);
export const MAP_KEY = fieldTag(1, LEN);
export const MAP_VALUE = fieldTag(2, LEN);

/** String.prototype.isWellFormed (Node 20+; not in the ES2022 lib the project compiles against). */
interface WellFormedString {
  isWellFormed(): boolean;
}

/** Bytes of the varint for a length. */
function varintSize(v: number): number {
  let n = 1;
  for (; v > 0x7f; v = Math.floor(v / 128)) n++;
  return n;
}

/** A growable byte buffer with the few protobuf primitives we need. */
export class Writer {
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
    // It would write a lone surrogate as U+FFFD, a different string: refuse it instead.
    if (!(s as unknown as WellFormedString).isWellFormed()) throw new UnencodableValue("a string with a lone surrogate");
    const len = Buffer.byteLength(s, "utf8");
    this.ensure(len + 6);
    this.buf[this.pos] = t;
    this.pos = this.lengthAt(this.pos + 1, len);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  /** A singular string field: left out when empty, as proto3 writes it. */
  optionalString(t: number, s: string | undefined): void {
    if (s) this.string(t, s);
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

/** Reads protobuf from a buffer; every read checks the bounds and throws on truncated input. */
export class Reader {
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

  /** A field's key: a uint32 whose field number is not 0. */
  key(): number {
    const key = this.varint();
    if (key < 8 || key > 0xffffffff) throw new Error("invalid field key");
    return key;
  }

  /** The end of a length-delimited value that starts here, within `limit`. */
  lengthEnd(limit: number): number {
    const len = this.varint();
    const end = this.pos + len;
    if (end > limit) throw new Error("truncated message");
    return end;
  }

  /** A length-delimited string within `limit`. */
  string(limit: number): string {
    const end = this.lengthEnd(limit);
    const s = this.buf.toString("utf8", this.pos, end);
    this.pos = end;
    return s;
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
