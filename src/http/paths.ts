/** Path of a request URL without parsing the whole URL (hot path: every request). */
export function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start < 0) return "/";
  const q = url.indexOf("?", start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

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
