/**
 * Pure translation: an Anthropic request -> the engine's neutral chat dialect.
 * Rendering choices here (joins, order) are stable so that prefix reuse works turn to turn.
 */
import type { CachePrefix, ChatMessage, ChatToolCall, GenerateRequest, PromptInput, ToolChoice, ToolSpec } from "../engine/types";
import { PromptTooLongError } from "../engine/errors";
import { InvalidRequestError } from "./errors";
import { applyPrefillRules, systemBeforeUser } from "./turns";
import type { ContentBlockParamT, CountTokensRequestT, MessageParamT, MessagesRequestT, ToolParamT } from "./schemas";

/** Claude Code's first system block; it changes every session and would defeat prefix reuse. */
export const BILLING_HEADER_PREFIX = "x-anthropic-billing-header:";

// How text blocks of one message (or system) are joined.
const BLOCK_JOIN = "\n\n";

/** Per-request facts the translation needs beyond the request body. */
export interface TranslateOptions {
  /** The target the alias map resolved. */
  model: string;
  /** The name the client sent, before aliasing. */
  requestedModel?: string;
  supportsVision: boolean;
  /** When known, max_tokens is clamped to it (the engine clamps further to what is left). */
  contextLength?: number;
  /** The temperature of requests that set none (--temperature); unset: the engine's default. */
  temperature?: number;
}

type Block = ContentBlockParamT;
type TextB = { type: "text"; text: string };
type ToolUseB = { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };
type ToolResultB = { type: "tool_result"; tool_use_id: string; content?: string | Block[]; is_error?: boolean };
type ThinkingB = { type: "thinking"; thinking: string };
type DocSource = { type?: unknown; data?: unknown; media_type?: unknown; content?: unknown };
type DocumentB = { type: "document"; source?: DocSource; title?: unknown; context?: unknown };

// The open "other" block (type: string) defeats TS narrowing on `type`; these guards restore it.
const isText = (b: Block): b is Block & TextB => b.type === "text";
const isToolUse = (b: Block): b is Block & ToolUseB => b.type === "tool_use";
const isToolResult = (b: Block): b is Block & ToolResultB => b.type === "tool_result";
const isThinking = (b: Block): b is Block & ThinkingB => b.type === "thinking";
const isDocument = (b: Block): b is Block & DocumentB => b.type === "document";
const hasBreakpoint = (b: unknown): boolean => !!(b && typeof b === "object" && (b as { cache_control?: unknown }).cache_control);

function imageError(opts: TranslateOptions): InvalidRequestError {
  return new InvalidRequestError(
    opts.supportsVision
      ? `image input is not implemented yet for model "${opts.model}"; send text only`
      : `the served model "${opts.model}" does not support images; send text only`,
  );
}

/** The system prompt: string or text blocks, minus a leading billing-header block. */
export function systemText(system: MessagesRequestT["system"]): string | null {
  if (system === undefined) return null;
  if (typeof system === "string") {
    if (!system.startsWith(BILLING_HEADER_PREFIX)) return system || null;
    const nl = system.indexOf("\n");
    return nl < 0 ? null : system.slice(nl + 1) || null;
  }
  const text = systemBlocks(system).map((b) => b.text).join(BLOCK_JOIN);
  return text || null;
}

const systemBlocks = <B extends { text: string }>(blocks: readonly B[]): B[] =>
  blocks.filter((b, i) => !(i === 0 && b.text.startsWith(BILLING_HEADER_PREFIX)));

// The text of a content-source document: its text blocks, joined as a message's are.
function contentSourceText(content: unknown, path: string, opts: TranslateOptions): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw new InvalidRequestError(`${path}.source.content: expected a string or an array of text blocks`);
  return content
    .map((b: { type?: unknown; text?: unknown }, k) => {
      if (b?.type === "text" && typeof b.text === "string") return b.text;
      if (b?.type === "image") throw imageError(opts);
      throw new InvalidRequestError(`${path}.source.content.${k}: only text blocks can be read in a document by the served model`);
    })
    .join(BLOCK_JOIN);
}

/** A document block as text (plain-text and content sources); other sources are a 400 naming the block. */
export function documentText(b: DocumentB, path: string, opts: TranslateOptions): string {
  const src = b.source ?? {};
  let body: string;
  if (src.type === "text" && typeof src.data === "string") body = src.data;
  else if (src.type === "text") throw new InvalidRequestError(`${path}.source.data: a text document needs its text as a string`);
  else if (src.type === "content") body = contentSourceText(src.content, path, opts);
  else {
    const media = typeof src.media_type === "string" ? ` (${src.media_type})` : "";
    throw new InvalidRequestError(
      `${path}: document blocks with source type "${String(src.type)}"${media} are not supported by the served model; send the text instead`,
    );
  }
  // A stable rendering, so that prefix reuse works turn to turn.
  const head: string[] = [];
  if (typeof b.title === "string" && b.title) head.push(`Document: ${b.title}`);
  if (typeof b.context === "string" && b.context) head.push(`Context: ${b.context}`);
  return head.length ? `${head.join("\n")}\n\n${body}` : body;
}

