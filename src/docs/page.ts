// Minimal HTML escaping for text placed in the docs page.
function escapeHtml(text: string): string {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/**
 * The Swagger UI page. Every URL in it is on this server: no CDN, so it renders offline.
 * `docsPath` is where the page is mounted (e.g. "/swagger").
 */
export function renderSwaggerPage(opts: { title: string; description?: string; docsPath: string }): string {
  const { docsPath } = opts;
  const title = escapeHtml(opts.title);
  const description = escapeHtml(opts.description ?? "");
  const config = {
    url: `${docsPath}/json`,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No online validator badge: it would call validator.swagger.io.
    validatorUrl: null,
  };
  // JSON inside <script>: escape "<" so no string can close the tag.
  const configJson = JSON.stringify(config).replaceAll("<", "\\u003c");
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width, initial-scale=1" />
  <title>${title}</title>
  <meta name="description" content="${description}" />
  <link rel="icon" type="image/png" href="${docsPath}/assets/favicon-32x32.png" />
  <link rel="stylesheet" href="${docsPath}/assets/swagger-ui.css" />
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="${docsPath}/assets/swagger-ui-bundle.js"></script>
  <script>
    window.onload = () => {
      window.ui = SwaggerUIBundle(Object.assign(${configJson}, {
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
      }));
    };
  </script>
</body>
</html>
`;
}
