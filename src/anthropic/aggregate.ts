/**
 * Non-streaming answers: the same engine events folded into one Message. Built on the
 * stream converter so that JSON and SSE answers cannot drift apart.
 */
import type { EngineEvent } from "../engine/types";
import { ServiceUnavailableError } from "./errors";
import type { ContentBlockT, MessageT, StopReasonT, UsageT } from "./schemas";
import { CANCELLED_MESSAGE, type SseEvent, StreamConverter, type StreamConverterOptions } from "./stream";

type Draft = ContentBlockT & { partialJson?: string };

// The payload fields of Anthropic stream events that the accumulator reads.
interface EventData {
  type: string;
  index?: number;
  message?: MessageT;
  content_block?: Draft;
  delta?: {
    type?: string;
    text?: string;
    thinking?: string;
    signature?: string;
    partial_json?: string;
    stop_reason?: StopReasonT;
    stop_sequence?: string | null;
  };
  usage?: Partial<UsageT>;
}

/** Applies Anthropic stream events to a Message, as the SDKs do. Also used by tests on wire output. */
export class MessageAccumulator {
  private message: MessageT | null = null;
  private blocks: Draft[] = [];

  /** Applies one event; events this class does not model (ping, error) are ignored. */
  apply(ev: SseEvent): void {
    const d = ev.data as EventData;
    const i = d.index ?? -1;
    switch (d.type) {
      case "message_start":
        if (d.message) this.message = structuredClone(d.message);
        break;
      case "content_block_start":
        if (d.content_block) this.blocks[i] = structuredClone(d.content_block);
        break;
      case "content_block_delta":
        if (d.delta) this.delta(this.blocks[i], d.delta);
        break;
      case "content_block_stop": {
        const b = this.blocks[i];
        if (b?.type === "tool_use" && b.partialJson !== undefined) {
          b.input = b.partialJson ? (JSON.parse(b.partialJson) as Record<string, unknown>) : {};
          delete b.partialJson;
        }
        break;
      }
      case "message_delta":
        if (!this.message) break;
        this.message.stop_reason = d.delta?.stop_reason ?? null;
        this.message.stop_sequence = d.delta?.stop_sequence ?? null;
        this.message.usage = { ...this.message.usage, ...d.usage };
        break;
    }
  }

  private delta(block: Draft | undefined, delta: NonNullable<EventData["delta"]>): void {
    if (!block) return;
    if (delta.type === "text_delta" && block.type === "text") block.text += delta.text ?? "";
    else if (delta.type === "thinking_delta" && block.type === "thinking") block.thinking += delta.thinking ?? "";
    else if (delta.type === "signature_delta" && block.type === "thinking") block.signature = delta.signature ?? "";
    else if (delta.type === "input_json_delta" && block.type === "tool_use")
      block.partialJson = (block.partialJson ?? "") + (delta.partial_json ?? "");
  }

  /** The message so far (content in index order). Throws if message_start never came. */
  result(): MessageT {
    if (!this.message) throw new Error("no message_start event");
    return { ...this.message, content: this.blocks.filter(Boolean) };
  }
}

/** The converter's options, and the retry-after of the 503 for a cancelled generation. */
export interface AggregateOptions extends StreamConverterOptions {
  cancelledRetryAfterSeconds: number;
}

/** Folds engine events into a complete Message; a cancelled generation throws a 503 instead. */
export async function aggregate(events: AsyncIterable<EngineEvent>, opts: AggregateOptions): Promise<MessageT> {
  const conv = new StreamConverter(opts);
  const acc = new MessageAccumulator();
  for (const e of conv.start()) acc.apply(e);
  for await (const ev of events) {
    for (const e of conv.push(ev)) acc.apply(e);
    if (conv.isFinished) break;
  }
  if (!conv.isFinished) throw new Error("generation ended without a done event");
  return complete(conv, acc, opts.cancelledRetryAfterSeconds);
}

// A cancelled generation is a fragment: a retryable 503, never a Message with end_turn.
function complete(conv: StreamConverter, acc: MessageAccumulator, retryAfterSeconds: number): MessageT {
  if (conv.isCancelled) throw new ServiceUnavailableError(CANCELLED_MESSAGE, retryAfterSeconds);
  return acc.result();
}

/** Synchronous variant for a list of events (tests fold scripted events with it). */
export function aggregateEvents(events: readonly EngineEvent[], opts: AggregateOptions): MessageT {
  const conv = new StreamConverter(opts);
  const acc = new MessageAccumulator();
  for (const e of conv.start()) acc.apply(e);
  for (const ev of events) for (const e of conv.push(ev)) acc.apply(e);
  return complete(conv, acc, opts.cancelledRetryAfterSeconds);
}
