import { Elysia } from "elysia";
import { PermissionError } from "../anthropic/errors";

const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]", "::1"];

/** Host header (or URL host) without the port, lower-cased; IPv6 keeps its brackets. */
export function hostnameOf(request: Request): string {
  let host = request.headers.get("host");
  // An empty Host header stays empty (and is refused); only a missing one falls back to the URL.
  if (host === null) {
    // Requests built in process (app.handle) carry no Host header; the URL has the same name.
    const url = request.url;
    const start = url.indexOf("://") + 3;
    const end = url.indexOf("/", start);
    host = url.slice(start, end < 0 ? undefined : end);
  }
  host = host.trim().toLowerCase();
  if (host.startsWith("[")) return host.slice(0, host.indexOf("]") + 1);
  const colon = host.indexOf(":");
  return colon < 0 ? host : host.slice(0, colon);
}

/**
 * DNS-rebinding guard: a page on evil.example that resolves to 127.0.0.1 still sends
 * `Host: evil.example`, so only loopback names and configured names are served.
 */
export function hostCheck(allowedHosts: readonly string[]) {
  const allowed = new Set([...LOOPBACK_NAMES, ...allowedHosts.map((h) => h.trim().toLowerCase())]);
  const allowAll = allowed.has("*");
  return new Elysia({ name: "pensieve.host-check" })
    .onRequest(({ request }) => {
      if (allowAll) return;
      const host = hostnameOf(request);
      if (!allowed.has(host)) throw new PermissionError(`host "${host}" is not allowed; use localhost or 127.0.0.1`);
    })
    .as("global");
}

/**
 * CORS only for configured origins (none by default): allowed origins get the headers,
 * and their preflights a 204 before auth runs (browsers send no token on preflight).
 */
export function cors(origins: readonly string[]) {
  const allowed = new Set(origins);
  const plugin = new Elysia({ name: "pensieve.cors" });
  if (allowed.size === 0) return plugin;
  return plugin
    .onRequest(({ request, set }) => {
      const origin = request.headers.get("origin");
      if (!origin || !(allowed.has(origin) || allowed.has("*"))) return;
      set.headers["access-control-allow-origin"] = origin;
      set.headers["vary"] = "Origin";
      set.headers["access-control-expose-headers"] = "request-id, retry-after, x-should-retry, x-memory-status, x-available-memory-gb";
      if (request.method === "OPTIONS") {
        set.status = 204;
        set.headers["access-control-allow-methods"] = "GET, HEAD, POST, OPTIONS";
        set.headers["access-control-allow-headers"] =
          request.headers.get("access-control-request-headers") ?? "content-type, x-api-key, authorization, anthropic-version, anthropic-beta";
        set.headers["access-control-max-age"] = "600";
        return "";
      }
    })
    .as("global");
}
