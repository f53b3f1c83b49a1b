/** Neutral chat dialect -> OpenAI chat-completions request body. Pure. */
import type { ChatMessage, GenerateRequest, ToolChoice } from "../engine/types";
import type { OpenAIChatRequest, OpenAIMessage, OpenAIToolChoice } from "./openai-types";

/** Map one neutral message; arguments become JSON strings as OpenAI requires. */
export function toOpenAIMessage(m: ChatMessage): OpenAIMessage {
  switch (m.role) {
    case "system":
      return { role: "system", content: m.content };
    case "user":
      return { role: "user", content: m.content };
    case "tool":
      return {
        role: "tool",
        content: m.content,
        tool_call_id: m.tool_call_id ?? "",
        ...(m.name ? { name: m.name } : {}),
      };
    case "assistant": {
      // "" rather than null: several chat templates render a null content as the text "None".
      const out: OpenAIMessage = { role: "assistant", content: m.content ?? "" };
      if (m.tool_calls?.length) {
        out.tool_calls = m.tool_calls.map((c) => ({
          id: c.id,
          type: "function",
          function: { name: c.function.name, arguments: JSON.stringify(c.function.arguments ?? {}) },
        }));
      }
      if (m.reasoning_content) out.reasoning_content = m.reasoning_content;
      return out;
    }
  }
}

function toOpenAIToolChoice(c: ToolChoice): OpenAIToolChoice {
  return typeof c === "string" ? c : { type: "function", function: { name: c.name } };
}

/**
 * The streaming request body for POST /v1/chat/completions. `model` undefined omits the field,
 * which vLLM, SGLang, llama-server and mlx_lm.server read as "the model being served".
 */
export function buildChatRequest(
  req: GenerateRequest,
  model: string | undefined,
  extraBody: Record<string, unknown> = {},
): OpenAIChatRequest {
  const body: OpenAIChatRequest = {
    ...extraBody,
    ...(model !== undefined ? { model } : {}),
    messages: req.messages.map(toOpenAIMessage),
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: req.maxTokens,
  };
  // tool_choice without tools is rejected by some servers, so both go together.
  if (req.tools?.length) {
    body.tools = req.tools;
    if (req.toolChoice !== undefined) body.tool_choice = toOpenAIToolChoice(req.toolChoice);
    if (req.parallelToolCalls !== undefined) body.parallel_tool_calls = req.parallelToolCalls;
  }
  if (req.stop?.length) body.stop = req.stop;
  // Unset means 1.0 for Pensieve's clients; upstream servers' own defaults differ
  // (mlx_lm.server: 0), and Pensieve cannot read the upstream model's generation_config.
  body.temperature = req.temperature ?? 1;
  if (req.topP !== undefined) body.top_p = req.topP;
  if (req.topK !== undefined && req.topK > 0) body.top_k = req.topK;
  if (req.continueFinal) {
    // A prefill: the assistant message stays last and is continued, not answered in a new turn.
    // vLLM, SGLang and llama-server read both fields (vLLM and llama-server refuse the two true
    // together); llama-server would also continue it unasked; servers that know neither ignore them.
    body.continue_final_message = true;
    body.add_generation_prompt = false;
  }
  if (req.enableThinking !== undefined) {
    const kwargs = (extraBody.chat_template_kwargs as Record<string, unknown> | undefined) ?? {};
    body.chat_template_kwargs = { ...kwargs, enable_thinking: req.enableThinking };
  }
  return body;
}
