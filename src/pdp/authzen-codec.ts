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
import {
  BOOL_VALUE,
  fieldTag,
  LEN,
  LIST_VALUE,
  LIST_VALUES,
  MAP_KEY,
  MAP_VALUE,
  NULL_VALUE,
  NUMBER_VALUE,
  Reader,
  STRING_VALUE,
  STRUCT_FIELDS,
  STRUCT_VALUE,
  Writer,
} from "./protobuf-wire.js";

export interface Evaluation {
  readonly subject: { readonly type: string; readonly id: string; readonly properties: Attributes };
  readonly resource: { readonly type: string; readonly id: string; readonly properties: Attributes };
  readonly action: string;
}

type Entity = Evaluation["subject"] | Evaluation["resource"];

// Tags (field << 3 | wire type) of every field we write; all fit in one byte.
const EVALUATIONS = fieldTag(5, LEN); // AccessEvaluationBatchRequest.evaluations
const SUBJECT = fieldTag(1, LEN); // Evaluation.subject
const RESOURCE = fieldTag(2, LEN); // Evaluation.resource
const ACTION = fieldTag(3, LEN); // Evaluation.action
const TYPE = fieldTag(1, LEN); // Subject/Resource.type
const ID = fieldTag(2, LEN); // Subject/Resource.id
const PROPERTIES = fieldTag(3, LEN); // Subject/Resource.properties
const NAME = fieldTag(1, LEN); // Action.name

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
    w.string(MAP_KEY, key);
    const v = w.begin(MAP_VALUE);
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
  // A fresh buffer each call: the channel frames it after this returns.
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
