/**
 * The identity headers set on every allow (`response.headers`), compiled once. Every configured
 * header is always sent, empty if its template renders nothing: Caddy 2.6 forwards a literal
 * placeholder for a copied header that the auth response lacks.
 */
import { parseTemplate, type TemplateContext } from "../mapping/template.js";

export type ResponseHeaders = (ctx: TemplateContext) => ReadonlyArray<readonly [string, string]>;

const NONE: ReadonlyArray<readonly [string, string]> = Object.freeze([]);

export function compileResponseHeaders(spec: Readonly<Record<string, string>>): ResponseHeaders {
  const compiled = Object.entries(spec).map(([name, src]) => {
    const parsed = parseTemplate(src);
    if (!parsed.ok) throw new Error(`response.headers.${name}: ${parsed.error}`); // the schema already refused it
    return [name, parsed.render] as const;
  });
  if (compiled.length === 0) return () => NONE;
  return (ctx) => compiled.map(([name, render]) => [name, safeHeaderValue(render(ctx))] as const);
}

const HEX = "0123456789ABCDEF";

/**
 * Makes a value safe for an HTTP header: control characters, DEL, "%" and non-ASCII are
 * percent-encoded as UTF-8, so a claim or header value can never inject a header line and the
 * upstream can decode the exact original. Plain printable ASCII is returned unchanged.
 */
export function safeHeaderValue(value: string): string {
  let plain = true;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return value;
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    if (byte < 0x20 || byte > 0x7e || byte === 0x25) out += "%" + HEX[byte >> 4] + HEX[byte & 15];
    else out += String.fromCharCode(byte);
  }
  return out;
}
