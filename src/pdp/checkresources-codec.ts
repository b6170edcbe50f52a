/**
 * Our own wire encoding of the Cerbos messages the pool uses on the PDP's gRPC port, in place of
 * the Cerbos SDK: CheckResourcesRequest out and CheckResourcesResponse in
 * (cerbos.svc.v1.CerbosService/CheckResources), and the gRPC health check
 * (grpc.health.v1.Health/Check). Only the fields this service sends or reads are written down here:
 *
 *   cerbos.request.v1.CheckResourcesRequest { cerbos.engine.v1.Principal principal = 3;
 *                                             repeated ResourceEntry resources = 4; AuxData aux_data = 5; }
 *     (request_id = 1 and include_meta = 2 are left unset: the SDK sent a random request id we never read)
 *   CheckResourcesRequest.ResourceEntry { repeated string actions = 1; cerbos.engine.v1.Resource resource = 2; }
 *   cerbos.request.v1.AuxData { JWT jwt = 1; }   AuxData.JWT { string token = 1; }
 *   cerbos.engine.v1.Principal { string id = 1; string policy_version = 2; repeated string roles = 3;
 *                                map<string, google.protobuf.Value> attr = 4; string scope = 5; }
 *   cerbos.engine.v1.Resource  { string kind = 1; string policy_version = 2; string id = 3;
 *                                map<string, google.protobuf.Value> attr = 4; string scope = 5; }
 *   cerbos.response.v1.CheckResourcesResponse { repeated ResultEntry results = 2; string cerbos_call_id = 3; }
 *   CheckResourcesResponse.ResultEntry { Resource resource = 1; map<string, cerbos.effect.v1.Effect> actions = 2; }
 *   CheckResourcesResponse.ResultEntry.Resource { string id = 1; string kind = 2; }
 *   cerbos.effect.v1.Effect { EFFECT_UNSPECIFIED = 0; EFFECT_ALLOW = 1; EFFECT_DENY = 2; EFFECT_NO_MATCH = 3; }
 *   grpc.health.v1.HealthCheckRequest  { string service = 1; }
 *   grpc.health.v1.HealthCheckResponse { ServingStatus status = 1; }   SERVING = 1
 *   google.protobuf.Value { null_value = 1; number_value = 2 (double); string_value = 3;
 *                           bool_value = 4; struct_value = 5 (Struct { map fields = 1 });
 *                           list_value = 6 (ListValue { repeated Value values = 1 }) }
 *
 * The request is written as the SDK wrote it (test/unit/checkresources-codec.test.ts compares the
 * bytes): fields in number order, singular strings left out when empty (proto3), the principal and
 * every resource always present, attributes in key order, every number a double (NaN and the
 * infinities too, as the SDK sent them). Where the SDK refused a value (undefined, a hole in an
 * array, a function, a bigint, a symbol) and where a string cannot be UTF-8 (a lone surrogate,
 * which UTF-8 encoders silently turn into U+FFFD), encoding throws UnencodableValue: the pool
 * fails the call as INVALID_ARGUMENT, which the batcher retries item by item, so only the item
 * that carries the value fails. Nothing is altered or dropped on the way to the PDP.
 *
 * The response decoder is as strict as authzen-codec.ts's: every read is bounds-checked, a
 * sub-message must end exactly where its length says, unknown fields are skipped, and anything
 * malformed throws (the channel then fails the call as INTERNAL). A result without its resource fails
 * the call too, as it did in the SDK. Only an explicit EFFECT_ALLOW allows an action.
 */
import type { AttrValue, Attributes, Principal, Resource } from "../model.js";
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
  UnencodableValue,
  VARINT,
  Writer,
} from "./protobuf-wire.js";

export interface ResourceEntry {
  readonly resource: Resource;
  readonly actions: readonly string[];
}

/** One CheckResources call: one principal, several resources, each with its actions. */
export interface ResourcesRequest {
  readonly principal: Principal;
  readonly entries: readonly ResourceEntry[];
  readonly token?: string;
}

export interface ResourceResult {
  readonly kind: string;
  readonly id: string;
  /** True only for an explicit EFFECT_ALLOW. */
  allowed(action: string): boolean;
}

export interface ResourcesResponse {
  readonly callId: string;
  /** In request order. */
  readonly results: readonly ResourceResult[];
}


export const CHECK_RESOURCES_METHOD = "/cerbos.svc.v1.CerbosService/CheckResources";
export const HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check";
/** HealthCheckResponse.ServingStatus.SERVING. */
export const SERVING = 1;
/** cerbos.effect.v1.Effect.EFFECT_ALLOW. */
const EFFECT_ALLOW = 1;

