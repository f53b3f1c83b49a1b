/**
 * FakeEngine: an InferenceEngine that plays a script of events. Records every request,
 * every abort (signal fired mid-generation) and every early close of its iterator.
 */
import { EngineError } from "../../src/engine/errors";
import type {
  EngineEvent,
  EngineState,
  EngineStats,
  GenerateRequest,
  InferenceEngine,
  ModelInfo,
  PromptInput,
} from "../../src/engine/types";

/** One step of a script: an engine event, or a control step. */
export type ScriptStep =
  | EngineEvent
  /** Throw this error here (before any event = "before start"). */
  | { type: "throw"; error: Error }
  /** Wait until `release()` is called (or the signal aborts). Models a slow token / prefill. */
  | { type: "hold" }
  /** Wait this many ms (abortable). */
  | { type: "sleep"; ms: number };

export type Script = ScriptStep[] | ((req: GenerateRequest) => ScriptStep[]);

export interface FakeEngineOptions {
  model?: Partial<ModelInfo>;
  script?: Script;
  /** Default: 1 token per 4 characters of rendered content, plus 3 per message. */
  countTokens?: (input: PromptInput) => number | Promise<number>;
  state?: EngineState;
}

export const DEFAULT_MODEL: ModelInfo = {
  id: "tiny-demo",
  path: "/tmp/tiny-demo",
  contextLength: 4096,
  isDemo: true,
  supportsVision: false,
  kvBytesPerToken: 1024,
};

/** A plain answer: started, the given text chunks, done(stop). */
export function textScript(chunks: string[] = ["Hello", ", ", "world"], promptTokens = 12): ScriptStep[] {
  return [
    { type: "started", promptTokens, cachedTokens: 0 },
    ...chunks.map((text) => ({ type: "text" as const, text })),
    { type: "done", finishReason: "stop", promptTokens, completionTokens: chunks.length, cachedTokens: 0 },
  ];
}

export function defaultCount(input: PromptInput): number {
  let chars = 0;
  for (const m of input.messages) chars += m.content.length + JSON.stringify(m.tool_calls ?? "").length;
  if (input.tools) chars += JSON.stringify(input.tools).length;
  return Math.ceil(chars / 4) + 3 * input.messages.length;
}

export class FakeEngine implements InferenceEngine {
  /** Generate requests, in order. */
  readonly requests: GenerateRequest[] = [];
  /** Count-token inputs, in order. */
  readonly counted: PromptInput[] = [];
  /** Request ids whose signal aborted while their generation was running. */
  readonly aborted: string[] = [];
  /** Request ids whose iterator was closed before the script finished (return()). */
  readonly closedEarly: string[] = [];
  /** Request ids that played their whole script. */
  readonly completed: string[] = [];
  script: Script;
  private info: ModelInfo;
  private currentState: EngineState;
  private waiters: Array<() => void> = [];
  private readonly counter: (input: PromptInput) => number | Promise<number>;
  private readonly settledWaiters: Array<() => void> = [];
  running = 0;

  constructor(opts: FakeEngineOptions = {}) {
    this.info = { ...DEFAULT_MODEL, ...opts.model };
    this.script = opts.script ?? textScript();
    this.counter = opts.countTokens ?? defaultCount;
    this.currentState = opts.state ?? "ready";
  }

  async start(): Promise<ModelInfo> {
    this.currentState = "ready";
    return this.info;
  }

  model(): ModelInfo | null {
    return this.info;
  }

  state(): EngineState {
    return this.currentState;
  }

  setState(s: EngineState): void {
    this.currentState = s;
  }

  /** Lets every generation waiting on a `hold` step continue. */
  release(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Resolves when no generation is running (after aborts/closes have been recorded). */
  idle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    this.requests.push(req);
    const steps = typeof this.script === "function" ? this.script(req) : this.script;
    return this.play(req, steps, signal);
  }

  private async *play(req: GenerateRequest, steps: ScriptStep[], signal?: AbortSignal): AsyncGenerator<EngineEvent> {
    this.running++;
    let finished = false;
    const onAbort = () => this.aborted.push(req.requestId);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for (const step of steps) {
        if (signal?.aborted) throw new EngineError("aborted");
        if (step.type === "throw") throw step.error;
        if (step.type === "hold") await this.wait((resolve) => this.waiters.push(resolve), signal);
        else if (step.type === "sleep") await this.wait((resolve) => setTimeout(resolve, step.ms), signal);
        else yield step;
      }
      finished = true;
      this.completed.push(req.requestId);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!finished && !signal?.aborted) this.closedEarly.push(req.requestId);
      this.running--;
      if (this.running === 0) for (const fn of this.settledWaiters.splice(0)) fn();
    }
  }

  /** Waits for `arm`'s resolve, or rejects as soon as the signal aborts. */
  private wait(arm: (resolve: () => void) => void, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(new EngineError("aborted"));
      const onAbort = () => reject(new EngineError("aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      arm(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
    });
  }

  async countTokens(input: PromptInput): Promise<number> {
    this.counted.push(input);
    return this.counter(input);
  }

  async stats(): Promise<EngineStats> {
    return {
      state: this.currentState,
      model: this.info,
      queued: 0,
      running: this.running,
      mlx: { activeGb: 0.1, cacheGb: 0, peakGb: 0.2 },
      workerRssGb: 0.3,
      workerPid: 4242,
      restarts: 0,
    };
  }

  async clearCache(): Promise<void> {}

  async stop(): Promise<void> {
    this.currentState = "stopped";
  }
}
