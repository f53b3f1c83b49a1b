/**
 * Small models driving Claude Code can call the same tool with the same input turn after
 * turn. When the conversation already holds that repeat `limit` times in a row, the answer
 * is a short text turn saying so, instead of another generation that would repeat it again.
 */
import type { ChatMessage, EngineEvent } from "../engine/types";
import { turnSignature as signature } from "./call-signature";

/** The repeated call's name when the last `limit` assistant turns made the same calls; else null. */
export function repeatedToolCall(messages: readonly ChatMessage[], limit: number): string | null {
  if (limit <= 0) return null;
  let seen: string | null = null;
  let count = 0;
  let name: string | null = null;
  // Walk back over (assistant with calls, tool results) pairs; anything else ends the run.
  for (let i = messages.length - 1; i >= 0 && count < limit; i--) {
    const m = messages[i] as ChatMessage;
    if (m.role === "tool") continue;
    if (m.role === "user" && i === messages.length - 1 && !m.content.trim()) continue;
    if (m.role !== "assistant" || !m.tool_calls?.length) break;
    const sig = signature(m.tool_calls);
    if (seen !== null && sig !== seen) break;
    seen = sig;
    name = m.tool_calls[0]?.function.name ?? null;
    count++;
  }
  // The request must end on the repeat's results, not on a new user question.
  const last = messages[messages.length - 1];
  if (last?.role !== "tool") return null;
  return count >= limit ? name : null;
}

/** The wording of the reply that ends a repeat loop. */
export function repeatReplyText(tool: string, limit: number): string {
  return (
    `I have called \`${tool}\` with the same input ${limit} times in a row without making progress, ` +
    "so I am stopping here instead of repeating it. Please check the tool's results above, or tell me " +
    "how to proceed differently."
  );
}

/** Engine events of that reply; `promptTokens` counts the prompt as the engine would have. */
export async function* repeatReply(text: string, promptTokens: () => Promise<number>): AsyncGenerator<EngineEvent> {
  const prompt = await promptTokens().catch(() => 0);
  yield { type: "started", promptTokens: prompt, cachedTokens: 0 };
  yield { type: "text", text };
  // No tokenizer pass for our own sentence: about four characters per token.
  const completionTokens = Math.max(1, Math.ceil(text.length / 4));
  yield { type: "done", finishReason: "stop", promptTokens: prompt, completionTokens, cachedTokens: 0 };
}
