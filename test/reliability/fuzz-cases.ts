/**
 * Generated bad (and some good) requests for /v1/messages and count_tokens, each with what
 * the server must answer: "reject" (an Anthropic-shaped 4xx), "accept" (a 200 of the right
 * shape) or "either" (a 200 or a shaped 4xx; the server is lenient there on purpose).
 *
 * Role order: Anthropic merges consecutive same-role turns and accepts an assistant turn first
 * (and a final assistant turn as a prefill); Pensieve also accepts role "system" in messages.
 * So any order of user/assistant/system is "accept"; any other role string is "reject".
 */
import fc from "fast-check";

export const MESSAGES = "/v1/messages";
export const COUNT = "/v1/messages/count_tokens";
export type Route = typeof MESSAGES | typeof COUNT;
export type Expect = "reject" | "accept" | "either";

export interface FuzzCase {
  kind: string;
  path: Route;
  /** null: no content-type header. */
  contentType: string | null;
  body: string | Uint8Array<ArrayBuffer>;
  expect: Expect;
  /** For accepted /v1/messages: the engine must see max_tokens clamped to the context. */
  maxTokens?: number;
  stream?: boolean;
}

export interface CaseOptions {
  /** Largest max_tokens in accepted requests (the real server really generates them). */
  maxTokensCap: number;
  /** Include accepted requests with huge max_tokens (clamped); in process only. */
  hugeMaxTokens: boolean;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Req = Record<string, any>;

const JSON_TYPE = "application/json";
const text = fc.string({ maxLength: 24, unit: "grapheme" });
const asciiText = fc.string({ maxLength: 16 });
const toolId = fc.stringMatching(/^toolu_[A-Za-z0-9]{6,10}$/);
const toolName = fc.stringMatching(/^[a-z][a-z_]{0,11}$/);
const textBlock = text.map((t) => ({ type: "text", text: t }));
const content = fc.oneof(text, fc.array(textBlock, { minLength: 1, maxLength: 3 }));
const validRole = fc.constantFrom("user", "assistant", "system");
const plainMessage = fc.record({ role: validRole, content });
const smallJson = fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>;

/** A tool call and its result, correctly paired: [assistant tool_use, user tool_result]. */
const toolExchange = fc
  .tuple(toolId, toolName, fc.dictionary(asciiText, smallJson, { maxKeys: 3 }), fc.oneof(text, fc.array(textBlock, { maxLength: 2 })), fc.boolean())
  .map(([id, name, input, result, isError]) => [
    { role: "assistant", content: [{ type: "tool_use", id, name, input }] },
    { role: "user", content: [{ type: "tool_result", tool_use_id: id, content: result, ...(isError ? { is_error: true } : {}) }] },
  ]);

const conversation = fc
  .array(fc.oneof({ weight: 4, arbitrary: plainMessage.map((m) => [m]) }, { weight: 1, arbitrary: toolExchange }), { minLength: 1, maxLength: 5 })
  .map((parts) => parts.flat());

const tool = fc.record({ name: toolName, description: text, input_schema: fc.constant({ type: "object", properties: {} }) });

function validRequest(route: Route, opts: CaseOptions): fc.Arbitrary<Req> {
  const prompt = {
    model: fc.oneof(fc.constantFrom("claude-sonnet-4-5", "claude-3-5-haiku-latest", "tiny"), fc.string({ minLength: 1, maxLength: 20 })),
    messages: conversation,
    system: fc.oneof(text, fc.array(textBlock, { maxLength: 2 })),
    tools: fc.array(tool, { maxLength: 2 }),
  };
  if (route === COUNT) return fc.record(prompt, { requiredKeys: ["model", "messages"] });
  return fc.record(
    {
      ...prompt,
      max_tokens: fc.integer({ min: 1, max: opts.maxTokensCap }),
      stream: fc.boolean(),
      temperature: fc.double({ min: 0, max: 2, noNaN: true }),
      top_p: fc.double({ min: 0, max: 1, noNaN: true }),
      top_k: fc.integer({ min: 0, max: 50 }),
      stop_sequences: fc.array(asciiText, { maxLength: 2 }),
    },
    { requiredKeys: ["model", "messages", "max_tokens"] },
  );
}

const route = fc.constantFrom<Route>(MESSAGES, MESSAGES, COUNT);
const clone = <T>(v: T): T => structuredClone(v);

function jsonCase(kind: string, path: Route, req: unknown, expect: Expect, contentType: string | null = JSON_TYPE): FuzzCase {
  const c: FuzzCase = { kind, path, contentType, body: JSON.stringify(req), expect };
  if (path === MESSAGES && req && typeof req === "object") {
    const r = req as Req;
    if (typeof r.max_tokens === "number") c.maxTokens = r.max_tokens;
    if (r.stream === true) c.stream = true;
  }
  return c;
}

/** A route and a valid request for it. */
const routed = (opts: CaseOptions) => route.chain((p) => validRequest(p, opts).map((req) => ({ path: p, req })));
const messagesOnly = (opts: CaseOptions) => validRequest(MESSAGES, opts);

// ---------------------------------------------------------------- raw-body cases

const malformedJson = (opts: CaseOptions) =>
  fc.oneof(
    fc.tuple(route, fc.oneof(fc.string(), fc.string({ unit: "binary", maxLength: 40 }))).map(([p, s]) => ({ p, s })),
    // A valid request cut short: never valid JSON.
    routed(opts).chain(({ path, req }) => {
      const s = JSON.stringify(req);
      return fc.integer({ min: 0, max: s.length - 1 }).map((n) => ({ p: path, s: s.slice(0, n) }));
    }),
    routed(opts).chain(({ path, req }) =>
      fc.constantFrom("}", "]", ",", "x", "{}", "\u0000", "//c", "'").map((junk) => ({ p: path, s: JSON.stringify(req) + junk })),
    ),
    fc
      .tuple(route, fc.constantFrom("{", "[", "NaN", "undefined", "{'model':'x'}", '{"model":}', '{"a":1,}', '"\\u12"', "{}}", "\ufeff\ufeff{}", "[1,2", "{\"max_tokens\":1e400}"))
      .map(([p, s]) => ({ p, s })),
  ).map(({ p, s }): FuzzCase => ({ kind: "malformed-json", path: p, contentType: JSON_TYPE, body: s, expect: "reject" }));

// Any JSON value that is not a request (fc.jsonValue never builds a complete valid one).
const jsonNotRequest = () =>
  fc.tuple(route, fc.jsonValue({ maxDepth: 4 })).map(([p, v]): FuzzCase => ({ kind: "json-not-a-request", path: p, contentType: JSON_TYPE, body: JSON.stringify(v), expect: "reject" }));

const BAD_UTF8: number[][] = [[0xff], [0xfe], [0x80], [0xc0, 0x80], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc3, 0x28]];

