/**
 * Packing checks of many principals into AuthZEN AccessEvaluationBatch calls, within what the
 * Cerbos PDP can take. The PDP groups a batch's evaluations by subject id, then by resource type
 * and id, and evaluates each group with the FIRST evaluation's subject and resource. So one call
 * must never hold:
 * - two different principals with the same id, nor
 * - two different resources with the same kind and id under one subject id;
 * and its limits hold: evaluations ≤ maxResourcesPerRequest × maxActionsPerResource, per subject
 * ≤ maxResourcesPerRequest resources, per resource ≤ maxActionsPerResource actions.
 */
import type { Principal, Resource } from "../model.js";
import type { Evaluation } from "./authzen-codec.js";

export interface Unit<W> {
  /** principalKey() of the principal: equal keys are the same principal. */
  readonly principalKey: string;
  readonly principal: Principal;
  /** resourceKey() of the resource: equal keys are the same resource. */
  readonly resourceKey: string;
  readonly resource: Resource;
  /** Actions on this resource, each with its waiters; at most maxActionsPerResource. */
  readonly actions: ReadonlyArray<readonly [action: string, waiters: W]>;
}

export interface PackedCall<W> {
  readonly evaluations: Evaluation[];
  /** Waiters of each evaluation, by position. */
  readonly waiters: W[];
  /** The unit each evaluation came from, by position (for a retry over CheckResources). */
  readonly units: Unit<W>[];
}

export interface Limits {
  readonly maxResourcesPerRequest: number;
  readonly maxActionsPerResource: number;
}

interface OpenCall<W> extends PackedCall<W> {
  /** subject id → the principal it stands for here and its resources (kind+id → resourceKey). */
  readonly subjects: Map<string, { principalKey: string; resources: Map<string, string> }>;
}

/** True when a check can travel as an AuthZEN evaluation with the same meaning as in CheckResources. */
export function authzenCompatible(principal: Principal, resource: Resource): boolean {
  if (principal.roles.length === 0 || principal.roles.some((r) => r === "")) return false; // the PDP would use the subject type as the role
  for (const k in principal.attr) if (k.startsWith("cerbos.")) return false;
  for (const k in resource.attr) if (k.startsWith("cerbos.")) return false;
  return principal.id !== "" && resource.kind !== "" && resource.id !== "";
}

export function toEvaluation(principal: Principal, resource: Resource, action: string): Evaluation {
  return { subject: toSubject(principal), resource: toAuthzenResource(resource), action };
}

function toSubject(principal: Principal): Evaluation["subject"] {
  const subjectProps: Record<string, unknown> = { ...principal.attr, "cerbos.roles": principal.roles };
  if (principal.scope) subjectProps["cerbos.scope"] = principal.scope;
  if (principal.policyVersion) subjectProps["cerbos.policyVersion"] = principal.policyVersion;
  return { type: "principal", id: principal.id, properties: subjectProps as Evaluation["subject"]["properties"] };
}

function toAuthzenResource(resource: Resource): Evaluation["resource"] {
  let resourceProps = resource.attr;
  if (resource.scope || resource.policyVersion) {
    resourceProps = {
      ...resource.attr,
      ...(resource.scope ? { "cerbos.scope": resource.scope } : {}),
      ...(resource.policyVersion ? { "cerbos.policyVersion": resource.policyVersion } : {}),
    };
  }
  return { type: resource.kind, id: resource.id, properties: resourceProps };
}

/**
 * First-fit packing of units into calls that respect the PDP's grouping and limits. The
 * evaluations of one principal object share one subject object, and those of one unit one
 * resource object: less to build, and encodeBatchRequest encodes each shared object only once.
 */
export function packUnits<W>(units: Iterable<Unit<W>>, limits: Limits): PackedCall<W>[] {
  const maxEvaluations = limits.maxResourcesPerRequest * limits.maxActionsPerResource;
  const calls: OpenCall<W>[] = [];
  const subjects = new Map<Principal, Evaluation["subject"]>();
  for (const unit of units) {
    const target = calls.find((c) => fits(c, unit, maxEvaluations, limits)) ?? open(calls);
    let subject = target.subjects.get(unit.principal.id);
    if (!subject) {
      subject = { principalKey: unit.principalKey, resources: new Map() };
      target.subjects.set(unit.principal.id, subject);
    }
    subject.resources.set(kindAndId(unit.resource), unit.resourceKey);
    let authzenSubject = subjects.get(unit.principal);
    if (!authzenSubject) subjects.set(unit.principal, (authzenSubject = toSubject(unit.principal)));
    const resource = toAuthzenResource(unit.resource);
    for (const [action, waiters] of unit.actions) {
      target.evaluations.push({ subject: authzenSubject, resource, action });
      target.waiters.push(waiters);
      target.units.push(unit);
    }
  }
  return calls;
}

function open<W>(calls: OpenCall<W>[]): OpenCall<W> {
  const call: OpenCall<W> = { evaluations: [], waiters: [], units: [], subjects: new Map() };
  calls.push(call);
  return call;
}

function kindAndId(r: Resource): string {
  return `${r.kind.length}:${r.kind}${r.id}`;
}

function fits<W>(call: OpenCall<W>, unit: Unit<W>, maxEvaluations: number, limits: Limits): boolean {
  if (call.evaluations.length + unit.actions.length > maxEvaluations) return false;
  const subject = call.subjects.get(unit.principal.id);
  if (!subject) return true;
  if (subject.principalKey !== unit.principalKey) return false; // another principal with this id
  if (subject.resources.has(kindAndId(unit.resource))) return false; // same kind+id already under this subject
  return subject.resources.size < limits.maxResourcesPerRequest;
}
