// Swagger UI's assets are imported `with { type: "file" }`: Bun hands back a path
// (on disk from source, under /$bunfs in a compiled binary), which TypeScript cannot infer.
declare module "swagger-ui-dist/swagger-ui.css" {
  const path: string;
  export default path;
}
declare module "swagger-ui-dist/swagger-ui-bundle.js" {
  const path: string;
  export default path;
}
declare module "swagger-ui-dist/favicon-32x32.png" {
  const path: string;
  export default path;
}
