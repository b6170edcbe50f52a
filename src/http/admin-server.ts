/**
 * The admin listener (SPEC §7): liveness, readiness, and the endpoints later features add.
 */
import { listen, loadUws, type HttpResponse, type us_listen_socket } from "./uws.js";

export interface AdminHandlers {
  /** True when the config is loaded, the PDP answers its health check and we are not shutting down. */
  ready(): boolean;
  /** Prometheus exposition text and its content type, when metrics are enabled. */
  metrics?(): Promise<{ contentType: string; body: string }>;
  /** Empties the decision cache. */
  purgeCache?(): void;
}

export interface AdminServer {
  readonly port: number;
  close(): void;
}

function plain(res: HttpResponse, status: string, body: string): void {
  res.writeStatus(status).writeHeader("Cache-Control", "no-store").writeHeader("Content-Type", "text/plain").end(body);
}

export async function startAdminServer(opts: { listen: string; handlers: AdminHandlers }): Promise<AdminServer> {
  const uws = loadUws();
  const app = uws.App();
  const { handlers } = opts;

  app.get("/healthz", (res) => plain(res, "200 OK", "ok\n"));
  app.get("/readyz", (res) => (handlers.ready() ? plain(res, "200 OK", "ready\n") : plain(res, "503 Service Unavailable", "not ready\n")));
  if (handlers.metrics) {
    const metrics = handlers.metrics.bind(handlers);
    app.get("/metrics", (res) => {
      let aborted = false;
      res.onAborted(() => (aborted = true));
      metrics().then(
        ({ contentType, body }) => {
          if (!aborted) res.cork(() => res.writeStatus("200 OK").writeHeader("Content-Type", contentType).end(body));
        },
        () => {
          if (!aborted) res.cork(() => plain(res, "500 Internal Server Error", "metrics unavailable\n"));
        },
      );
    });
  }
  if (handlers.purgeCache) {
    const purge = handlers.purgeCache.bind(handlers);
    app.post("/cache/purge", (res) => {
      purge();
      res.writeStatus("204 No Content").writeHeader("Cache-Control", "no-store").endWithoutBody();
    });
  }
  app.any("/*", (res) => plain(res, "404 Not Found", "not found\n"));

  const bound = await listen(app, opts.listen);
  let socket: us_listen_socket | undefined = bound.socket;
  return {
    port: bound.port,
    close() {
      if (socket) uws.us_listen_socket_close(socket);
      socket = undefined;
    },
  };
}
