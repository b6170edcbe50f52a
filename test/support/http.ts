/**
 * A raw HTTP/1.1 client for tests: sends exactly the header lines given (duplicates, odd
 * spellings, any bytes) on a fresh connection and reads the whole response.
 */
import { connect } from "node:net";

export interface RawResponse {
  status: number;
  /** Lower-case name → values in order. */
  headers: Map<string, string[]>;
  body: string;
  header(name: string): string | undefined;
}

export type HeaderLines = ReadonlyArray<readonly [string, string]>;

export function rawRequest(
  port: number,
  opts: { method?: string; path?: string; headers?: HeaderLines; host?: string; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const lines = [`${opts.method ?? "GET"} ${opts.path ?? "/"} HTTP/1.1`, `Host: ${opts.host ?? "auth.local"}`, "Connection: close"];
  for (const [name, value] of opts.headers ?? []) lines.push(`${name}: ${value}`);
  const payload = Buffer.from(lines.join("\r\n") + "\r\n\r\n", "latin1");
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    // Write without half-closing: uWebSockets.js treats a FIN from the client as an abort.
    const socket = connect(port, "127.0.0.1", () => socket.write(payload));
    socket.setTimeout(opts.timeoutMs ?? 10_000, () => socket.destroy(new Error("response timeout")));
    const finish = () => {
      if (chunks.length === 0) {
        // Closed without a byte: status 0 (uWebSockets.js does this for requests it cannot parse).
        resolve({ status: 0, headers: new Map(), body: "", header: () => undefined });
        return;
      }
      try {
        resolve(parseResponse(Buffer.concat(chunks).toString("latin1")));
      } catch (error) {
        reject(error);
      }
    };
    socket.on("data", (c) => {
      chunks.push(c);
      if (isComplete(Buffer.concat(chunks).toString("latin1"), opts.method === "HEAD")) {
        socket.destroy();
        finish();
      }
    });
    socket.on("error", reject);
    socket.on("close", finish);
  });
}

/** True once the head and a Content-Length body (or a final chunk) have arrived. */
function isComplete(text: string, head: boolean): boolean {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return false;
  if (head) return true;
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, end + 2));
  if (m) return text.length - (end + 4) >= Number(m[1]);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(text.slice(0, end + 2))) return text.endsWith("\r\n0\r\n\r\n");
  return false;
}

export function parseResponse(text: string): RawResponse {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`incomplete response: ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine, ...headerLines] = text.slice(0, end).split("\r\n");
  const status = Number(statusLine!.split(" ")[1]);
  const headers = new Map<string, string[]>();
  for (const line of headerLines) {
    const i = line.indexOf(":");
    const name = line.slice(0, i).trim().toLowerCase();
    const list = headers.get(name) ?? [];
    list.push(line.slice(i + 1).trim());
    headers.set(name, list);
  }
  let body = text.slice(end + 4);
  if (headers.get("transfer-encoding")?.[0] === "chunked") body = dechunk(body);
  return { status, headers, body, header: (n) => headers.get(n.toLowerCase())?.[0] };
}

function dechunk(body: string): string {
  let out = "";
  let i = 0;
  for (;;) {
    const lineEnd = body.indexOf("\r\n", i);
    const size = parseInt(body.slice(i, lineEnd), 16);
    if (!size) return out;
    out += body.slice(lineEnd + 2, lineEnd + 2 + size);
    i = lineEnd + 2 + size + 2;
  }
}

/** The X-Forwarded-* set a gateway sends for `METHOD host uri`. */
export function forwarded(method: string, uri: string, host = "app.example.com", extra: HeaderLines = []): HeaderLines {
  return [
    ["X-Forwarded-Method", method],
    ["X-Forwarded-Proto", "http"],
    ["X-Forwarded-Host", host],
    ["X-Forwarded-Uri", uri],
    ["X-Forwarded-For", "203.0.113.7"],
    ...extra,
  ];
}