function toolResultText(block: ToolResultB, path: string, opts: TranslateOptions): string {
  const c = block.content;
  let text: string;
  if (c === undefined) text = "";
  else if (typeof c === "string") text = c;
  else {
    const parts: string[] = [];
    c.forEach((b, k) => {
      if (b.type === "image") throw imageError(opts);
      if (isDocument(b)) parts.push(documentText(b, `${path}.content.${k}`, opts));
      // tool_reference, search_result, ...: rendered as JSON so nothing is silently lost.
      else parts.push(isText(b) ? b.text : JSON.stringify(b));
    });
    text = parts.join(BLOCK_JOIN);
  }
  return block.is_error ? `Error: ${text}` : text;
}

// One chat message being built. Merged turns collect their parts here, joined once at the end:
// re-joining the accumulated text per turn was quadratic.
interface Draft {
  msg: ChatMessage;
  parts?: string[];
  reasoning?: (string | undefined)[];
}

// Where a cache breakpoint falls: draft `draft`, after `chars` characters of its part `part`.
// "tools": before any message (a breakpoint on tools, or on a dropped system block).
type Mark = { draft: number; part: number; chars: number } | "tools";

interface Ctx {
  opts: TranslateOptions;
  /** tool_use id -> tool name, from earlier assistant turns. */
  toolNames: Map<string, string>;
  out: Draft[];
  /** The last cache_control breakpoint seen, in prompt order. */
  mark: Mark | null;
}

const mergeable = (m: ChatMessage) => (m.role === "user" || m.role === "assistant") && !m.tool_call_id;

// Anthropic combines consecutive user (or assistant) turns into one; templates often need it.
// Returns where the message landed: [draft index, part index].
function pushMerged(ctx: Ctx, msg: ChatMessage): [number, number] {
  const last = ctx.out[ctx.out.length - 1];
  if (last && last.msg.role === msg.role && mergeable(last.msg) && mergeable(msg)) {
    last.parts ??= [last.msg.content];
    last.reasoning ??= [last.msg.reasoning_content];
    last.parts.push(msg.content);
    last.reasoning.push(msg.reasoning_content);
    if (msg.tool_calls) for (const c of msg.tool_calls) (last.msg.tool_calls ??= []).push(c);
    return [ctx.out.length - 1, last.parts.length - 1];
  }
  ctx.out.push({ msg });
  return [ctx.out.length - 1, 0];
}

// Exactly what joining turn by turn gave: empty parts skipped, a lone turn kept as it is.
function finishDraft(d: Draft): ChatMessage {
  const { msg, parts, reasoning } = d;
  if (!parts || !reasoning) return msg;
  msg.content = parts.filter(Boolean).join(BLOCK_JOIN);
  const [first, ...more] = reasoning;
  const rest = more.filter(Boolean);
  const joined = rest.length ? [first, ...rest].filter(Boolean).join(BLOCK_JOIN) : first;
  if (joined === undefined) delete msg.reasoning_content;
  else msg.reasoning_content = joined;
  return msg;
}

// Characters of the first `count` items joined by BLOCK_JOIN.
function joinedLength(items: readonly string[], count: number): number {
  let n = 0;
  for (let i = 0; i < count; i++) n += items[i]!.length + (i ? BLOCK_JOIN.length : 0);
  return n;
}

function blocksOf(m: MessageParamT): Block[] {
  return typeof m.content === "string" ? [{ type: "text", text: m.content }] : m.content;
}

function toolMessage(ctx: Ctx, b: ToolResultB, index: number, j: number): void {
  const name = ctx.toolNames.get(b.tool_use_id);
  if (name === undefined)
    throw new InvalidRequestError(
      `messages.${index}: unexpected tool_use_id found in tool_result blocks: ${b.tool_use_id}. ` +
        "Each tool_result block must have a corresponding tool_use block in a previous message.",
    );
  const content = toolResultText(b, `messages.${index}.content.${j}`, ctx.opts);
  ctx.out.push({ msg: { role: "tool", content, tool_call_id: b.tool_use_id, name } });
  if (hasBreakpoint(b)) ctx.mark = { draft: ctx.out.length - 1, part: 0, chars: content.length };
}