// Tags (field << 3 | wire type) of every field we write; all fit in one byte.
const REQ_PRINCIPAL = fieldTag(3, LEN); // CheckResourcesRequest.principal
const REQ_RESOURCES = fieldTag(4, LEN); // CheckResourcesRequest.resources
const REQ_AUX_DATA = fieldTag(5, LEN); // CheckResourcesRequest.aux_data
const ENTRY_ACTIONS = fieldTag(1, LEN); // ResourceEntry.actions
const ENTRY_RESOURCE = fieldTag(2, LEN); // ResourceEntry.resource
const AUX_JWT = fieldTag(1, LEN); // AuxData.jwt
const JWT_TOKEN = fieldTag(1, LEN); // AuxData.JWT.token
const PRINCIPAL_ID = fieldTag(1, LEN);
const PRINCIPAL_POLICY_VERSION = fieldTag(2, LEN);
const PRINCIPAL_ROLES = fieldTag(3, LEN);
const PRINCIPAL_ATTR = fieldTag(4, LEN);
const PRINCIPAL_SCOPE = fieldTag(5, LEN);
const RESOURCE_KIND = fieldTag(1, LEN);
const RESOURCE_POLICY_VERSION = fieldTag(2, LEN);
const RESOURCE_ID = fieldTag(3, LEN);
const RESOURCE_ATTR = fieldTag(4, LEN);
const RESOURCE_SCOPE = fieldTag(5, LEN);
const HEALTH_SERVICE = fieldTag(1, LEN); // HealthCheckRequest.service

function writeValue(w: Writer, v: AttrValue): void {
  if (v === null) w.tagAndByte(NULL_VALUE, 0);
  else if (typeof v === "string") w.string(STRING_VALUE, v);
  else if (typeof v === "number") w.double(NUMBER_VALUE, v);
  else if (typeof v === "boolean") w.tagAndByte(BOOL_VALUE, v ? 1 : 0);
  else if (Array.isArray(v)) {
    const list = w.begin(LIST_VALUE);
    const items = v as readonly AttrValue[];
    // An index loop: a hole reads as undefined and is refused below, as the SDK refused it.
    for (let i = 0; i < items.length; i++) {
      const item = w.begin(LIST_VALUES);
      writeValue(w, items[i]!);
      w.end(item);
    }
    w.end(list);
  } else if (typeof v === "object") {
    const struct = w.begin(STRUCT_VALUE);
    writeMap(w, STRUCT_FIELDS, v as Attributes);
    w.end(struct);
  } else {
    // undefined, a function, a bigint or a symbol: no google.protobuf.Value holds it.
    throw new UnencodableValue(`an attribute value of type ${typeof v}`);
  }
}

/** map<string, Value> as repeated entries { string key = 1; Value value = 2; }, in key order. */
function writeMap(w: Writer, t: number, attrs: Attributes): void {
  for (const key of Object.keys(attrs)) {
    const entry = w.begin(t);
    w.string(MAP_KEY, key);
    const value = w.begin(MAP_VALUE);
    writeValue(w, attrs[key]!);
    w.end(value);
    w.end(entry);
  }
}

/** Throws UnencodableValue for a value it cannot write as it is (see the header). */
export function encodeCheckResourcesRequest(req: ResourcesRequest): Buffer {
  // About what a usual resource takes; the buffer doubles when it is not enough. A fresh buffer
  // each call: the channel frames it after this returns.
  const w = new Writer(512 + req.entries.length * 192);

  const p = req.principal;
  const principal = w.begin(REQ_PRINCIPAL);
  w.optionalString(PRINCIPAL_ID, p.id);
  w.optionalString(PRINCIPAL_POLICY_VERSION, p.policyVersion);
  for (const role of p.roles) w.string(PRINCIPAL_ROLES, role);
  writeMap(w, PRINCIPAL_ATTR, p.attr);
  w.optionalString(PRINCIPAL_SCOPE, p.scope);
  w.end(principal);

  for (const { resource: r, actions } of req.entries) {
    const entry = w.begin(REQ_RESOURCES);
    for (const action of actions) w.string(ENTRY_ACTIONS, action);
    const resource = w.begin(ENTRY_RESOURCE);
    w.optionalString(RESOURCE_KIND, r.kind);
    w.optionalString(RESOURCE_POLICY_VERSION, r.policyVersion);
    w.optionalString(RESOURCE_ID, r.id);
    writeMap(w, RESOURCE_ATTR, r.attr);
    w.optionalString(RESOURCE_SCOPE, r.scope);
    w.end(resource);
    w.end(entry);
  }

  if (req.token) {
    const aux = w.begin(REQ_AUX_DATA);
    const jwt = w.begin(AUX_JWT);
    w.string(JWT_TOKEN, req.token);
    w.end(jwt);
    w.end(aux);
  }
  return w.finish();
}

