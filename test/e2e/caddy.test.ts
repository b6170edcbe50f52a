/**
 * Real Caddy (Debian package, 2.6) running examples/caddy/Caddyfile in front of the built service,
 * a real Cerbos PDP with the quickstart policies, and a recording backend, all on loopback.
 * Caddy relays the service's refusals as they are: status, headers and JSON body.
 */
import { gatewayCases } from "./support/gateway-cases.js";
import { startCaddy } from "./support/gateways.js";

gatewayCases({
  name: "Caddy",
  start: (targets) => startCaddy(targets),
  badRequestStatus: 400,
  unavailableStatus: 503,
  relaysServiceBody: true,
});
