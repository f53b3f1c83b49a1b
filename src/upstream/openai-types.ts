/**
 * The subset of the OpenAI chat-completions wire format Pensieve sends and reads, including
 * the extensions vLLM, SGLang, llama-server and mlx_lm.server add (reasoning, stop_reason...).
 */

export interface OpenAIToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export type OpenAIMessage =
  | { role: "system"; content: string }
  | { role: "user"; content: string }
  | { role: "assistant"; content: string; tool_calls?: OpenAIToolCall[]; reasoning_content?: string }
  | { role: "tool"; content: string; tool_call_id: string; name?: string };

export type OpenAIToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

/** The body of POST /v1/chat/completions as Pensieve sends it (always streaming). */
export interface OpenAIChatRequest {
  model?: string;
  messages: OpenAIMessage[];
  stream: true;
  stream_options: { include_usage: true };
  max_tokens: number;
  tools?: unknown[];
  tool_choice?: OpenAIToolChoice;
  parallel_tool_calls?: boolean;
  stop?: string[];
  temperature?: number;
  top_p?: number;
  /** Not OpenAI: vLLM, SGLang, llama-server and mlx_lm.server accept it. */
  top_k?: number;
  /** Not OpenAI: vLLM, SGLang, llama-server (--jinja) and mlx_lm.server pass it to the template. */
  chat_template_kwargs?: Record<string, unknown>;
  [extra: string]: unknown;
}

/** A piece of a streamed tool call; `index` ties the pieces together (absent on some Ollama builds). */
export interface OpenAIToolCallDelta {
  index?: number;
  id?: string | null;
  type?: string;
  function?: { name?: string | null; arguments?: string | null };
}

/** Token usage, sent in the last chunk when `stream_options.include_usage` is set. */
export interface OpenAIUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number | null } | null;
}

/** One choice of a streamed chunk. */
export interface OpenAIChunkChoice {
  index?: number;
  delta?: {
    role?: string;
    content?: string | null;
    reasoning_content?: string | null;
    reasoning?: string | null;
    tool_calls?: OpenAIToolCallDelta[] | null;
  };
  finish_reason?: string | null;
  /** vLLM: the stop string (or token id) that ended generation. */
  stop_reason?: string | number | null;
  /** SGLang: the same, under another name. */
  matched_stop?: string | number | null;
}

/** One `chat.completion.chunk` (or an in-band error) from the stream. */
export interface OpenAIChunk {
  id?: string;
  object?: string;
  model?: string;
  choices?: OpenAIChunkChoice[];
  usage?: OpenAIUsage | null;
  /** llama-server: prompt processing progress when `return_progress` is set. */
  prompt_progress?: { total?: number; processed?: number; cache?: number };
  /** llama-server timings; cache_n is the reused prefix. */
  timings?: { cache_n?: number; prompt_n?: number; predicted_n?: number };
  /** Some servers report failures inside the stream. */
  error?: unknown;
  message?: string;
}