/** A HealthCheckRequest for one service (the SDK asks for "cerbos.svc.v1.CerbosService"). */
export function encodeHealthCheckRequest(service: string): Buffer {
  const w = new Writer(service.length * 3 + 8);
  w.optionalString(HEALTH_SERVICE, service);
  return w.finish();
}


// Keys (tags) of the fields we read, as they arrive.
const RES_RESULTS = fieldTag(2, LEN); // CheckResourcesResponse.results
const RES_CALL_ID = fieldTag(3, LEN); // CheckResourcesResponse.cerbos_call_id
const RESULT_RESOURCE = fieldTag(1, LEN); // ResultEntry.resource
const RESULT_ACTIONS = fieldTag(2, LEN); // ResultEntry.actions (map entry)
const RESULT_RESOURCE_ID = fieldTag(1, LEN); // ResultEntry.Resource.id
const RESULT_RESOURCE_KIND = fieldTag(2, LEN); // ResultEntry.Resource.kind
const ACTION_KEY = fieldTag(1, LEN); // actions map entry key
const ACTION_EFFECT = fieldTag(2, VARINT); // actions map entry value (Effect)
const HEALTH_STATUS = fieldTag(1, VARINT); // HealthCheckResponse.status

/** One result: its resource and the actions the PDP allowed. */
class Result implements ResourceResult {
  kind = "";
  id = "";
  /** Actions with EFFECT_ALLOW; a later map entry for the same action replaces an earlier one. */
  readonly allowedActions: string[] = [];

  allowed(action: string): boolean {
    return this.allowedActions.includes(action);
  }
}

function readResult(r: Reader, end: number): Result {
  const result = new Result();
  let hasResource = false;
  while (r.pos < end) {
    const key = r.key();
    if (key === RESULT_RESOURCE) {
      // A message field may come more than once; its fields then merge, the last one winning.
      hasResource = true;
      const resourceEnd = r.lengthEnd(end);
      while (r.pos < resourceEnd) {
        const k = r.key();
        if (k === RESULT_RESOURCE_ID) result.id = r.string(resourceEnd);
        else if (k === RESULT_RESOURCE_KIND) result.kind = r.string(resourceEnd);
        else r.skip(k & 7);
      }
      if (r.pos !== resourceEnd) throw new Error("malformed result resource");
    } else if (key === RESULT_ACTIONS) {
      const entryEnd = r.lengthEnd(end);
      let action = "";
      let effect = 0;
      while (r.pos < entryEnd) {
        const k = r.key();
        if (k === ACTION_KEY) action = r.string(entryEnd);
        else if (k === ACTION_EFFECT) effect = r.varint();
        else r.skip(k & 7);
      }
      if (r.pos !== entryEnd) throw new Error("malformed actions entry");
      const allowed = result.allowedActions;
      const at = allowed.indexOf(action);
      if (effect === EFFECT_ALLOW) {
        if (at < 0) allowed.push(action);
      } else if (at >= 0) {
        allowed.splice(at, 1);
      }
    } else {
      r.skip(key & 7);
    }
  }
  // A field inside the result that ran past its end (the reads above only stop at the buffer's).
  if (r.pos !== end) throw new Error("malformed result");
  if (!hasResource) throw new Error("result without its resource");
  return result;
}

/** The results in the PDP's order (the caller matches them to the request by position). */
export function decodeCheckResourcesResponse(buf: Buffer): ResourcesResponse {
  const results: Result[] = [];
  let callId = "";
  const r = new Reader(buf);
  const end = buf.length;
  while (r.pos < end) {
    const key = r.key();
    if (key === RES_RESULTS) results.push(readResult(r, r.lengthEnd(end)));
    else if (key === RES_CALL_ID) callId = r.string(end);
    else r.skip(key & 7);
  }
  if (r.pos !== end) throw new Error("malformed response");
  return { callId, results };
}

/** The serving status (0 when absent: UNKNOWN). */
export function decodeHealthCheckResponse(buf: Buffer): number {
  let status = 0;
  const r = new Reader(buf);
  while (r.pos < buf.length) {
    const key = r.key();
    if (key === HEALTH_STATUS) status = r.varint();
    else r.skip(key & 7);
  }
  if (r.pos !== buf.length) throw new Error("malformed health response");
  return status;
}
