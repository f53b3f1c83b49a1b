/**
 * Token counting against an upstream: vLLM's chat-aware `/tokenize`, llama-server's
 * `/apply-template` + `/tokenize`, else a clearly labelled estimate (characters / 4).
 */
import type { PromptInput } from "../engine/types";
import { toOpenAIMessage } from "./translate";

/** Where a count came from ("engine": a local engine's own tokenizer); `exact` is false only for the estimate. */
export type TokenCountSource = "vllm" | "llama-server" | "engine" | "estimate";

/** A token count and how much to trust it. */
export interface TokenCount {
  count: number;
  exact: boolean;
  source: TokenCountSource;
}

/** POST a JSON body to a path on the upstream root; resolves to the response (any status). */
export type UpstreamPost = (path: string, body: unknown) => Promise<Response>;

type Strategy = "probe" | "vllm" | "llama-server" | "estimate";

/** Rough count: ~4 characters per token plus a few template tokens per message. */
export function estimateTokens(input: PromptInput): number {
  let chars = 0;
  for (const m of input.messages) {
    chars += m.content.length + (m.reasoning_content?.length ?? 0);
    for (const c of m.tool_calls ?? []) chars += c.function.name.length + JSON.stringify(c.function.arguments).length;
  }
  if (input.tools?.length) chars += JSON.stringify(input.tools).length;
  return Math.ceil(chars / 4) + 4 * input.messages.length + 2;
}

/** Remembers which method the upstream supports after the first call. */
export class UpstreamTokenCounter {
  private strategy: Strategy = "probe";

  constructor(
    private readonly post: UpstreamPost,
    private readonly onWarn: (msg: string) => void = () => {},
  ) {}

  /** The method settled on so far ("probe" until the first successful call). */
  method(): Strategy {
    return this.strategy;
  }

  async count(input: PromptInput, model: string | undefined): Promise<TokenCount> {
    const estimate = (): TokenCount => ({ count: estimateTokens(input), exact: false, source: "estimate" });
    try {
      if (this.strategy === "probe" || this.strategy === "vllm") {
        const r = await this.vllm(input, model);
        if (r) return r;
      }
      if (this.strategy === "probe" || this.strategy === "llama-server") {
        const r = await this.llama(input);
        if (r) return r;
      }
    } catch (e) {
      // Upstream unreachable right now: answer with an estimate, decide the method later.
      this.onWarn(`token count fell back to an estimate: ${e instanceof Error ? e.message : String(e)}`);
      return estimate();
    }
    if (this.strategy === "probe") this.onWarn("upstream has no tokenizer endpoint; token counts are estimates");
    this.strategy = "estimate";
    return estimate();
  }

  /** vLLM (and SGLang builds with it): POST /tokenize {model, messages} -> {count}. */
  private async vllm(input: PromptInput, model: string | undefined): Promise<TokenCount | null> {
    const body: Record<string, unknown> = {
      ...(model !== undefined ? { model } : {}),
      messages: input.messages.map(toOpenAIMessage),
      // A prefill is counted as the turn it continues, as generation renders it.
      ...(input.continueFinal ? { continue_final_message: true, add_generation_prompt: false } : { add_generation_prompt: true }),
    };
    if (input.tools?.length) body.tools = input.tools;
    if (input.enableThinking !== undefined) body.chat_template_kwargs = { enable_thinking: input.enableThinking };
    const res = await this.post("/tokenize", body);
    if (!res.ok) {
      await res.body?.cancel();
      if (this.strategy === "vllm") throw new Error(`/tokenize answered ${res.status}`);
      return null;
    }
    const j = (await res.json().catch(() => null)) as { count?: unknown } | null;
    if (typeof j?.count !== "number") return null; // llama-server answers {tokens: []} to this body
    this.strategy = "vllm";
    return { count: j.count, exact: true, source: "vllm" };
  }

  /** llama-server: render with the server's own template, then tokenize the text. */
  private async llama(input: PromptInput): Promise<TokenCount | null> {
    const body: Record<string, unknown> = { messages: input.messages.map(toOpenAIMessage) };
    if (input.tools?.length) body.tools = input.tools;
    const tpl = await this.post("/apply-template", body);
    if (!tpl.ok) {
      await tpl.body?.cancel();
      if (this.strategy === "llama-server") throw new Error(`/apply-template answered ${tpl.status}`);
      return null;
    }
    const prompt = ((await tpl.json().catch(() => null)) as { prompt?: unknown } | null)?.prompt;
    if (typeof prompt !== "string") return null;
    // The rendered template already carries BOS and friends as text: do not add them again.
    const tok = await this.post("/tokenize", { content: prompt, add_special: false, parse_special: true });
    if (!tok.ok) {
      await tok.body?.cancel();
      return null;
    }
    const tokens = ((await tok.json().catch(() => null)) as { tokens?: unknown } | null)?.tokens;
    if (!Array.isArray(tokens)) return null;
    this.strategy = "llama-server";
    return { count: tokens.length, exact: true, source: "llama-server" };
  }
}
