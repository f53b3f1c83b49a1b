/** How much KV cache a Messages request may need, read from its body before tokenizing. */
import type { KvDemand } from "../http/memory-guard";

/**
 * Rough prompt tokens from a Messages body, before tokenizing: text characters / 3.
 * Deliberately high (code and JSON run near 3 chars per token) so admission errs on the safe side.
 */
export function estimatePromptTokens(body: unknown): number {
  if (!body || typeof body !== "object") return 0;
  const b = body as Record<string, unknown>;
  let chars = 0;
  const walk = (v: unknown): void => {
    if (typeof v === "string") chars += v.length;
    else if (Array.isArray(v)) for (const x of v) walk(x);
    else if (v && typeof v === "object") for (const x of Object.values(v)) walk(x);
  };
  walk(b.system);
  walk(b.messages);
  walk(b.tools);
  return Math.ceil(chars / 3);
}

/** The memory guard's estimate: prompt + max_tokens; null for count_tokens, which builds no KV cache. */
export function messagesKvDemand(body: unknown, path: string): KvDemand | null {
  if (path.endsWith("/count_tokens")) return null;
  const maxTokens = (body as { max_tokens?: unknown } | undefined)?.max_tokens;
  if (typeof maxTokens !== "number") return null;
  return { promptTokens: estimatePromptTokens(body), maxTokens };
}

/** Ends the admission refusal's message with the field a client can lower. */
export const ADMISSION_HINT = "Retry later, or lower max_tokens.";
