/**
 * Running fuzz cases: the seed (printed, replayable with PENSIEVE_FUZZ_SEED), the request for a
 * case, a printable label, and the judgement of an answer against what the case expects.
 */
import { COUNT, type FuzzCase } from "./fuzz-cases";
import { errorShapeProblems, parseSseText } from "./support";

/** The seed for this run: PENSIEVE_FUZZ_SEED when set (replay), else a fresh one. */
export function fuzzSeed(): number {
  const env = process.env.PENSIEVE_FUZZ_SEED;
  if (env !== undefined && env.trim() !== "") {
    const n = Number(env);
    if (!Number.isInteger(n)) throw new Error(`PENSIEVE_FUZZ_SEED must be an integer, got '${env}'`);
    return n;
  }
  return (Date.now() ^ Math.floor(Math.random() * 0x7fffffff)) | 0;
}

/** A Request for a case. */
export function toRequest(base: string, c: FuzzCase, token: string): Request {
  const headers = new Headers({ "x-api-key": token });
  if (c.contentType !== null) headers.set("content-type", c.contentType);
  return new Request(base + c.path, { method: "POST", headers, body: c.body });
}

/** A short, printable label of a case for failure messages. */
export function describeCase(c: FuzzCase): string {
  const body = typeof c.body === "string" ? c.body : `<${c.body.byteLength} bytes>`;
  return `${c.kind} ${c.path} ct=${c.contentType} expect=${c.expect} body=${JSON.stringify(body.slice(0, 300))}`;
}

/** What is wrong with one answer to a case, or [] when it is what the case expects. */
export function judgeAnswer(c: FuzzCase, status: number, headers: Headers, text: string): string[] {
  const problems: string[] = [];
  if (!headers.get("x-memory-status")) problems.push("no X-Memory-Status header");
  if (status >= 500) return [...problems, `server error ${status}: ${text.slice(0, 300)}`];
  if (status >= 400) {
    problems.push(...errorShapeProblems(status, headers, text));
    if (c.expect === "accept") problems.push(`expected 200, got ${status}: ${text.slice(0, 300)}`);
    return problems;
  }
  if (c.expect === "reject") return [...problems, `expected a 4xx, got ${status}: ${text.slice(0, 160)}`];
  if (status !== 200) return [...problems, `unexpected status ${status}`];
  try {
    if (c.path === COUNT) {
      const body = JSON.parse(text);
      if (!Number.isInteger(body.input_tokens) || body.input_tokens < 0) problems.push(`bad count ${text}`);
    } else if (c.stream) {
      if (!(headers.get("content-type") ?? "").startsWith("text/event-stream")) problems.push("stream without text/event-stream");
      const types = parseSseText(text).map((f) => f.event);
      if (types[0] !== "message_start" || types.at(-1) !== "message_stop" || types.includes("error"))
        problems.push(`bad event order: ${types.join(",")}`);
    } else {
      const body = JSON.parse(text);
      if (body.type !== "message" || body.role !== "assistant" || !Array.isArray(body.content) || !Number.isInteger(body.usage?.output_tokens))
        problems.push(`bad message: ${text.slice(0, 200)}`);
    }
  } catch (err) {
    problems.push(`unreadable 200 body (${String(err)}): ${text.slice(0, 200)}`);
  }
  return problems;
}
