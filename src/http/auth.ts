import { createHash, timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import { AuthenticationError } from "./errors";
import { isOpenPath, requestTarget } from "./paths";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time token check: compares SHA-256 digests, which always have equal length. */
export function tokenMatches(presented: string, expected: Buffer): boolean {
  return timingSafeEqual(digest(presented), expected);
}

/** The token a client presented: `x-api-key`, else `Authorization: Bearer ...`. */
export function presentedToken(headers: Headers): string | null {
  const key = headers.get("x-api-key");
  if (key !== null) return key.trim();
  const auth = headers.get("authorization");
  const m = auth ? /^Bearer\s+(.+)$/i.exec(auth.trim()) : null;
  return m?.[1] ? m[1].trim() : null;
}

/**
 * Whether a request's headers carry the token (same rules as the gate); always true when the
 * token is null. /health uses it to decide how much it shows.
 */
export function tokenCheck(token: string | null): (headers: Headers) => boolean {
  if (token === null) return () => true;
  const expected = digest(token);
  return (headers) => {
    const presented = presentedToken(headers);
    return presented !== null && tokenMatches(presented, expected);
  };
}

/**
 * Token gate on every route except /health, /api/hello and /swagger*. Runs on request,
 * before the body is read, on the path the router will match. A null token disables auth.
 */
export function auth(token: string | null) {
  const expected = token === null ? null : digest(token);
  return new Elysia({ name: "pensieve.auth" })
    .onRequest((ctx) => {
      if (expected === null || isOpenPath(requestTarget(ctx).path)) return;
      const presented = presentedToken(ctx.request.headers);
      if (presented === null)
        throw new AuthenticationError("missing API key: send it in the x-api-key header or as Authorization: Bearer");
      if (!tokenMatches(presented, expected)) throw new AuthenticationError("invalid x-api-key");
    })
    .as("scoped");
}
