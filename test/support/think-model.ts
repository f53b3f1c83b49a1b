/**
 * The thinking fixture model (python_bridge/make_think_model.py): tiny, fixed weights, whose
 * greedy output for any prompt is <think>REASONING</think>ANSWER then <|im_end|>.
 */
import { join } from "node:path";
import { REPO, testPython } from "./server-process";

/** Text inside the think markers (make_think_model.REASONING). */
export const THINK_REASONING = "\nThe user wants the marker; pensieve-reasoning-trace.\n";
/** The answer after </think>, as the worker sends it (the leading blank line dropped). */
export const THINK_ANSWER = "pensieve-think-ok";

let made: Promise<string> | undefined;
/** Generate the model once per test process (idempotent on disk too); resolves with its directory. */
export function thinkModelDir(): Promise<string> {
  made ??= (async () => {
    const dir = join(REPO, ".pensieve", "test-models", "think");
    const proc = Bun.spawn([testPython(), join(REPO, "python_bridge/make_think_model.py"), dir], { stdout: "pipe", stderr: "pipe" });
    const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    if (code !== 0) throw new Error(`make_think_model.py failed (${code}): ${err}`);
    return dir;
  })();
  return made;
}
