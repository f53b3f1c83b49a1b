/** How MlxEngine spawns its two processes: the model worker and the tokenizer-only token counter. */

import type { MlxEngineOptions } from "./mlx-engine-options";
import type { Logger } from "../log";
import { TokenCounter } from "./token-counter";
import { counterLoadFields } from "./worker-info";
import { WorkerProcess, type WorkerProcessOptions } from "./worker-process";

export type ProcessRole = "model worker" | "token counter";

/** WorkerProcess options for either role; the counter is the same script with `--counter`. */
export function processOptions(opts: MlxEngineOptions, log: Logger, role: ProcessRole): WorkerProcessOptions {
  const counter = role === "token counter";
  return {
    python: opts.python,
    script: opts.script,
    args: counter ? ["--counter"] : [],
    env: opts.env,
    helloTimeoutMs: opts.helloTimeoutMs,
    maxLineLength: opts.maxLineLength,
    exitDrainMs: opts.exitDrainMs,
    stderr: {
      maxLines: opts.stderrTailLines,
      maxLineLength: opts.stderrLineLength,
      forward: opts.forwardStderr ?? false,
      ...(counter ? { prefix: "[counter] " } : {}),
    },
    logger: log,
    name: role,
  };
}

/** The engine's token counter: bounded like the generation queue, timed out like a command. */
export function newTokenCounter(opts: MlxEngineOptions, log: Logger): TokenCounter {
  return new TokenCounter({
    spawn: () => WorkerProcess.start(processOptions(opts, log, "token counter")),
    loadFields: () => counterLoadFields(opts),
    queueLimit: opts.queueLimit,
    queueTimeoutMs: opts.queueTimeoutMs,
    countTimeoutMs: opts.commandTimeoutMs,
    loadTimeoutMs: opts.loadTimeoutMs,
    restartBackoffMs: opts.restartBackoffMs,
    maxBackoffMs: opts.maxBackoffMs,
    retireWaitMs: opts.counterRetireWaitMs,
    failedLaunchGraceMs: opts.failedLaunchGraceMs,
    logger: log,
  });
}
