/**
 * Real nginx (Debian package, 1.22, auth_request) running examples/nginx/nginx.conf in front of
 * the built service, a real Cerbos PDP with the quickstart policies, and a recording backend, all
 * on loopback. nginx answers 401 and 403 with its own pages (keeping WWW-Authenticate) and turns
 * every other non-2xx answer of the service (400, 503) into 500.
 */
import { gatewayCases } from "./support/gateway-cases.js";
import { startNginx } from "./support/gateways.js";

gatewayCases({
  name: "nginx",
  start: (targets) => startNginx(targets),
  badRequestStatus: 500,
  unavailableStatus: 500,
  relaysServiceBody: false,
});
