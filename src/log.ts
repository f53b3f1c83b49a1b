/** Structured one-line logs on stderr. Callers never pass prompt or generated text. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof LEVELS;

const isLevel = (name: string): name is Level => Object.hasOwn(LEVELS, name);
const ignore = () => {};

/**
 * A logger writing `time level msg {fields}` lines to stderr at or above `min`. An unknown
 * name means info, so a mistyped PENSIEVE_LOG_LEVEL never silences errors.
 */
export function createLogger(min: string = "info"): Logger {
  const floor = LEVELS[isLevel(min) ? min : "info"];
  const write = (level: Level) =>
    LEVELS[level] < floor
      ? ignore
      : (msg: string, fields?: Record<string, unknown>) => {
          const extra = fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : "";
          process.stderr.write(`${new Date().toISOString()} ${level.padEnd(5)} ${msg}${extra}\n`);
        };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}
