import { Elysia, NotFoundError, type InternalRoute } from "elysia";
import { assetResponse } from "./assets";
import { buildOpenApiDocument, type DocsInfo } from "./openapi";
import { renderSwaggerPage } from "./page";

/** Where the docs are mounted. */
export const DOCS_PATH = "/swagger";

/**
 * Swagger UI at /swagger and the OpenAPI document at /swagger/json, covering every
 * route of the app that uses this plugin. Swagger UI's assets are served from
 * /swagger/assets/* out of Pensieve itself (embedded in the compiled binary): no CDN.
 */
export function docsPlugin(opts: DocsInfo) {
  const info: DocsInfo = { title: opts.title, version: opts.version, description: opts.description };
  const html = renderSwaggerPage({ title: info.title, description: info.description, docsPath: DOCS_PATH });
  let cached: { routeCount: number; document: Record<string, unknown> } | undefined;

  const plugin = new Elysia({ name: "pensieve.docs", seed: info });
  // Elysia marks these protected, yet rebinds them to the parent app on `.use()`;
  // @elysiajs/swagger reads them the same way.
  const internals = plugin as unknown as {
    getGlobalRoutes(): InternalRoute[];
    getGlobalDefinitions?(): { type: Record<string, unknown> };
  };
  const hidden = { detail: { hide: true } };
  return plugin
    .get(DOCS_PATH, () => new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } }), hidden)
    .get(`${DOCS_PATH}/json`, () => {
      // getGlobalRoutes() is the parent app's route list once this plugin is used;
      // it is read per request so routes added after `.use(docsPlugin())` count too.
      const routes = internals.getGlobalRoutes();
      if (cached?.routeCount !== routes.length) {
        const models = internals.getGlobalDefinitions?.().type ?? {};
        cached = { routeCount: routes.length, document: buildOpenApiDocument(routes, models, info) };
      }
      return cached.document;
    }, hidden)
    .get(`${DOCS_PATH}/assets/:name`, ({ params }) => {
      const response = assetResponse(params.name);
      if (!response) throw new NotFoundError();
      return response;
    }, hidden);
}
