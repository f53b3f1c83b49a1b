import { isIPv6 } from "node:net";
import { Elysia } from "elysia";
import { InvalidRequestError, PermissionError } from "./errors";
import { requestTarget } from "./paths";

const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"];
// RFC 1123 labels (underscores too, as container names use them); dotted IPv4 fits the same shape.
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const PORT = /^[0-9]{1,5}$/;

/** A Host value split into its name (lower-cased; IPv6 keeps its brackets) and port. */
export interface ParsedHost {
  hostname: string;
  port: number | null;
}

function parsePort(s: string): number | null | undefined {
  if (s === "") return null;
  if (!s.startsWith(":") || !PORT.test(s.slice(1))) return undefined;
  const port = Number(s.slice(1));
  return port <= 65535 ? port : undefined;
}

// A trailing dot (the FQDN form, "localhost.") is valid syntax; it is still not "localhost".
function isDnsName(name: string): boolean {
  const bare = name.endsWith(".") ? name.slice(0, -1) : name;
  return bare.length > 0 && bare.length <= 253 && bare.split(".").every((label) => LABEL.test(label));
}

/**
 * Strict Host grammar: a DNS name, dotted IPv4 or bracketed IPv6, then an optional numeric port.
 * Null for anything else (`[::1]evil.example`, `localhost:evil.example`, `a@b`, lists, spaces).
 */
export function parseHost(raw: string): ParsedHost | null {
  const host = raw.toLowerCase();
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    const port = parsePort(host.slice(end + 1));
    if (end < 0 || port === undefined || !isIPv6(host.slice(1, end))) return null;
    return { hostname: host.slice(0, end + 1), port };
  }
  const colon = host.indexOf(":");
  const name = colon < 0 ? host : host.slice(0, colon);
  const port = parsePort(colon < 0 ? "" : host.slice(colon));
  return port === undefined || !isDnsName(name) ? null : { hostname: name, port };
}

/** A configured --allowed-hosts entry as parseHost would name it ("::1" becomes "[::1]"). */
function allowedName(entry: string): string {
  const e = entry.trim().toLowerCase();
  if (isIPv6(e)) return `[${e}]`;
  return parseHost(e)?.hostname ?? e;
}

/**
 * Host guard, on the one target every guard and the router share. DNS rebinding: a page on
 * evil.example that resolves to 127.0.0.1 still sends `Host: evil.example`, so only loopback
 * names and configured names are served (403); a malformed Host is a 400. With no Host at all
 * (HTTP/1.0) only /health answers: browsers always send one, so nothing can be rebound there.
 */
export function hostCheck(allowedHosts: readonly string[]) {
  const allowed = new Set([...LOOPBACK_NAMES, ...allowedHosts.map(allowedName)]);
  const allowAll = allowed.has("*");
  return new Elysia({ name: "pensieve.host-check" })
    .onRequest((ctx) => {
      const { path, host } = requestTarget(ctx);
      if (host === null) {
        if (path === "/health") return;
        throw new InvalidRequestError("missing Host header: only /health is served without one");
      }
      const parsed = parseHost(host);
      if (!parsed) throw new InvalidRequestError(`invalid Host header ${JSON.stringify(host.slice(0, 200))}`);
      if (!allowAll && !allowed.has(parsed.hostname))
        throw new PermissionError(`host "${parsed.hostname}" is not allowed; use localhost or 127.0.0.1`);
    })
    .as("scoped");
}

/**
 * CORS only for configured origins (none by default): allowed origins get the headers,
 * and their preflights a 204 before auth runs (browsers send no token on preflight).
 * `allowHeaders` answers preflights that do not list their headers (the API's own set).
 */
export function cors(origins: readonly string[], allowHeaders = "content-type, authorization") {
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
          request.headers.get("access-control-request-headers") ?? allowHeaders;
        set.headers["access-control-max-age"] = "600";
        return "";
      }
    })
    .as("scoped");
}
