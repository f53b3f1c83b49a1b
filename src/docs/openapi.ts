// Builds the OpenAPI document from the app's routes with @elysiajs/swagger's own path
// mapping; its plugin is not mounted because its page hard-codes a CDN <script>.
import { filterPaths, registerSchemaPath } from "@elysiajs/swagger/utils";
import type { HTTPMethod, InternalRoute } from "elysia";

type Hooks = Record<string, unknown>;

const METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "TRACE"] as const;
const SCHEMA_KEYS = ["body", "headers", "query", "params", "response"] as const;

/** The document's `info` block. */
export interface DocsInfo {
  title: string;
  version: string;
  description?: string;
}

function isObjectSchema(value: unknown): value is { type: "object"; properties: Record<string, unknown>; required?: string[] } {
  return typeof value === "object" && value !== null && (value as { type?: unknown }).type === "object"
    && typeof (value as { properties?: unknown }).properties === "object";
}

// Elysia 1.4 keeps schemas declared by `guard()` in `standaloneValidator`, which
// @elysiajs/swagger 1.3 does not read; fold them into the route's own hooks.
function withGuardSchemas(hooks: Hooks | undefined): Hooks {
  const merged: Hooks = { ...hooks };
  const guards = Array.isArray(hooks?.standaloneValidator) ? (hooks.standaloneValidator as Hooks[]) : [];
  for (const guard of guards) {
    for (const key of SCHEMA_KEYS) {
      const extra = guard[key];
      if (extra === undefined) continue;
      const own = merged[key];
      if (own === undefined) merged[key] = extra;
      else if (isObjectSchema(own) && isObjectSchema(extra)) {
        merged[key] = {
          ...own,
          properties: { ...extra.properties, ...own.properties },
          required: [...new Set([...(extra.required ?? []), ...(own.required ?? [])])],
        };
      }
    }
  }
  delete merged.standaloneValidator;
  // Without a named parser the library lists json, form-data and text for every body;
  // Pensieve's bodies are JSON.
  const parse = Array.isArray(merged.parse) ? merged.parse : merged.parse === undefined ? [] : [merged.parse];
  const named = parse.filter((p) => typeof p === "string" || typeof (p as { fn?: unknown })?.fn === "string");
  merged.parse = named.length > 0 ? named : ["application/json"];
  return merged;
}

/** The OpenAPI 3.0 document for `routes`; routes with `detail.hide` are left out. */
export function buildOpenApiDocument(
  routes: readonly InternalRoute[],
  models: Record<string, unknown>,
  info: DocsInfo,
): Record<string, unknown> {
  const paths: Record<string, unknown> = {};
  for (const route of routes) {
    const hooks = route.hooks as Hooks | undefined;
    if ((hooks?.detail as { hide?: boolean } | undefined)?.hide === true) continue;
    const methods = route.method === "ALL" ? METHODS : METHODS.filter((m) => m === route.method);
    for (const method of methods) {
      registerSchemaPath({
        schema: paths as never,
        path: route.path,
        method: method as HTTPMethod,
        hook: withGuardSchemas(hooks) as never,
        models: models as never,
      });
    }
  }
  return {
    openapi: "3.0.3",
    info: {
      title: info.title,
      version: info.version,
      ...(info.description ? { description: info.description } : {}),
    },
    paths: filterPaths(paths, { excludeStaticFile: true, exclude: [] }),
    components: { schemas: { ...models } },
  };
}
