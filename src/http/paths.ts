import { InvalidRequestError } from "./errors";

/** What every guard and the router agree a request is for. */
export interface RequestTarget {
  /** The path the router matches, without the query. */
  path: string;
  /** The Host as sent (or the URL's authority for in-process requests); null when there is none. */
  host: string | null;
}

const targets = new WeakMap<Request, RequestTarget>();

/** Routes that need no token: health, Claude Code's probe, and the docs. */
export function isOpenPath(path: string): boolean {
  return (
    path === "/health" ||
    path === "/api/hello" ||
    path === "/swagger" ||
    path.startsWith("/swagger/") ||
    path.startsWith("/swagger.")
  );
}

const badTarget = (url: string) =>
  new InvalidRequestError(`request target ${JSON.stringify(url.slice(0, 200))} is not understood; send origin-form, e.g. /v1/messages`);

/** Path of a relative URL: everything before the query or fragment. */
function relativePath(url: string): string {
  const end = url.search(/[?#]/);
  return end < 0 ? url : url.slice(0, end);
}

/** The raw authority of an absolute URL ("host:port"), as it is written in it. */
function authorityOf(url: string, protocol: string): string {
  const rest = url.slice(protocol.length + 2);
  const end = rest.search(/[/?#\\]/);
  return end < 0 ? rest : rest.slice(0, end);
}

/** An absolute URL whose path, parsed strictly, is the router's; null when anything is off. */
function strictPath(url: string): { path: string; authority: string } | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  const webScheme = parsed.protocol === "http:" || parsed.protocol === "https:";
  if (!webScheme || parsed.username || parsed.password || !url.startsWith(`${parsed.protocol}//`)) return null;
  return { path: parsed.pathname, authority: authorityOf(url, parsed.protocol) };
}

/**
 * The target of a request, from its URL, its Host header and the path the router read from the
 * same URL. Throws 400 unless a strict URL parse finds exactly the path the router will match.
 * Bun builds a relative URL (the raw request target) when the Host is missing or unusable.
 */
export function parseTarget(url: string, hostHeader: string | null, routerPath: unknown): RequestTarget {
  if (typeof routerPath !== "string") throw badTarget(url);
  if (url.startsWith("/")) {
    if (relativePath(url) !== routerPath) throw badTarget(url);
    return { path: routerPath, host: hostHeader };
  }
  const strict = strictPath(url);
  if (!strict || strict.path !== routerPath) throw badTarget(url);
  // In-process requests (app.handle) carry no Host header; their URL names the host.
  return { path: routerPath, host: hostHeader ?? strict.authority };
}

/**
 * The request's target, parsed once: the first guard to ask parses it, later ones reuse it.
 * `ctx.path` is what Elysia's router matches (computed from request.url before any hook runs).
 */
export function requestTarget(ctx: { request: Request }): RequestTarget {
  const known = targets.get(ctx.request);
  if (known) return known;
  const { request } = ctx;
  const target = parseTarget(request.url, request.headers.get("host"), (ctx as { path?: unknown }).path);
  targets.set(request, target);
  return target;
}

