/**
 * Binding beyond loopback is a deliberate act: the real CLI refuses a non-loopback --host with
 * the default token (exit 2, before any model or Python is looked at) and warns otherwise.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, cleanEnv, REPO } from "../support/server-process";

setDefaultTimeout(60_000);

const home = mkdtempSync(join(tmpdir(), "pensieve-bind-"));
afterAll(() => rmSync(home, { recursive: true, force: true }));

function serve(args: string[], env: Record<string, string | undefined> = {}) {
  return Bun.spawn([BUN, join(REPO, "src/main.ts"), "serve", "--port", "0", ...args], {
    cwd: REPO,
    env: cleanEnv({ ...process.env, PENSIEVE_HOME: home, PENSIEVE_TOKEN: undefined, PENSIEVE_HOST: undefined, ...env }),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
}

describe("serve --host beyond loopback", () => {
  test("with the default token: exit 2 and a message naming --token / PENSIEVE_TOKEN, no model load", async () => {
    // A Python that does not exist: the refusal must come before the bridge is looked for.
    const proc = serve(["--host", "0.0.0.0", "--python", "/nonexistent/python"]);
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    expect(code).toBe(2);
    expect(stderr).toContain("0.0.0.0");
    expect(stderr).toContain("--token");
    expect(stderr).toContain("PENSIEVE_TOKEN");
    expect(stderr).not.toContain("no Python environment");
  });

  test("with a token of one's own: it starts, with a warning naming the address on stderr", async () => {
    // An unreachable upstream: the server starts (serving 503) without any model.
    const proc = serve(["--host", "0.0.0.0", "--backend", "openai", "--upstream", "http://127.0.0.1:9/v1"], { PENSIEVE_TOKEN: "bind-test-secret" });
    let out = "";
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      const reader = s.getReader();
      for (let r = await reader.read(); !r.done; r = await reader.read()) out += dec.decode(r.value, { stream: true });
    };
    void pump(proc.stdout);
    void pump(proc.stderr);
    const deadline = Date.now() + 30_000;
    while (!out.includes("listening on http://") && proc.exitCode === null && Date.now() < deadline) await Bun.sleep(50);
    expect(out).toContain("listening on http://0.0.0.0:");
    expect(out).toMatch(/warning: listening on 0\.0\.0\.0, beyond loopback/);
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });
});
