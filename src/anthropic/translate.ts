/**
 * Pure translation: an Anthropic request -> the engine's neutral chat dialect.
 * Rendering choices here (joins, order) are stable so that prefix reuse works turn to turn.
 */
import type { ChatMessage, ChatToolCall, GenerateRequest, PromptInput, ToolChoice, ToolSpec } from "../engine/types";
import { PromptTooLongError } from "../engine/errors";
import { InvalidRequestError } from "./errors";
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
}

type Block = ContentBlockParamT;
type TextB = { type: "text"; text: string };
type ToolUseB = { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };
type ToolResultB = { type: "tool_result"; tool_use_id: string; content?: string | Block[]; is_error?: boolean };
type ThinkingB = { type: "thinking"; thinking: string };

// The open "other" block (type: string) defeats TS narrowing on `type`; these guards restore it.
const isText = (b: Block): b is Block & TextB => b.type === "text";
const isToolUse = (b: Block): b is Block & ToolUseB => b.type === "tool_use";
const isToolResult = (b: Block): b is Block & ToolResultB => b.type === "tool_result";
const isThinking = (b: Block): b is Block & ThinkingB => b.type === "thinking";

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
  const blocks = system.filter((b, i) => !(i === 0 && b.text.startsWith(BILLING_HEADER_PREFIX)));
  const text = blocks.map((b) => b.text).join(BLOCK_JOIN);
  return text || null;
}

function toolResultText(block: ToolResultB, opts: TranslateOptions): string {
  const c = block.content;
  let text: string;
  if (c === undefined) text = "";
  else if (typeof c === "string") text = c;
  else {
    const parts: string[] = [];
    for (const b of c) {
      if (b.type === "image") throw imageError(opts);
      // tool_reference, search_result, documents: rendered as JSON so nothing is silently lost.
      parts.push(isText(b) ? b.text : JSON.stringify(b));
    }
    text = parts.join(BLOCK_JOIN);
  }
  return block.is_error ? `Error: ${text}` : text;
}

interface Ctx {
  opts: TranslateOptions;
  /** tool_use id -> tool name, from earlier assistant turns. */
  toolNames: Map<string, string>;
  out: ChatMessage[];
}

function pushMerged(ctx: Ctx, msg: ChatMessage): void {
  // Anthropic combines consecutive user (or assistant) turns into one; templates often need it.
  const last = ctx.out[ctx.out.length - 1];
  const mergeable = (m: ChatMessage) => (m.role === "user" || m.role === "assistant") && !m.tool_call_id;
  if (last && last.role === msg.role && mergeable(last) && mergeable(msg)) {
    last.content = [last.content, msg.content].filter(Boolean).join(BLOCK_JOIN);
    if (msg.tool_calls) last.tool_calls = [...(last.tool_calls ?? []), ...msg.tool_calls];
    if (msg.reasoning_content)
      last.reasoning_content = [last.reasoning_content, msg.reasoning_content].filter(Boolean).join(BLOCK_JOIN);
    return;
  }
  ctx.out.push(msg);
}

function blocksOf(m: MessageParamT): Block[] {
  return typeof m.content === "string" ? [{ type: "text", text: m.content }] : m.content;
}

function translateUser(ctx: Ctx, m: MessageParamT, index: number): void {
  let texts: string[] = [];
  const flush = () => {
    if (texts.length) pushMerged(ctx, { role: "user", content: texts.join(BLOCK_JOIN) });
    texts = [];
  };
  for (const b of blocksOf(m)) {
    if (isText(b)) texts.push(b.text);
    else if (b.type === "image") throw imageError(ctx.opts);
    else if (isToolResult(b)) {
      const name = ctx.toolNames.get(b.tool_use_id);
      if (name === undefined)
        throw new InvalidRequestError(
          `messages.${index}: unexpected tool_use_id found in tool_result blocks: ${b.tool_use_id}. ` +
            "Each tool_result block must have a corresponding tool_use block in a previous message.",
        );
      flush();
      ctx.out.push({ role: "tool", content: toolResultText(b, ctx.opts), tool_call_id: b.tool_use_id, name });
    }
    // tool_use/thinking in a user turn, and unmodelled block types, are ignored.
  }
  flush();
}

function translateAssistant(ctx: Ctx, m: MessageParamT): void {
  const texts: string[] = [];
  const reasoning: string[] = [];
  const calls: ChatToolCall[] = [];
  for (const b of blocksOf(m)) {
    if (isText(b)) texts.push(b.text);
    else if (isThinking(b)) reasoning.push(b.thinking);
    else if (isToolUse(b)) {
      ctx.toolNames.set(b.id, b.name);
      calls.push({ id: b.id, type: "function", function: { name: b.name, arguments: b.input } });
    } else if (b.type === "image") throw imageError(ctx.opts);
  }
  const msg: ChatMessage = { role: "assistant", content: texts.join(BLOCK_JOIN) };
  if (calls.length) msg.tool_calls = calls;
  if (reasoning.length) msg.reasoning_content = reasoning.join(BLOCK_JOIN);
  pushMerged(ctx, msg);
}

function translateSystemMessage(ctx: Ctx, m: MessageParamT): void {
  const texts: string[] = [];
  for (const b of blocksOf(m)) {
    if (isText(b)) texts.push(b.text);
    else if (b.type === "image") throw imageError(ctx.opts);
  }
  ctx.out.push({ role: "system", content: texts.join(BLOCK_JOIN) });
}

/** Anthropic tools -> function specs. Server tools without an input_schema are skipped. */
export function translateTools(tools: readonly ToolParamT[] | undefined): ToolSpec[] | undefined {
  if (!tools?.length) return undefined;
  const specs: ToolSpec[] = [];
  for (const tool of tools) {
    if (!tool.input_schema) continue;
    const fn: ToolSpec["function"] = { name: tool.name, parameters: tool.input_schema };
    if (tool.description !== undefined) fn.description = tool.description;
    specs.push({ type: "function", function: fn });
  }
  return specs.length ? specs : undefined;
}

/** System + messages + tools + thinking: what both generate and count_tokens render. */
export function toPromptInput(req: CountTokensRequestT, opts: TranslateOptions): PromptInput {
  const ctx: Ctx = { opts, toolNames: new Map(), out: [] };
  const system = systemText(req.system);
  if (system !== null) ctx.out.push({ role: "system", content: system });
  req.messages.forEach((m, i) => {
    if (m.role === "user") translateUser(ctx, m, i);
    else if (m.role === "assistant") translateAssistant(ctx, m);
    else translateSystemMessage(ctx, m);
  });
  const input: PromptInput = { model: opts.model, messages: ctx.out };
  if (opts.requestedModel) input.requestedModel = opts.requestedModel;
  const tools = translateTools(req.tools);
  if (tools) input.tools = tools;
  const thinking = req.thinking?.type;
  if (thinking === "enabled" || thinking === "adaptive") input.enableThinking = true;
  else if (thinking === "disabled") input.enableThinking = false;
  return input;
}

/** The full generation request; `requestId` correlates logs only. */
export function toGenerateRequest(req: MessagesRequestT, opts: TranslateOptions & { requestId: string }): GenerateRequest {
  const maxTokens = opts.contextLength ? Math.min(req.max_tokens, opts.contextLength) : req.max_tokens;
  const input = toPromptInput(req, opts);
  if (opts.contextLength) refuseHopeless(input, opts.contextLength);
  const out: GenerateRequest = { ...input, requestId: opts.requestId, maxTokens };
  // Anthropic samples at 1.0 unless told otherwise; say so, since upstream servers default to other values.
  out.temperature = req.temperature ?? 1;
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