function translateUser(ctx: Ctx, m: MessageParamT, index: number): void {
  let texts: string[] = [];
  let marked = 0; // texts of the pending run covered by a breakpoint
  const flush = () => {
    if (texts.length) {
      const [draft, part] = pushMerged(ctx, { role: "user", content: texts.join(BLOCK_JOIN) });
      if (marked) ctx.mark = { draft, part, chars: joinedLength(texts, marked) };
    }
    texts = [];
    marked = 0;
  };
  const blocks = blocksOf(m);
  for (let j = 0; j < blocks.length; j++) {
    const b = blocks[j]!;
    if (isText(b)) texts.push(b.text);
    else if (isDocument(b)) texts.push(documentText(b, `messages.${index}.content.${j}`, ctx.opts));
    else if (b.type === "image") throw imageError(ctx.opts);
    else if (isToolResult(b)) {
      flush();
      toolMessage(ctx, b, index, j);
      continue;
    }
    // tool_use/thinking in a user turn, and unmodelled block types, are ignored.
    if (texts.length && hasBreakpoint(b)) marked = texts.length;
  }
  flush();
}

function translateAssistant(ctx: Ctx, m: MessageParamT): void {
  const texts: string[] = [];
  const reasoning: string[] = [];
  const calls: ChatToolCall[] = [];
  let breakpoint = false;
  for (const b of blocksOf(m)) {
    if (isText(b)) texts.push(b.text);
    else if (isThinking(b)) reasoning.push(b.thinking);
    else if (isToolUse(b)) {
      ctx.toolNames.set(b.id, b.name);
      calls.push({ id: b.id, type: "function", function: { name: b.name, arguments: b.input } });
    } else if (b.type === "image") throw imageError(ctx.opts);
    if (hasBreakpoint(b)) breakpoint = true;
  }
  const msg: ChatMessage = { role: "assistant", content: texts.join(BLOCK_JOIN) };
  if (calls.length) msg.tool_calls = calls;
  if (reasoning.length) msg.reasoning_content = reasoning.join(BLOCK_JOIN);
  const chars = msg.content.length;
  const [draft, part] = pushMerged(ctx, msg);
  // A breakpoint anywhere in an assistant turn covers the whole turn.
  if (breakpoint) ctx.mark = { draft, part, chars };
}

function translateSystemMessage(ctx: Ctx, m: MessageParamT): void {
  const texts: string[] = [];
  let marked = 0;
  for (const b of blocksOf(m)) {
    if (isText(b)) texts.push(b.text);
    else if (b.type === "image") throw imageError(ctx.opts);
    if (hasBreakpoint(b)) marked = texts.length;
  }
  ctx.out.push({ msg: { role: "system", content: texts.join(BLOCK_JOIN) } });
  if (marked) ctx.mark = { draft: ctx.out.length - 1, part: 0, chars: joinedLength(texts, marked) };
}

// The system prompt, and the breakpoint of its last cache_control block.
function translateSystem(ctx: Ctx, system: MessagesRequestT["system"]): void {
  const text = systemText(system);
  if (text !== null) ctx.out.push({ msg: { role: "system", content: text } });
  if (!Array.isArray(system)) return;
  const kept = systemBlocks(system);
  const last = kept.findLastIndex(hasBreakpoint);
  if (last >= 0 && text !== null) ctx.mark = { draft: 0, part: 0, chars: joinedLength(kept.map((b) => b.text), last + 1) };
  else if (last >= 0 || hasBreakpoint(system[0])) ctx.mark = "tools";
}

/** Anthropic tools -> function specs. Server tools without an input_schema are skipped. */
export function translateTools(tools: readonly ToolParamT[] | undefined): ToolSpec[] | undefined {
  if (!tools?.length) return undefined;
  const specs: ToolSpec[] = [];
  for (const tool of tools) {
    // Deferred tools (tool search) are not in the model's context until discovered.
    if (!tool.input_schema || (tool as { defer_loading?: unknown }).defer_loading === true) continue;
    const fn: ToolSpec["function"] = { name: tool.name, parameters: tool.input_schema };
    if (tool.description !== undefined) fn.description = tool.description;
    const spec: ToolSpec = { type: "function", function: fn };
    if ((tool as { strict?: unknown }).strict === true) spec.strict = true;
    specs.push(spec);
  }
  return specs.length ? specs : undefined;
}

// Where the prompt's cacheable prefix ends, in chat-message terms (GenerateRequest.cachePrefix).
function cachePrefixOf(ctx: Ctx, messages: readonly ChatMessage[]): CachePrefix | undefined {
  const mark = ctx.mark;
  if (mark === null) return undefined;
  if (mark === "tools") return { messages: 0 };
  const parts = ctx.out[mark.draft]!.parts ?? [];
  const nonEmpty = parts.slice(0, mark.part).filter(Boolean);
  let chars = joinedLength(nonEmpty, nonEmpty.length);
  if (mark.chars > 0) chars += (nonEmpty.length ? BLOCK_JOIN.length : 0) + mark.chars;
  const whole = chars >= messages[mark.draft]!.content.length;
  return whole ? { messages: mark.draft + 1 } : { messages: mark.draft + 1, contentChars: chars };
}

