/**
 * Rules on the order and ending of a translated conversation, the same for every backend:
 * where a system note goes, and when a final assistant turn is a prefill to continue.
 */
import type { CachePrefix, ChatMessage } from "../engine/types";

/**
 * A system message right after a user turn is moved before it: Claude Code appends its
 * environment notes after the user's request, and a small model then answers the note instead
 * of the request. Done at every position, so each turn's prompt stays a prefix of the next.
 * The cache breakpoint keeps covering the messages it covered.
 */
export function systemBeforeUser(messages: ChatMessage[], prefix: CachePrefix | undefined): CachePrefix | undefined {
  let out = prefix;
  for (let i = 1; i < messages.length; i++) {
    const [prev, cur] = [messages[i - 1] as ChatMessage, messages[i] as ChatMessage];
    if (cur.role !== "system" || prev.role !== "user" || prev.tool_call_id) continue;
    messages[i - 1] = cur;
    messages[i] = prev;
    // A prefix that ended with the user turn now needs the moved system message too; one that
    // ended inside the system message now ends one message earlier.
    if (out?.messages === i) out = { ...out, messages: i + 1 };
    else if (out?.messages === i + 1 && out.contentChars !== undefined) out = { ...out, messages: i };
  }
  return out;
}

// Blank as Python's str.strip() sees it (JS trim differs on \x1c-\x1f, \x85 and \ufeff): the
// worker, and transformers' continue_final_message, find the prefill by its stripped text, so
// both sides must agree on what is blank.
const PY_BLANK = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;
const isBlank = (s: string | undefined): boolean => !s || PY_BLANK.test(s);

/**
 * Anthropic's prefill rules, applied here for every backend (engines only follow the flag).
 * A final assistant turn with nothing in it (no text, reasoning or tool calls) is no prefill
 * but a request for a new turn: dropped, unless it is the only message (a conversation is
 * never empty). A final assistant turn with text and no tool calls is a prefill the model
 * continues: returns true. Drops in place.
 */
export function applyPrefillRules(messages: ChatMessage[]): boolean {
  const last = messages.at(-1);
  if (!last || last.role !== "assistant" || last.tool_calls?.length) return false;
  if (!isBlank(last.content)) return true;
  if (messages.length > 1 && isBlank(last.reasoning_content)) messages.pop();
  return false;
}

