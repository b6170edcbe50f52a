/**
 * The domain types that travel through the pipeline:
 * forwarded request → identity (Principal) → mapping (Resource + action) → decision.
 * Nothing here knows about uWebSockets.js, gRPC or YAML.
 */

/** Attribute values passed to the PDP as they are (strings from templates, YAML scalars/lists). */
export type AttrValue = string | number | boolean | null | readonly AttrValue[] | { readonly [k: string]: AttrValue };
export type Attributes = Readonly<Record<string, AttrValue>>;

/** The original request, rebuilt from the gateway's X-Forwarded-* headers and canonicalised. */
export interface ForwardedRequest {
  /** Upper-case method token from X-Forwarded-Method. */
  readonly method: string;
  readonly scheme: "http" | "https";
  /** Lower-cased, one trailing dot and the scheme's default port removed. */
  readonly host: string;
  /** Canonical path (see src/http/canonical-path.ts); lower-cased when paths.caseInsensitive. */
  readonly path: string;
  /** Raw query string after "?", without the "?" ("" when none). Never used for path matching. */
  readonly rawQuery: string;
  /** Parsed query: name → value, or list of values when the name repeats. */
  readonly query: Readonly<Record<string, string | readonly string[]>>;
  /** Client address: the right-most X-Forwarded-For entry ("" when absent). */
  readonly ip: string;
  /** Every header of the auth request, lower-case name → value (repeats joined with ", "). */
  readonly headers: ReadonlyMap<string, string>;
}

export interface Principal {
  readonly id: string;
  /** In the order the identity source gave them. */
  readonly roles: readonly string[];
  readonly attr: Attributes;
  readonly scope?: string;
  readonly policyVersion?: string;
}

/** Who is calling, with the material templates may read ({claims.PATH}). */
export interface Identity {
  readonly principal: Principal;
  /** Verified JWT claims, when the identity came from a token. */
  readonly claims?: Readonly<Record<string, unknown>>;
  /** Epoch seconds after which nothing derived from this identity may be reused (token exp). */
  readonly expiresAt?: number;
  /** Raw token, set only when it must be forwarded to the PDP as auxData.jwt. */
  readonly forwardedToken?: string;
}

export interface Resource {
  readonly kind: string;
  readonly id: string;
  readonly attr: Attributes;
  readonly scope?: string;
  readonly policyVersion?: string;
}

/** One question for the PDP: may this principal do this action on this resource? */
export interface Check {
  readonly principal: Principal;
  readonly resource: Resource;
  readonly action: string;
  /** Forwarded to the PDP as auxData.jwt. */
  readonly token?: string;
}

/** What the PDP said. Anything but an explicit allow is a deny. */
export interface Decision {
  readonly allowed: boolean;
  /** Cerbos call id of the PDP call that decided, for the decision log. */
  readonly callId?: string;
  /** True when answered from the decision cache. */
  readonly cached?: boolean;
}

/** The outcome label of a request (metric label and log field). */
export type Outcome = "allow" | "deny" | "unauthenticated" | "bad_request" | "unavailable" | "shadow_deny";