function translate(req: CountTokensRequestT, opts: TranslateOptions): { input: PromptInput; cachePrefix?: CachePrefix } {
  const ctx: Ctx = { opts, toolNames: new Map(), out: [], mark: null };
  if (req.tools?.some(hasBreakpoint)) ctx.mark = "tools";
  translateSystem(ctx, req.system);
  req.messages.forEach((m, i) => {
    if (m.role === "user") translateUser(ctx, m, i);
    else if (m.role === "assistant") translateAssistant(ctx, m);
    else translateSystemMessage(ctx, m);
  });
  if (!ctx.out.length) throw new InvalidRequestError("messages: no message has content the served model can read");
  const messages = ctx.out.map(finishDraft);
  // The breakpoint is placed before the prefill rules may drop the last message, then kept in range.
  let cachePrefix = systemBeforeUser(messages, cachePrefixOf(ctx, messages));
  const continueFinal = applyPrefillRules(messages);
  if (cachePrefix && cachePrefix.messages > messages.length) cachePrefix = { messages: messages.length };
  const input: PromptInput = { model: opts.model, messages };
  if (continueFinal) input.continueFinal = true;
  if (opts.requestedModel) input.requestedModel = opts.requestedModel;
  const tools = translateTools(req.tools);
  if (tools) input.tools = tools;
  const thinking = req.thinking?.type;
  if (thinking === "enabled" || thinking === "adaptive") input.enableThinking = true;
  else if (thinking === "disabled") input.enableThinking = false;
  // count_tokens refuses a hopeless size up front, as /v1/messages does.
  if (opts.contextLength) refuseHopeless(input, opts.contextLength);
  return cachePrefix ? { input, cachePrefix } : { input };
}

/** System + messages + tools + thinking: what both generate and count_tokens render. */
export function toPromptInput(req: CountTokensRequestT, opts: TranslateOptions): PromptInput {
  return translate(req, opts).input;
}

/** The full generation request; `requestId` correlates logs only. */
export function toGenerateRequest(req: MessagesRequestT, opts: TranslateOptions & { requestId: string }): GenerateRequest {
  const maxTokens = opts.contextLength ? Math.min(req.max_tokens, opts.contextLength) : req.max_tokens;
  const { input, cachePrefix } = translate(req, opts);
  const out: GenerateRequest = { ...input, requestId: opts.requestId, maxTokens };
  if (cachePrefix) out.cachePrefix = cachePrefix;
  // Unset sampling values are left to the engine: the model's own generation_config.json.
  const temperature = req.temperature ?? opts.temperature;
  if (temperature !== undefined) out.temperature = temperature;
  if (req.top_p !== undefined) out.topP = req.top_p;
  if (req.top_k !== undefined && req.top_k > 0) out.topK = req.top_k;
  const stops = req.stop_sequences?.filter((s) => s.length > 0);
  if (stops?.length) out.stop = stops;
  const choice = toolChoice(req.tool_choice);
  if (choice) out.toolChoice = choice;
  if (req.tool_choice?.disable_parallel_tool_use) out.parallelToolCalls = false;
  return out;
}

// Anthropic tool_choice in engine terms; undefined leaves the default (auto).
function toolChoice(c: MessagesRequestT["tool_choice"]): ToolChoice | undefined {
  switch (c?.type) {
    case "any":
      return "required";
    case "none":
      return "none";
    case "tool":
      return c.name ? { name: c.name } : "required";
    default:
      return undefined;
  }
}

// No tokenizer averages this many characters per token over a whole prompt.
const MAX_CHARS_PER_TOKEN = 64;

// Refuse a prompt that cannot fit however it tokenizes, before the worker spends seconds and
// gigabytes tokenizing megabytes of it. The count given is a lower bound.
function refuseHopeless(input: PromptInput, contextLength: number): void {
  let chars = input.tools ? JSON.stringify(input.tools).length : 0;
  for (const m of input.messages) {
    chars += m.content.length + (m.reasoning_content?.length ?? 0);
    if (m.tool_calls) chars += JSON.stringify(m.tool_calls).length;
  }
  const atLeast = Math.ceil(chars / MAX_CHARS_PER_TOKEN);
  if (atLeast > contextLength) throw new PromptTooLongError(atLeast, contextLength);
}

/** True when the request asks for thinking text to be omitted (signature only). */
export function thinkingOmitted(req: { thinking?: { display?: string } }): boolean {
  return req.thinking?.display === "omitted";
}
