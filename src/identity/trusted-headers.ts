/**
 * Identity set by an authentication layer in front of the gateway (oauth2-proxy, Authelia …):
 * `Remote-User` style headers. Only safe when the gateway strips client-sent copies.
 */
import type { Config } from "../config/schema.js";
import { Refusal } from "../errors.js";
import type { ForwardedRequest, Identity } from "../model.js";

type TrustedHeadersConfig = NonNullable<Config["identity"]["trustedHeaders"]>;

/** Returns the identity, or undefined when the id header is absent or empty (next source applies). */
export function trustedHeadersSource(cfg: TrustedHeadersConfig): (req: ForwardedRequest) => Identity | undefined {
  const idName = cfg.id.toLowerCase();
  const rolesName = cfg.roles?.toLowerCase();
  const attrNames = Object.entries(cfg.attr).map(([attr, header]) => [attr, header.toLowerCase()] as const);
  return (req) => {
    const id = req.headers[idName]?.trim();
    if (!id) return undefined;
    // Repeated header lines arrive joined with ", ": two identities are not one.
    if (id.includes(",")) throw new Refusal("bad_request", `trusted header ${cfg.id} holds more than one value`);
    const roles = rolesName ? splitRoles(req.headers[rolesName]) : [];
    if (roles.length === 0) throw new Refusal("unauthenticated", `trusted identity without roles`);
    const attr: Record<string, string> = {};
    for (const [name, header] of attrNames) {
      const v = req.headers[header];
      if (v !== undefined && v !== "") attr[name] = v;
    }
    return { principal: { id, roles, attr } };
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
