/**
 * TypeBox models of the Anthropic Messages API, used for validation and for Swagger.
 * Requests are permissive on purpose: unknown fields and beta features
 * (cache_control, context_management, output_config, strict, defer_loading...) pass.
 */
import { DefaultErrorFunction, type ErrorFunctionParameter, SetErrorFunction, type ValueError, ValueErrorType } from "@sinclair/typebox/errors";
import { t, type Static } from "elysia";

const open = { additionalProperties: true } as const;

type Variant = { type?: string; properties?: { type?: { const?: unknown } } };

// The variant the value means: the one whose `type` literal it names, else the only one of its JSON type.
function chosenVariant(variants: readonly Variant[], value: unknown): number {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const tag = (value as { type?: unknown }).type;
    const i = variants.findIndex((v) => v.properties?.type?.const !== undefined && v.properties.type.const === tag);
    if (i >= 0) return i;
  }
  const json = Array.isArray(value) ? "array" : value === null ? "null" : typeof value;
  const same = variants.flatMap((v, i) => (v.type === json ? [i] : []));
  return same.length === 1 ? same[0]! : -1;
}

// Leaf errors found for union errors, by their `errors` array (sub-iterators can be read once only).
const leafOfUnion = new WeakMap<object, { path: string; message: string }>();

// The innermost error under a union error, following the chosen variant at each level.
function innermost(e: ErrorFunctionParameter): { path: string; message: string } | undefined {
  const variants = (e.schema as { anyOf?: Variant[] }).anyOf ?? [];
  const i = chosenVariant(variants, e.value);
  const first: ValueError | undefined = i >= 0 ? e.errors[i]?.First() : undefined;
  if (!first) return undefined;
  return (first.type === ValueErrorType.Union && leafOfUnion.get(first.errors)) || first;
}

