// Swagger UI's static assets, imported as files so `bun build --compile` embeds them:
// the docs page must render with no network, from source and from the binary alike.
import cssPath from "swagger-ui-dist/swagger-ui.css" with { type: "file" };
import bundlePath from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import faviconPath from "swagger-ui-dist/favicon-32x32.png" with { type: "file" };

interface Asset {
  path: string;
  contentType: string;
}

/** The assets the docs page references, by the name served under `<docs path>/assets/`. */
export const SWAGGER_ASSETS: Readonly<Record<string, Asset>> = {
  "swagger-ui.css": { path: cssPath, contentType: "text/css; charset=utf-8" },
  "swagger-ui-bundle.js": { path: bundlePath, contentType: "text/javascript; charset=utf-8" },
  "favicon-32x32.png": { path: faviconPath, contentType: "image/png" },
};

/** A response carrying the named asset, or undefined when there is no such asset. */
export function assetResponse(name: string): Response | undefined {
  const asset = Object.hasOwn(SWAGGER_ASSETS, name) ? SWAGGER_ASSETS[name] : undefined;
  if (!asset) return undefined;
  return new Response(Bun.file(asset.path), {
    headers: {
      "content-type": asset.contentType,
      // The assets are immutable for a given build of Pensieve.
      "cache-control": "public, max-age=86400",
    },
  });
}
