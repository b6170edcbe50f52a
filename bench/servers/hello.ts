/**
 * `hello`: a bare uWebSockets.js server that answers 200 with an empty body to every request —
 * the ceiling of the HTTP layer on this machine. Same uWS build and loader as the service.
 *
 *   node dist/bench/servers/hello.js     → prints {"msg":"hello listening","port":N} on stdout
 */
import { listen, loadUws } from "../../src/http/uws.js";

const uws = loadUws();
const app = uws.App();
app.any("/*", (res) => {
  res.end();
});
const { socket, port } = await listen(app, "127.0.0.1:0");
process.stdout.write(`${JSON.stringify({ msg: "hello listening", port })}\n`);

const stop = () => {
  uws.us_listen_socket_close(socket);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