const invalidUtf8 = (opts: CaseOptions) =>
  routed(opts).chain(({ path, req }) => {
    const bytes = new TextEncoder().encode(JSON.stringify(req));
    return fc.tuple(fc.integer({ min: 0, max: bytes.length }), fc.constantFrom(...BAD_UTF8)).map(([at, bad]): FuzzCase => {
      const out = new Uint8Array(bytes.length + bad.length);
      out.set(bytes.subarray(0, at), 0);
      out.set(bad, at);
      out.set(bytes.subarray(at), at + bad.length);
      return { kind: "invalid-utf8", path, contentType: JSON_TYPE, body: out, expect: "reject" };
    });
  });

const NON_JSON_TYPES = [null, "text/plain", "text/html", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml", "application/octet-stream", "text/json", "image/png", "application/javascript"];
const JSON_TYPES = ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.anthropic+json"];

const contentTypes = (opts: CaseOptions) =>
  fc.oneof(
    fc.tuple(routed(opts), fc.constantFrom(...NON_JSON_TYPES)).map(([{ path, req }, ct]) => jsonCase("wrong-content-type", path, req, "reject", ct)),
    fc.tuple(routed(opts), fc.constantFrom(...JSON_TYPES)).map(([{ path, req }, ct]) => jsonCase("json-content-type", path, req, "accept", ct)),
  );

// ---------------------------------------------------------------- structural mutations

/** Paths (into a request built by validRequest) of required fields, with the route they apply to. */
function requiredPaths(path: Route, req: Req): (string | number)[][] {
  const out: (string | number)[][] = [["model"], ["messages"]];
  if (path === MESSAGES) out.push(["max_tokens"]);
  req.messages.forEach((m: Req, i: number) => {
    out.push(["messages", i, "role"], ["messages", i, "content"]);
    if (Array.isArray(m.content))
      m.content.forEach((b: Req, j: number) => {
        out.push(["messages", i, "content", j, "type"]);
        if (b.type === "text") out.push(["messages", i, "content", j, "text"]);
        if (b.type === "tool_use") out.push(["messages", i, "content", j, "id"], ["messages", i, "content", j, "name"], ["messages", i, "content", j, "input"]);
        if (b.type === "tool_result") out.push(["messages", i, "content", j, "tool_use_id"]);
      });
  });
  return out;
}

function parentOf(obj: Req, path: (string | number)[]): [any, string | number] {
  let cur: any = obj;
  for (const k of path.slice(0, -1)) cur = cur[k];
  return [cur, path[path.length - 1]!];
}

const missingField = (opts: CaseOptions) =>
  routed(opts).chain(({ path, req }) => {
    const paths = requiredPaths(path, req);
    return fc.constantFrom(...paths).map((p): FuzzCase => {
      const r = clone(req);
      const [parent, key] = parentOf(r, p);
      if (Array.isArray(parent)) parent.splice(key as number, 1, {});
      else delete parent[key];
      return jsonCase(`missing:${p.filter((x) => typeof x === "string").join(".")}`, path, r, "reject");
    });
  });

type Kind = "string" | "integer" | "number" | "boolean" | "array" | "object" | "null";
const kindOf = (v: unknown): Kind =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" ? (Number.isInteger(v) ? "integer" : "number") : (typeof v as Kind);

/**
 * Each field, the JSON kinds it takes, and the wrong kinds the server is known to let
 * through (Elysia coerces them; see the report). Wrong kinds outside `lenient` must get a 4xx.
 */
const FIELD_TYPES: { path: (r: Req) => (string | number)[] | null; ok: Kind[]; lenient?: Kind[]; route?: Route }[] = [
  { path: () => ["model"], ok: ["string"] },
  { path: () => ["max_tokens"], ok: ["integer"], lenient: ["string"], route: MESSAGES },
  { path: () => ["messages"], ok: ["array"] },
  { path: () => ["messages", 0], ok: ["object"] },
  { path: () => ["messages", 0, "role"], ok: [] },
  { path: () => ["messages", 0, "content"], ok: ["string", "array"] },
  { path: (r) => (Array.isArray(r.messages[0].content) ? ["messages", 0, "content", 0] : null), ok: ["object"] },
  { path: (r) => (Array.isArray(r.messages[0].content) ? ["messages", 0, "content", 0, "type"] : null), ok: [] },
  { path: () => ["system"], ok: ["string", "array"] },
  { path: () => ["stream"], ok: ["boolean"], route: MESSAGES },
  { path: () => ["temperature"], ok: ["integer", "number"], route: MESSAGES },
  { path: () => ["top_p"], ok: ["integer", "number"], route: MESSAGES },
  { path: () => ["top_k"], ok: ["integer"], lenient: ["string"], route: MESSAGES },
  { path: () => ["stop_sequences"], ok: ["array"], route: MESSAGES },
  { path: () => ["tools"], ok: ["array"], lenient: ["string"] },
  { path: () => ["tool_choice"], ok: ["object"] },
  { path: () => ["thinking"], ok: ["object"] },
];

const wrongType = (opts: CaseOptions) =>
  fc
    .tuple(routed(opts), fc.constantFrom(...FIELD_TYPES), fc.jsonValue({ maxDepth: 2 }))
    .filter(([{ path }, f]) => !f.route || f.route === path)
    .map(([{ path, req }, f, value]): FuzzCase | null => {
      const p = f.path(req);
      if (!p) return null;
      const kind = kindOf(value);
      // Numbers fit "number" fields whether or not they are integers.
      if (f.ok.includes(kind) || (kind === "integer" && f.ok.includes("number"))) return null;
      // role and block type take string enums; a string may be a valid value.
      if (f.ok.length === 0 && kind === "string") return null;
      const r = clone(req);
      const [parent, key] = parentOf(r, p);
      parent[key] = value;
      const name = p.filter((x) => typeof x === "string").join(".");
      return jsonCase(`wrong-type:${name}`, path, r, f.lenient?.includes(kind) ? "either" : "reject");
    })
    .filter((c): c is FuzzCase => c !== null);

const KNOWN_TOP = new Set(["model", "messages", "system", "tools", "tool_choice", "thinking", "max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata"]);
const extraKey = fc.oneof(asciiText, fc.constantFrom("__proto__", "constructor", "prototype", "toString", "cache_control", "context_management", "output_config", "betas"));

const extraFields = (opts: CaseOptions) =>
  fc
    .tuple(routed(opts), fc.dictionary(extraKey, smallJson, { minKeys: 1, maxKeys: 4 }), fc.constantFrom("top", "message", "block"))
    .map(([{ path, req }, extras, where]) => {
      const r = clone(req);
      let target: Req = r;
      if (where === "message") target = r.messages[r.messages.length - 1];
      if (where === "block") {
        const m = r.messages.find((x: Req) => Array.isArray(x.content) && x.content.length);
        if (m) target = m.content[0];
      }
      for (const [k, v] of Object.entries(extras)) {
        if (target === r && KNOWN_TOP.has(k)) continue;
        if (target !== r && ["role", "content", "type", "text", "id", "name", "input", "tool_use_id", "is_error"].includes(k)) continue;
        Object.defineProperty(target, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      return jsonCase(`extra-fields:${where}`, path, r, "accept");
    });

/** Prototype-pollution probe: a literal "__proto__" key in the JSON text (JSON.stringify drops it otherwise). */
const protoPollution = (opts: CaseOptions) =>
  routed(opts).map(({ path, req }): FuzzCase => {
    const s = JSON.stringify(req);
    const body = `{"__proto__":{"pensievePolluted":"yes"},"constructor":{"prototype":{"pensievePolluted":"yes"}},${s.slice(1)}`;
    return { ...jsonCase("proto-pollution", path, req, "accept"), body };
  });

function nest(depth: number, leaf: Json, asArray: boolean): Json {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = asArray ? [v] : { a: v };
  return v;
}

const deepNesting = (opts: CaseOptions) =>
  fc.oneof(
    // The whole body: far past the limit, arrays or objects, as raw text (no recursion here).
    fc.tuple(route, fc.integer({ min: 300, max: 50_000 }), fc.boolean()).map(([p, depth, arr]): FuzzCase => ({
      kind: "deep:raw",
      path: p,
      contentType: JSON_TYPE,
      body: arr ? "[".repeat(depth) + "]".repeat(depth) : '{"a":'.repeat(depth) + "1" + "}".repeat(depth),
      expect: "reject",
    })),
    // Inside a valid request, past the 256-level limit.
    fc.tuple(routed(opts), fc.integer({ min: 260, max: 3000 }), fc.boolean(), fc.constantFrom("metadata", "tool_input")).map(([{ path, req }, depth, arr, where]) =>
      jsonCase(`deep:${where}`, path, withDeep(req, depth, arr, where), "reject"),
    ),
    // Inside a valid request, well within the limit: accepted.
    fc.tuple(routed(opts), fc.integer({ min: 1, max: 200 }), fc.boolean(), fc.constantFrom("metadata", "tool_input")).map(([{ path, req }, depth, arr, where]) =>
      jsonCase(`shallow:${where}`, path, withDeep(req, depth, arr, where), "accept"),
    ),
  );

function withDeep(req: Req, depth: number, arr: boolean, where: string): Req {
  const r = clone(req);
  if (where === "metadata") r.metadata = { user_id: "u", deep: nest(depth, 1, arr) };
  else {
    const id = "toolu_deep01";
    r.messages = [
      { role: "user", content: "use the tool" },
      { role: "assistant", content: [{ type: "tool_use", id, name: "deep", input: { v: nest(depth, 1, arr) } }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: id, content: "ok" }] },
      ...r.messages,
    ];
  }
  return r;
}

const maxTokens = (opts: CaseOptions) => {
  const bad = fc.oneof(
    fc.integer({ min: -(2 ** 53), max: 0 }),
    fc.constant(-0),
    fc.double({ min: 0.0001, max: 1e6, noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)),
    fc.constantFrom("abc", "", "1.5", "-3", "ten"),
  );
  const cases = [fc.tuple(messagesOnly(opts), bad).map(([req, v]) => jsonCase("max_tokens:bad", MESSAGES, { ...req, max_tokens: v }, "reject"))];
  // Numbers that JSON.parse turns into Infinity, or huge literals.
  cases.push(
    fc.tuple(messagesOnly(opts), fc.constantFrom("1e400", "-1e400", "1.0000001", "-1")).map(([req, lit]) => ({
      ...jsonCase("max_tokens:literal", MESSAGES, req, "reject"),
      body: JSON.stringify({ ...req, max_tokens: 7 }).replace('"max_tokens":7', `"max_tokens":${lit}`),
      maxTokens: undefined,
    })),
  );
  if (opts.hugeMaxTokens)
    cases.push(
      fc.tuple(messagesOnly(opts), fc.constantFrom(10_000, 65_537, 2 ** 31, 2 ** 53 - 1, 1e20, 1e300)).map(([req, v]) =>
        jsonCase("max_tokens:huge", MESSAGES, { ...req, max_tokens: v }, "accept"),
      ),
    );
  return fc.oneof(...cases);
};

const emptyMessages = () =>
  fc.tuple(route, fc.boolean()).map(([p, withSystem]): FuzzCase => {
    const req: Req = { model: "claude-sonnet-4-5", messages: [] };
    if (p === MESSAGES) req.max_tokens = 16;
    if (withSystem) req.system = "You are terse.";
    return jsonCase("empty-messages", p, req, "reject");
  });

const roleOrder = (opts: CaseOptions) =>
  fc.tuple(routed(opts), fc.array(fc.record({ role: validRole, content }), { minLength: 1, maxLength: 6 })).map(([{ path, req }, msgs]) =>
    jsonCase(`roles:${msgs.map((m) => m.role[0]).join("")}`.slice(0, 14), path, { ...req, messages: msgs }, "accept"),
  );

const BAD_ROLES = ["tool", "function", "developer", "", "USER", "System", "human", "ai", "assistant ", "model"];
const badRole = (opts: CaseOptions) =>
  fc.tuple(routed(opts), fc.oneof(fc.constantFrom(...BAD_ROLES), asciiText.filter((s) => !["user", "assistant", "system"].includes(s)))).chain(([{ path, req }, role]) =>
    fc.integer({ min: 0, max: req.messages.length - 1 }).map((i) => {
      const r = clone(req);
      r.messages[i].role = role;
      return jsonCase("bad-role", path, r, "reject");
    }),
  );

const toolResults = (opts: CaseOptions) =>
  fc.oneof(
    // tool_result naming an id no earlier tool_use has.
    fc.tuple(routed(opts), toolId, fc.boolean()).map(([{ path, req }, id, withOther]) => {
      const r = clone(req);
      const prefix = withOther ? [{ role: "assistant", content: [{ type: "tool_use", id: `${id}_other`, name: "t", input: {} }] }] : [];
      r.messages = [...r.messages, ...prefix, { role: "user", content: [{ type: "text", text: "result:" }, { type: "tool_result", tool_use_id: id, content: "42" }] }];
      return jsonCase("tool_result:unknown-id", path, r, "reject");
    }),
    // The tool_use comes only after its result.
    fc.tuple(routed(opts), toolId).map(([{ path, req }, id]) => {
      const r = clone(req);
      r.messages = [
        { role: "user", content: [{ type: "tool_result", tool_use_id: id, content: "early" }] },
        { role: "assistant", content: [{ type: "tool_use", id, name: "t", input: {} }] },
        ...r.messages,
      ];
      return jsonCase("tool_result:before-use", path, r, "reject");
    }),
  );

const ranges = (opts: CaseOptions) =>
  fc
    .tuple(
      messagesOnly(opts),
      fc.oneof(
        fc.double({ min: -1e9, max: -1e-6, noNaN: true }).map((v) => ["temperature", v] as const),
        fc.double({ min: 2.000001, max: 1e9, noNaN: true }).map((v) => ["temperature", v] as const),
        fc.double({ min: -10, max: -1e-6, noNaN: true }).map((v) => ["top_p", v] as const),
        fc.double({ min: 1.000001, max: 10, noNaN: true }).map((v) => ["top_p", v] as const),
        fc.integer({ min: -1000, max: -1 }).map((v) => ["top_k", v] as const),
        fc.double({ min: 0.1, max: 100, noNaN: true }).filter((d) => !Number.isInteger(d)).map((v) => ["top_k", v] as const),
      ),
    )
    .map(([req, [field, v]]) => jsonCase(`range:${field}`, MESSAGES, { ...req, [field]: v }, "reject"));

const emptyStrings = (opts: CaseOptions) =>
  fc.tuple(routed(opts), fc.constantFrom("model", "tool_name", "image", "stop_non_string")).map(([{ path, req }, what]) => {
    const r = clone(req);
    if (what === "model") r.model = "";
    if (what === "tool_name") r.tools = [{ name: "", input_schema: { type: "object" } }];
    if (what === "image") r.messages = [...r.messages, { role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } }] }];
    if (what === "stop_non_string") {
      if (path === COUNT) return jsonCase("stop:count-ignores", path, { ...r, stop_sequences: [1, null] }, "accept");
      r.stop_sequences = ["ok", 1, null];
    }
    return jsonCase(`invalid:${what}`, path, r, "reject");
  });

/** Every generator, equally weighted. */
export function fuzzCase(opts: CaseOptions): fc.Arbitrary<FuzzCase> {
  return fc.oneof(
    malformedJson(opts),
    jsonNotRequest(),
    invalidUtf8(opts),
    contentTypes(opts),
    missingField(opts),
    wrongType(opts),
    extraFields(opts),
    protoPollution(opts),
    deepNesting(opts),
    maxTokens(opts),
    emptyMessages(),
    roleOrder(opts),
    badRole(opts),
    toolResults(opts),
    ranges(opts),
    emptyStrings(opts),
  );
}
