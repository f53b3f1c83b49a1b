#!/usr/bin/env bun
/**
 * The `pensieve` command: serve, setup, --help, --version. The only place that
 * reads configuration, listens and installs signal handlers.
 */
import pkg from "../package.json" with { type: "json" };
import { CliError, parseServeArgs, serveHelp, UsageError } from "./config";
import { runImport } from "./cli/import";
import { runServe } from "./cli/serve";
import { runSetupCommand } from "./cli/setup";

const VERSION: string = pkg.version;

function help(): string {
  return `pensieve ${VERSION} — the Anthropic Messages API from a local MLX model, memory safety first

Usage:
  pensieve serve [options]     start the server (Claude Code: ANTHROPIC_BASE_URL=http://127.0.0.1:7777)
  pensieve setup [--python P]  create the bridge's Python environment (~/.pensieve/venv) with mlx-lm
                               and the pinned llama.cpp libraries (~/.pensieve/llama, from npm)
                               (and, on Linux as root, apt-get install libopenblas0-pthread)
  pensieve import FILE.gguf|ollama:NAME[:TAG] [--quantize 4|8] [--dtype float32|float16|bfloat16]
                  [--engine mlx|llama] [--home H] [--python P]
                               convert without serving (cached by the file's hash); prints the path
  pensieve --help | --version

Serve options (each also read from its PENSIEVE_* variable):
${serveHelp()}
`;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "--help" || cmd === "-h" || cmd === "help") {
    process.stdout.write(help());
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === "--version" || cmd === "-v" || cmd === "version") {
    console.log(VERSION);
    return 0;
  }
  if (cmd === "serve") {
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(help());
      return 0;
    }
    await runServe(parseServeArgs(rest), VERSION);
    return -1; // keep running
  }
  if (cmd === "setup") {
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(help());
      return 0;
    }
    await runSetupCommand(parseServeArgs(rest));
    return 0;
  }
  if (cmd === "import") {
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(help());
      return 0;
    }
    await runImport(rest);
    return 0;
  }
  throw new UsageError(`unknown command '${cmd}' (try pensieve --help)`);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`pensieve: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`pensieve: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