// For a union error: "<relative.path>: <message>" of the field that failed, or undefined.
function unionErrorMessage(e: ErrorFunctionParameter): string | undefined {
  if (e.errorType !== ValueErrorType.Union) return undefined;
  const leaf = innermost(e);
  if (!leaf) return undefined;
  leafOfUnion.set(e.errors, leaf);
  const rel = leaf.path.slice(e.path.length).replace(/^\//, "").replaceAll("/", ".");
  return rel ? `${rel}: ${leaf.message}` : leaf.message;
}

// TypeBox says only "Expected union value" for a bad content block; name the block and the field.
SetErrorFunction((e) => {
  const own = (e.schema as { errorMessage?: unknown }).errorMessage;
  if (typeof own === "string") return own;
  return unionErrorMessage(e) ?? DefaultErrorFunction(e);
});

// ---------------------------------------------------------------- request blocks

export const TextBlockParam = t.Object(
  { type: t.Literal("text"), text: t.String() },
  { ...open, title: "TextBlockParam", description: "Text. cache_control and citations are accepted and ignored." },
);

export const ImageBlockParam = t.Object(
  { type: t.Literal("image"), source: t.Object({ type: t.String() }, open) },
  { ...open, title: "ImageBlockParam", description: "An image. Refused with 400 unless the model supports vision." },
);

// Elysia's normalizer turns an array or a string into an object before checking a plain Record;
// it leaves an Intersect alone, so `"input": []` or `"input": "x"` is refused as Anthropic refuses it.
const INPUT_NOT_OBJECT = "tool_use input must be a JSON object";
const ToolInput = t.Intersect(
  [t.Record(t.String(), t.Unknown(), { errorMessage: INPUT_NOT_OBJECT }), t.Not(t.Array(t.Unknown()), { errorMessage: INPUT_NOT_OBJECT })],
  { errorMessage: INPUT_NOT_OBJECT, description: "The call's arguments: a JSON object (an array or a string is refused)." },
);

export const ToolUseBlockParam = t.Object(
  { type: t.Literal("tool_use"), id: t.String(), name: t.String(), input: ToolInput },
  { ...open, title: "ToolUseBlockParam", description: "A tool call the assistant made earlier." },
);

const KNOWN_BLOCK_TYPES = ["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"];

/** Any other block type (documents, server tools, tool_reference, betas): accepted, mostly ignored. */
export const OtherBlockParam = t.Object(
  { type: t.String({ pattern: `^(?!(${KNOWN_BLOCK_TYPES.join("|")})$).+$` }) },
  {
    ...open,
    title: "OtherBlockParam",
    description: "Block types this server does not model (documents, server tools, beta features); ignored.",
  },
);

export const ToolResultBlockParam = t.Object(
  {
    type: t.Literal("tool_result"),
    tool_use_id: t.String(),
    content: t.Optional(t.Union([t.String(), t.Array(t.Union([TextBlockParam, ImageBlockParam, OtherBlockParam]))])),
    is_error: t.Optional(t.Boolean()),
  },
  { ...open, title: "ToolResultBlockParam", description: "The result of a tool call, sent in a user turn." },
);

export const ThinkingBlockParam = t.Object(
  { type: t.Literal("thinking"), thinking: t.String(), signature: t.Optional(t.String()) },
  { ...open, title: "ThinkingBlockParam", description: "Earlier reasoning; kept as reasoning_content in history." },
);

export const RedactedThinkingBlockParam = t.Object(
  { type: t.Literal("redacted_thinking"), data: t.String() },
  { ...open, title: "RedactedThinkingBlockParam", description: "Opaque reasoning; ignored." },
);

export const ContentBlockParam = t.Union(
  [
    TextBlockParam,
    ImageBlockParam,
    ToolUseBlockParam,
    ToolResultBlockParam,
    ThinkingBlockParam,
    RedactedThinkingBlockParam,
    OtherBlockParam,
  ],
  { title: "ContentBlockParam" },
);

export const MessageParam = t.Object(
  {
    role: t.Union([t.Literal("user"), t.Literal("assistant"), t.Literal("system")], {
      description: "system entries inside messages are accepted (Claude Code sends them) and rendered in place.",
    }),
    content: t.Union([t.String(), t.Array(ContentBlockParam)]),
  },
  { ...open, title: "MessageParam" },
);

export const SystemParam = t.Union([t.String(), t.Array(TextBlockParam)], {
  title: "SystemParam",
  description: "A string or text blocks. A leading x-anthropic-billing-header block is dropped.",
});

export const ToolParam = t.Object(
  {
    name: t.String({ minLength: 1 }),
    description: t.Optional(t.String()),
    input_schema: t.Optional(t.Record(t.String(), t.Unknown(), { description: "JSON Schema of the input." })),
  },
  {
    ...open,
    title: "ToolParam",
    description: "A tool. Extra fields (type, strict, defer_loading, cache_control) are accepted and ignored.",
  },
);

export const ToolChoiceParam = t.Object(
  {
    type: t.Union([t.Literal("auto"), t.Literal("any"), t.Literal("tool"), t.Literal("none")]),
    name: t.Optional(t.String()),
    disable_parallel_tool_use: t.Optional(t.Boolean()),
  },
  { ...open, title: "ToolChoiceParam", description: "auto, any (must call a tool), tool (must call `name`) or none." },
);

export const ThinkingConfigParam = t.Object(
  {
    type: t.String({ description: '"enabled" or "adaptive" turn thinking on; "disabled" turns it off.' }),
    budget_tokens: t.Optional(t.Number()),
    display: t.Optional(t.String({ description: '"omitted" returns thinking blocks without their text.' })),
  },
  { ...open, title: "ThinkingConfigParam" },
);

const promptFields = {
  model: t.String({ minLength: 1, description: "Any name; claude-* and unknown names map to the served model." }),
  messages: t.Array(MessageParam, { minItems: 1 }),
  system: t.Optional(SystemParam),
  tools: t.Optional(t.Array(ToolParam)),
  tool_choice: t.Optional(ToolChoiceParam),
  thinking: t.Optional(ThinkingConfigParam),
};

export const MessagesRequest = t.Object(
  {
    ...promptFields,
    // Elysia's t.Integer accepts numeric strings; Anthropic answers 400 to `"max_tokens": "10"`.
    max_tokens: t.Number({ minimum: 1, multipleOf: 1, description: "An integer; clamped to what the context can hold." }),
    stop_sequences: t.Optional(t.Array(t.String())),
    stream: t.Optional(t.Boolean()),
    temperature: t.Optional(t.Number({ minimum: 0, maximum: 2 })),
    top_p: t.Optional(t.Number({ minimum: 0, maximum: 1 })),
    top_k: t.Optional(t.Number({ minimum: 0, multipleOf: 1 })),
    metadata: t.Optional(t.Object({}, open)),
  },
  {
    ...open,
    title: "MessagesRequest",
    description: "Anthropic Messages API request. Unknown fields and beta features are accepted and ignored.",
  },
);

export const CountTokensRequest = t.Object(promptFields, { ...open, title: "CountTokensRequest" });

export const MessagesQuery = t.Object(
  { beta: t.Optional(t.String({ description: "Claude Code sends ?beta=true; accepted and ignored." })) },
  open,
);

// ---------------------------------------------------------------- responses

export const Usage = t.Object(
  {
    input_tokens: t.Integer({ description: "Prompt tokens not read from the prefix cache." }),
    output_tokens: t.Integer(),
    cache_read_input_tokens: t.Integer({ description: "Prompt tokens reused from the prefix cache." }),
    cache_creation_input_tokens: t.Integer(),
  },
  { title: "Usage" },
);

export const TextBlock = t.Object({ type: t.Literal("text"), text: t.String() }, { title: "TextBlock" });
export const ThinkingBlock = t.Object(
  { type: t.Literal("thinking"), thinking: t.String(), signature: t.String() },
  { title: "ThinkingBlock" },
);
export const ToolUseBlock = t.Object(
  { type: t.Literal("tool_use"), id: t.String(), name: t.String(), input: t.Record(t.String(), t.Unknown()) },
  { title: "ToolUseBlock" },
);
export const ContentBlock = t.Union([TextBlock, ThinkingBlock, ToolUseBlock], { title: "ContentBlock" });

export const StopReason = t.Union(
  [t.Literal("end_turn"), t.Literal("max_tokens"), t.Literal("stop_sequence"), t.Literal("tool_use")],
  { title: "StopReason" },
);

export const Message = t.Object(
  {
    id: t.String({ description: "msg_..." }),
    type: t.Literal("message"),
    role: t.Literal("assistant"),
    model: t.String({ description: "Echoes the model name the client asked for." }),
    content: t.Array(ContentBlock),
    stop_reason: t.Union([StopReason, t.Null()]),
    stop_sequence: t.Union([t.String(), t.Null()]),
    usage: Usage,
  },
  { title: "Message", description: "A complete (non-streaming) answer." },
);

export const ErrorResponse = t.Object(
  {
    type: t.Literal("error"),
    error: t.Object({
      type: t.String({ description: "invalid_request_error, authentication_error, overloaded_error, ..." }),
      message: t.String(),
    }),
    request_id: t.Union([t.String(), t.Null()]),
  },
  { title: "ErrorResponse", description: "Every error, with the request-id header set as well." },
);

export const StreamEvent = t.Object(
  {
    type: t.Union(
      [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
      ].map((x) => t.Literal(x)),
    ),
  },
  {
    ...open,
    title: "StreamEvent",
    description:
      "One SSE `data:` payload; the `event:` line repeats its type. Order: message_start, ping*, " +
      "(content_block_start, content_block_delta*, content_block_stop)*, message_delta, message_stop. " +
      "Deltas: text_delta, thinking_delta, signature_delta, input_json_delta. Errors after the start: event error.",
  },
);

export const CountTokensResponse = t.Object(
  { input_tokens: t.Integer({ description: "Exact, from the model's tokenizer and chat template." }) },
  { title: "CountTokensResponse" },
);

export const ModelInfo = t.Object(
  {
    type: t.Literal("model"),
    id: t.String(),
    display_name: t.String(),
    created_at: t.String({ description: "RFC 3339" }),
  },
  { title: "ModelInfo" },
);

export const ModelList = t.Object(
  {
    data: t.Array(ModelInfo),
    has_more: t.Boolean(),
    first_id: t.Union([t.String(), t.Null()]),
    last_id: t.Union([t.String(), t.Null()]),
  },
  { title: "ModelList" },
);

/** Named models for Swagger's components. */
export const anthropicModels = {
  MessagesRequest,
  CountTokensRequest,
  Message,
  StreamEvent,
  ErrorResponse,
  CountTokensResponse,
  ModelInfo,
  ModelList,
};

export type MessagesRequestT = Static<typeof MessagesRequest>;
export type CountTokensRequestT = Static<typeof CountTokensRequest>;
export type MessageParamT = Static<typeof MessageParam>;
export type ContentBlockParamT = Static<typeof ContentBlockParam>;
export type ToolParamT = Static<typeof ToolParam>;
export type MessageT = Static<typeof Message>;
export type ContentBlockT = Static<typeof ContentBlock>;
export type UsageT = Static<typeof Usage>;
export type StopReasonT = Static<typeof StopReason>;
export type ModelInfoT = Static<typeof ModelInfo>;
export type ModelListT = Static<typeof ModelList>;
