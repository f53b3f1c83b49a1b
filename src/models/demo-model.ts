import { join } from "node:path";

/** Directory name of the generated demo model; also the id clients see. */
export const DEMO_MODEL_ID = "pensieve-demo-tiny";

/**
 * Generate (or reuse) the tiny demo model: random weights, a real tokenizer and chat
 * template, built offline by the bridge's make_tiny_model.py. Idempotent and quick.
 */
export async function ensureDemoModel(python: string, bridgeDir: string, home: string): Promise<string> {
  const out = join(home, "models", DEMO_MODEL_ID);
  const proc = Bun.spawn([python, join(bridgeDir, "make_tiny_model.py"), out], {
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
  });
  const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  if (code !== 0) throw new Error(`could not generate the demo model (exit ${code}):\n${stderr.trim()}`);
  return out;
}
