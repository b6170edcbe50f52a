/**
 * One gRPC unary exchange on one HTTP/2 stream (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
 * the request goes out as one length-prefixed, uncompressed message; the answer is the response
 * message when `grpc-status` (in the trailers, or in the headers of a trailers-only response) is
 * 0, and a PdpUnavailable named for the status otherwise — for the HTTP status mapped as the spec
 * says when there is none, RESOURCE_EXHAUSTED past 4 MiB, DEADLINE_EXCEEDED past the call's time
 * (the stream is then cancelled with RST_STREAM CANCEL). A stream the server refused before it
 * answered (REFUSED_STREAM) rejects with NotProcessed: the channel may send that call again.
 */
import { constants, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2";
import { PdpUnavailable } from "../errors.js";

/** gRPC status names by code. */
const STATUS = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

export function unavailable(code: string, detail: string): PdpUnavailable {
  return new PdpUnavailable(`PDP call failed: ${code}${detail ? ` (${detail})` : ""}`, code);
}

/** The gRPC status for an HTTP status without grpc-status (PROTOCOL-HTTP2.md, "HTTP to gRPC Status Code Mapping"). */
function statusOfHttp(httpStatus: number): string {
  switch (httpStatus) {
    case 400:
      return "INTERNAL";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "UNIMPLEMENTED";
    case 429:
    case 502:
    case 503:
    case 504:
      return "UNAVAILABLE";
    default:
      return "UNKNOWN";
  }
}

/** Thrown inside a call when the server never processed it: it may be sent again. */
export class NotProcessed extends Error {}

/** The request as gRPC frames it: a compressed flag (0), the length, the message. */
export function framed(message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** Sends one framed request on `stream` and reads the reply: the response message, or a rejection. */
export function exchange(stream: ClientHttp2Stream, frame: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    let headers: IncomingHttpHeaders | undefined;
    let trailers: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    let bytes = 0;
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(error);
      if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
    };
    const timer = setTimeout(() => fail(unavailable("DEADLINE_EXCEEDED", "")), timeoutMs);
    stream.on("response", (h) => {
      headers = h;
    });
    stream.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > MAX_RESPONSE_BYTES + 5) fail(unavailable("RESOURCE_EXHAUSTED", "response too large"));
      else chunks.push(chunk);
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("error", () => {}); // the outcome is read in 'close'
    stream.on("close", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const outcome = outcomeOf(stream, headers, trailers, chunks, bytes);
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    });
    stream.end(frame);
  });
}

/** The message of a finished stream, or why there is none. */
function outcomeOf(stream: ClientHttp2Stream, headers: IncomingHttpHeaders | undefined, trailers: IncomingHttpHeaders | undefined, chunks: Buffer[], bytes: number): Buffer | Error {
  if (headers === undefined) {
    // Refused before the server looked at it (REFUSED_STREAM, e.g. above a GOAWAY's last stream id).
    if (stream.rstCode === constants.NGHTTP2_REFUSED_STREAM) return new NotProcessed();
    return unavailable("UNAVAILABLE", `stream closed without a response (code ${stream.rstCode ?? "none"})`);
  }
  // A trailers-only response carries its status in the headers.
  const statusHeader = trailers?.["grpc-status"] ?? headers["grpc-status"];
  const httpStatus = Number(headers[":status"]);
  if (statusHeader === undefined) {
    if (httpStatus !== 200) return unavailable(statusOfHttp(httpStatus), `HTTP ${httpStatus}`);
    return unavailable(stream.rstCode ? "UNAVAILABLE" : "INTERNAL", "no grpc-status");
  }
  const code = Number(statusHeader);
  if (code !== 0) {
    const name = STATUS[code] ?? "UNKNOWN";
    return unavailable(name, "");
  }
  if (!String(headers["content-type"] ?? "").startsWith("application/grpc")) return unavailable("UNKNOWN", "not a gRPC response");
  const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);
  if (body.length < 5) return unavailable("INTERNAL", "no response message");
  if (body[0] !== 0) return unavailable("INTERNAL", "compressed response");
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) return unavailable("INTERNAL", "malformed response framing");
  return body.subarray(5);
}
