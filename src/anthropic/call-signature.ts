/** Comparable forms of tool calls: the same call with its keys in another order is the same call. */
import type { ChatToolCall } from "../engine/types";

/** JSON with object keys sorted, so key order never hides a repeat. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null);
}

/** One call as `name(canonical arguments)`. */
export const callSignature = (name: string, args: unknown): string => `${name}(${canonicalJson(args)})`;

/** A turn's calls, order-free. */
export const turnSignature = (calls: readonly ChatToolCall[]): string =>
  calls.map((c) => callSignature(c.function.name, c.function.arguments)).sort().join(";");
