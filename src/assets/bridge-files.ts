import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { EMBEDDED_BRIDGE } from "./bridge-manifest";

/** The worker script, relative to the bridge directory. */
export const WORKER_SCRIPT = "mlx_inference.py";
const COMPLETE_MARKER = ".complete";

/** True when the bridge sources are embedded (a compiled binary). */
export function bridgeIsEmbedded(): boolean {
  return EMBEDDED_BRIDGE !== null;
}

/**
 * Path of python_bridge/mlx_inference.py, ready to run; requirements.txt and
 * make_tiny_model.py sit beside it. From source this is the repository's file. In a
 * compiled binary the embedded bridge is written once to `<targetDir>/bridge-<hash>/`
 * (content-addressed, so repeated calls and other versions never clash).
 */
export async function materializeBridge(targetDir: string): Promise<string> {
  if (EMBEDDED_BRIDGE === null) return resolve(import.meta.dir, "..", "..", "python_bridge", WORKER_SCRIPT);
  const entries = Object.entries(EMBEDDED_BRIDGE).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (!entries.some(([rel]) => rel === WORKER_SCRIPT)) throw new Error(`the binary embeds no ${WORKER_SCRIPT}`);

  const files = await Promise.all(entries.map(async ([rel, path]) => [rel, await Bun.file(path).bytes()] as const));
  const hash = createHash("sha256");
  for (const [rel, bytes] of files) hash.update(`${rel}\0${bytes.length}\0`).update(bytes);
  const dir = join(targetDir, `bridge-${hash.digest("hex").slice(0, 16)}`);
  const script = join(dir, WORKER_SCRIPT);
  if (existsSync(join(dir, COMPLETE_MARKER))) return script;

  // Write beside the final directory, then rename: a crash or a concurrent start never
  // leaves a half-written bridge under the final name.
  const staging = `${dir}.tmp-${process.pid}-${Date.now()}`;
  try {
    for (const [rel, bytes] of files) {
      await mkdir(dirname(join(staging, rel)), { recursive: true });
      await writeFile(join(staging, rel), bytes);
    }
    await writeFile(join(staging, COMPLETE_MARKER), "");
    // A directory without its marker is debris from outside Pensieve; replace it.
    if (existsSync(dir) && !existsSync(join(dir, COMPLETE_MARKER))) await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    // Another process may have won the race with the same content.
    if (!existsSync(join(dir, COMPLETE_MARKER))) throw err;
  }
  return script;
}
