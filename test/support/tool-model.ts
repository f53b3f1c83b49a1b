/**
 * The tool-calling fixture model (python_bridge/make_tool_model.py): tiny, fixed weights, whose
 * greedy output for any prompt is one Hermes <tool_call> for Claude Code's Bash tool running echo.
 */
import { join } from "node:path";
import { REPO, testPython } from "./server-process";

/** What the fixture model calls, every turn. */
export const TOOL_CALL = { name: "Bash", input: { command: "echo pensieve-tool-ok", description: "Print a marker" } } as const;
/** What that command prints. */
export const TOOL_MARKER = "pensieve-tool-ok";

let made: Promise<string> | undefined;
/** Generate the model once per test process (idempotent on disk too); resolves with its directory. */
export function toolModelDir(): Promise<string> {
  made ??= (async () => {
    const dir = join(REPO, ".pensieve", "test-models", "tool");
    const proc = Bun.spawn([testPython(), join(REPO, "python_bridge/make_tool_model.py"), dir], { stdout: "pipe", stderr: "pipe" });
    const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    if (code !== 0) throw new Error(`make_tool_model.py failed (${code}): ${err}`);
    return dir;
  })();
  return made;
}
