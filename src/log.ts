/** Structured one-line logs on stderr. Callers never pass prompt or generated text. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof LEVELS;

/** A logger writing `time level msg {fields}` lines to stderr at or above `min`. */
export function createLogger(min: Level = (process.env.PENSIEVE_LOG_LEVEL as Level) ?? "info"): Logger {
  const floor = LEVELS[min] ?? LEVELS.info;
  const write = (level: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < floor) return;
    const extra = fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : "";
    process.stderr.write(`${new Date().toISOString()} ${level.padEnd(5)} ${msg}${extra}\n`);
  };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}
