/**
 * The inference engine boundary. The engine speaks a neutral chat dialect (the
 * shape Hugging Face chat templates take) and knows nothing of Anthropic.
 */

/** A tool call carried in assistant history, in chat-template shape. */
export interface ChatToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: Record<string, unknown> };
}

/** One message as a chat template expects it. */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
  name?: string;
  reasoning_content?: string;
}

/** A tool definition in the OpenAI/HF function shape templates understand. */
export interface ToolSpec {
  type: "function";
  function: { name: string; description?: string; parameters: Record<string, unknown> };
  /** The client asked for calls that always match `parameters` (engines may enforce it by grammar). */
  strict?: boolean;
}

/** Which tools the model may or must call: any, none, at least one, or the named one. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

/** What to render: shared by generate and count_tokens. */
export interface PromptInput {
  /** The target the alias map resolved; single-model engines ignore it, routers use it. */
  model?: string;
  /** The model name the client asked for, before aliasing (routers may match on it). */
  requestedModel?: string;
  messages: ChatMessage[];
  tools?: ToolSpec[];
  /** Ask templates that support it (Qwen3) to think, or not. */
  enableThinking?: boolean;
  /**
   * The last message is an assistant message with text and no tool calls that the model
   * continues (a prefill) instead of answering in a new turn. Set by the API translation,
   * which owns the dialect's prefill rules; engines only follow it.
   */
  continueFinal?: boolean;
}

/**
 * Where the prompt's cacheable prefix ends (the request's last cache breakpoint): the first
 * `messages` messages, the last of them cut to its first `contentChars` characters (UTF-16 code
 * units) of content when the breakpoint falls inside it. Tools are always part of the prefix;
 * `messages: 0` means tools only. Engines count cache writes only up to here.
 */
export interface CachePrefix {
  messages: number;
  contentChars?: number;
}

/** A generation request. */
export interface GenerateRequest extends PromptInput {
  /** Correlates logs; never contains prompt text. */
  requestId: string;
  maxTokens: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  stop?: string[];
  toolChoice?: ToolChoice;
  /** False when the client disabled parallel tool use. */
  parallelToolCalls?: boolean;
  /** Absent: no breakpoint, so nothing counts as a cache write. */
  cachePrefix?: CachePrefix;
}

export type FinishReason = "stop" | "length" | "stop_sequence" | "tool_calls" | "cancelled";

/** Events a generation yields, in order: started, progress*, (text|tool_call)*, done. */
export type EngineEvent =
  | { type: "started"; promptTokens: number; cachedTokens: number }
  | { type: "progress"; processed: number; total: number }
  | { type: "text"; text: string }
  | { type: "thinking"; text: string }
  // No id: the API layer mints one in its own style (src/anthropic), so every backend's calls look alike.
  | { type: "tool_call"; name: string; arguments: Record<string, unknown> }
  | {
      type: "done";
      finishReason: FinishReason;
      stopSequence?: string;
      promptTokens: number;
      completionTokens: number;
      cachedTokens: number;
      /** Prompt tokens newly written to the prompt-prefix cache (0 or absent: none kept). */
      cacheCreatedTokens?: number;
    };

/** Facts about the loaded model. */
export interface ModelInfo {
  /** Id clients see, e.g. the directory name or the HF id. */
  id: string;
  path: string;
  contextLength: number;
  /** True for the generated demo model with random weights. */
  isDemo: boolean;
  supportsVision: boolean;
  /** What the KV cache needs per token, for admission estimates. */
  kvBytesPerToken: number;
}

/** MLX's allocator figures in GB: live arrays, the buffer cache, and the peak since start. */
export interface MlxMemory {
  activeGb: number;
  cacheGb: number;
  peakGb: number;
}

export type EngineState = "stopped" | "starting" | "ready" | "restarting" | "failed";

/** The worker's prompt-prefix cache (KV caches of recent prompts). */
export interface PromptCacheStats {
  entries: number;
  bytes: number;
  maxEntries: number;
  maxBytes: number;
  hits: number;
  misses: number;
  /** Prompt tokens served from the cache instead of recomputed, since the worker started. */
  tokensReused: number;
}

/** What /health and the emergency log show about the engine. */
export interface EngineStats {
  state: EngineState;
  model: ModelInfo | null;
  queued: number;
  running: number;
  mlx: MlxMemory | null;
  workerRssGb: number | null;
  workerPid: number | null;
  restarts: number;
  /** Present when the engine keeps a prompt-prefix cache. */
  promptCache?: PromptCacheStats;
  /** Age in ms of the worker's figures (mlx, workerRssGb, promptCache): a busy worker answers late. */
  statsAgeMs?: number;
}

/** The engine the HTTP layer drives. Implemented by the MLX bridge and by test fakes. */
export interface InferenceEngine {
  start(): Promise<ModelInfo>;
  model(): ModelInfo | null;
  state(): EngineState;
  /** Throws typed errors from ./errors before yielding when the request cannot run. */
  generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<EngineEvent>;
  countTokens(input: PromptInput): Promise<number>;
  /** Like countTokens, saying whether the figure is exact or an estimate (upstreams without a tokenizer). */
  countTokensDetailed?(input: PromptInput): Promise<{ count: number; exact: boolean; source: string }>;
  stats(): Promise<EngineStats>;
  clearCache(): Promise<void>;
  /** Gives memory back under pressure: "trim" shrinks reusable caches, "drop" empties them. Optional. */
  relieveMemory?(level: "trim" | "drop"): Promise<void>;
  stop(): Promise<void>;
}
