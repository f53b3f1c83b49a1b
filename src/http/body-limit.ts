import { Elysia } from "elysia";
import { InvalidRequestError, RequestTooLargeError } from "./errors";

/** Reads a body stream, refusing past `maxBytes` (chunked bodies have no content-length). */
export async function readLimited(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new RequestTooLargeError(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Deeper JSON is refused: validators and error formatters recurse, and 100k levels overflow them.
 * A safety bound of the parser, not a tunable (no real request nests this deep).
 */
export const MAX_JSON_DEPTH = 256;

/** Nesting depth of a parsed JSON value, walked iteratively; stops once past `limit`. */
export function jsonDepth(value: unknown, limit = MAX_JSON_DEPTH): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [v, d] = top;
    if (v === null || typeof v !== "object") continue;
    if (d > max) max = d;
    if (max > limit) return max;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === "object") stack.push([child, d + 1]);
  }
  return max;
}

/** Parses a JSON body within the limit; malformed UTF-8 or JSON is a 400. */
export async function parseJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  const bytes = await readLimited(request, maxBytes);
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new InvalidRequestError("Invalid request body: not valid UTF-8");
  }
  if (!text.trim()) throw new InvalidRequestError("Invalid request body: empty body; send a JSON object");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // A parser stack overflow (RangeError) ends here too, as a 400 rather than a crash.
    const why = err instanceof SyntaxError ? err.message : "nesting too deep";
    throw new InvalidRequestError(`Invalid request body: malformed JSON (${why})`);
  }
  if (jsonDepth(value) > MAX_JSON_DEPTH)
    throw new InvalidRequestError(`Invalid request body: JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
  return value;
}

/**
 * 413 over `maxBytes`: by content-length before anything is read, and while reading JSON
 * bodies. Bun's own server limit (maxRequestBodySize) must be set a little above this.
 */
export function bodyLimit(maxBytes: number) {
  return new Elysia({ name: "pensieve.body-limit" })
    .onRequest(({ request }) => {
      const len = request.headers.get("content-length");
      if (len !== null && Number(len) > maxBytes) throw new RequestTooLargeError(maxBytes);
    })
    .onParse(async ({ request, contentType }) => {
      const type = contentType.toLowerCase();
      if (type.startsWith("application/json") || type.endsWith("+json")) return parseJsonBody(request, maxBytes);
      // The API is JSON only; say so instead of failing validation on a string body.
      if (request.method === "POST" && request.body)
        throw new InvalidRequestError(`Invalid content-type "${contentType || "(none)"}": send application/json`);
    })
    .as("scoped");
}
