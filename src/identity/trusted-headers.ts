/**
 * Identity set by an authentication layer in front of the gateway (oauth2-proxy, Authelia …):
 * `Remote-User` style headers. Only safe when the gateway strips client-sent copies.
 */
import { freezePrincipal } from "../canonical-keys.js";
import type { Config } from "../config/schema.js";
import { Refusal } from "../errors.js";
import type { ForwardedRequest, Identity } from "../model.js";

type TrustedHeadersConfig = NonNullable<Config["identity"]["trustedHeaders"]>;

/** Identities remembered per distinct set of header values (then forgotten all at once). */
const MAX_REMEMBERED = 10_000;

/**
 * Returns the identity, or undefined when the id header is absent or empty (next source applies).
 * The same header values give the same frozen Identity object, so what is derived from it (the
 * principal's cache key) is computed once per caller, not once per request.
 */
export function trustedHeadersSource(cfg: TrustedHeadersConfig): (req: ForwardedRequest) => Identity | undefined {
  const idName = cfg.id.toLowerCase();
  const rolesName = cfg.roles?.toLowerCase();
  const attrNames = Object.entries(cfg.attr).map(([attr, header]) => [attr, header.toLowerCase()] as const);
  const remembered = new Map<string, Identity>();
  return (req) => {
    const rawId = req.headers.get(idName);
    if (rawId === undefined) return undefined;
    const rawRoles = rolesName ? req.headers.get(rolesName) : undefined;
    // Length-prefixed, so no value can borrow characters from its neighbour.
    let key = `${rawId.length}:${rawId}${rawRoles === undefined ? "-" : `${rawRoles.length}:${rawRoles}`}`;
    for (const [, header] of attrNames) {
      const v = req.headers.get(header);
      key += v === undefined ? "-" : `${v.length}:${v}`;
    }
    const known = remembered.get(key);
    if (known !== undefined) return known;

    const id = rawId.trim();
    if (!id) return undefined;
    // Repeated header lines arrive joined with ", ": two identities are not one.
    if (id.includes(",")) throw new Refusal("bad_request", `trusted header ${cfg.id} holds more than one value`);
    const roles = splitRoles(rawRoles);
    if (roles.length === 0) throw new Refusal("unauthenticated", `trusted identity without roles`);
    const attr: Record<string, string> = {};
    for (const [name, header] of attrNames) {
      const v = req.headers.get(header);
      if (v !== undefined && v !== "") attr[name] = v;
    }
    const identity: Identity = Object.freeze({ principal: freezePrincipal({ id, roles, attr }) });
    if (remembered.size >= MAX_REMEMBERED) remembered.clear();
    remembered.set(key, identity);
    return identity;
  };
}

/** Comma-separated roles, trimmed, empties dropped, order kept. */
export function splitRoles(value: string | undefined): string[] {
  if (!value) return [];
  const roles: string[] = [];
  for (const part of value.split(",")) {
    const role = part.trim();
    if (role) roles.push(role);
  }
  return roles;
}
