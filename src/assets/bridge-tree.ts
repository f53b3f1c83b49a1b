// Which files of python_bridge/ ship inside the binary; shared by scripts/build.ts and tests.
import { readdirSync } from "node:fs";
import { join } from "node:path";

// Directories never shipped: the pytest suite and interpreter caches.
const SKIP_DIRS = new Set(["tests", "test", "__pycache__"]);

function isShipped(name: string): boolean {
  if (name.startsWith("test_") || name === "conftest.py") return false;
  return name.endsWith(".py") || name === "requirements.txt";
}

/** The bridge's files (sources and requirements.txt), relative to `bridgeDir`, sorted. */
export function listBridgeFiles(bridgeDir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of readdirSync(join(bridgeDir, rel), { withFileTypes: true })) {
      if (entry.name.startsWith(".")) continue;
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name)) walk(child);
      } else if (entry.isFile() && isShipped(entry.name)) {
        out.push(child);
      }
    }
  };
  walk("");
  return out.sort();
}

/** Source of the module that replaces bridge-manifest.ts in a compiled build. */
export function renderBridgeManifest(bridgeDir: string, files: readonly string[]): string {
  const imports = files.map((rel, i) => `import f${i} from ${JSON.stringify(join(bridgeDir, rel))} with { type: "file" };`);
  const entries = files.map((rel, i) => `  ${JSON.stringify(rel)}: f${i},`);
  return [...imports, "export const EMBEDDED_BRIDGE = {", ...entries, "};", ""].join("\n");
}
