/**
 * `naive`: what one writes first — node:http, one @cerbos/grpc client, one CheckResources call
 * per request, no cache, no batching. It takes method, host, scheme, URI, client address and user
 * from the ForwardAuth headers without validating them, and asks the PDP the same question the
 * service's generic mapping asks (SPEC §5.4: kind "route", id = path, attr { method, host, path,
 * scheme, ip, query }), so the two differ in machinery only, not in what the PDP evaluates.
 * Answers 200 (allowed), 403 (denied), 401 (no user) or 503 (PDP call failed).
 *
 *   node dist/bench/servers/naive.js unix:/path/grpc.sock   → prints {"msg":"naive listening","port":N}
 */
import { createServer } from "node:http";
import { GRPC } from "@cerbos/grpc";

const target = process.argv[2];
if (!target) {
  process.stderr.write("usage: naive.js GRPC_TARGET\n");
  process.exit(2);
}
const cerbos = new GRPC(target, { tls: false });

const header = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value[0] : value);

const server = createServer((req, res) => {
  const method = header(req.headers["x-forwarded-method"]) ?? "GET";
  const uri = header(req.headers["x-forwarded-uri"]) ?? "/";
  const user = header(req.headers["remote-user"]);
  const roles = (header(req.headers["remote-groups"]) ?? "").split(",").map((r) => r.trim()).filter(Boolean);
  if (!user || roles.length === 0) {
    res.writeHead(401).end();
    return;
  }
  const host = header(req.headers["x-forwarded-host"]) ?? "";
  const scheme = header(req.headers["x-forwarded-proto"]) ?? "http";
  const ip = (header(req.headers["x-forwarded-for"]) ?? "").split(",").pop()!.trim();
  const q = uri.indexOf("?");
  const path = q === -1 ? uri : uri.slice(0, q);
  const query = Object.fromEntries(new URLSearchParams(q === -1 ? "" : uri.slice(q + 1)));
  cerbos
    .checkResources({
      principal: { id: user, roles },
      resources: [{ resource: { kind: "route", id: path, attr: { method, host, path, scheme, ip, query } }, actions: [method] }],
    })
    .then(
      (response) => res.writeHead(response.results[0]?.isAllowed(method) === true ? 200 : 403).end(),
      () => res.writeHead(503).end(),
    );
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ msg: "naive listening", port })}\n`);
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  cerbos.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
