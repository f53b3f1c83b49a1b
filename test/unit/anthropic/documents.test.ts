import { describe, expect, test } from "bun:test";
import { InvalidRequestError } from "../../../src/anthropic/errors";
import type { MessagesRequestT } from "../../../src/anthropic/schemas";
import { toPromptInput } from "../../../src/anthropic/translate";

const opts = { model: "served", supportsVision: false };
const req = (messages: unknown[]): MessagesRequestT => ({ model: "claude-x", max_tokens: 100, messages: messages as never });
const pdf = { type: "document", source: { type: "base64", media_type: "application/pdf", data: "JVBERi0=" } };
const textDoc = (extra: Record<string, unknown> = {}) => ({
  type: "document",
  source: { type: "text", media_type: "text/plain", data: "The report says 42." },
  ...extra,
});

describe("document blocks", () => {
  test("a user turn holding only a plain-text document becomes its text", () => {
    const input = toPromptInput(req([{ role: "user", content: [textDoc()] }]), opts);
    expect(input.messages).toEqual([{ role: "user", content: "The report says 42." }]);
  });

  test("a document beside text is kept, in order, with its title and context", () => {
    const doc = textDoc({ title: "Q3 report", context: "Finance, internal" });
    const input = toPromptInput(req([{ role: "user", content: [doc, { type: "text", text: "Summarize it." }] }]), opts);
    expect(input.messages).toEqual([
      { role: "user", content: "Document: Q3 report\nContext: Finance, internal\n\nThe report says 42.\n\nSummarize it." },
    ]);
  });

  test("a content-source document's text blocks are joined", () => {
    const doc = { type: "document", source: { type: "content", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] } };
    expect(toPromptInput(req([{ role: "user", content: [doc] }]), opts).messages[0]!.content).toBe("a\n\nb");
  });

  test("a PDF is a 400 naming the block, not silently dropped", () => {
    const bad = req([{ role: "user", content: [{ type: "text", text: "Read this" }, pdf] }]);
    expect(() => toPromptInput(bad, opts)).toThrow(InvalidRequestError);
    expect(() => toPromptInput(bad, opts)).toThrow(
      'messages.0.content.1: document blocks with source type "base64" (application/pdf) are not supported by the served model; send the text instead',
    );
  });

  test("url and file documents are refused the same way", () => {
    const url = { type: "document", source: { type: "url", url: "https://example.com/a.pdf" } };
    expect(() => toPromptInput(req([{ role: "user", content: [url] }]), opts)).toThrow(/messages\.0\.content\.0: document blocks with source type "url"/);
    const file = { type: "document", source: { type: "file", file_id: "file_1" } };
    expect(() => toPromptInput(req([{ role: "user", content: [file] }]), opts)).toThrow(/source type "file"/);
  });

  test("documents inside tool_result content: text is read, a PDF is a 400 naming the nested block", () => {
    const call = { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "Fetch", input: {} }] };
    const ok = toPromptInput(req([call, { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [textDoc({ title: "page" })] }] }]), opts);
    expect(ok.messages[1]).toEqual({ role: "tool", content: "Document: page\n\nThe report says 42.", tool_call_id: "t1", name: "Fetch" });
    const bad = req([call, { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [{ type: "text", text: "x" }, pdf] }] }]);
    expect(() => toPromptInput(bad, opts)).toThrow(/^messages\.1\.content\.0\.content\.1: document blocks with source type "base64"/);
  });

  test("a text document without its text, or content with images, is a clear 400", () => {
    const noData = { type: "document", source: { type: "text" } };
    expect(() => toPromptInput(req([{ role: "user", content: [noData] }]), opts)).toThrow(/messages\.0\.content\.0\.source\.data/);
    const withImage = { type: "document", source: { type: "content", content: [{ type: "image", source: { type: "base64" } }] } };
    expect(() => toPromptInput(req([{ role: "user", content: [withImage] }]), opts)).toThrow(/does not support images/);
  });

  test("a request left with no readable message is a clear 400 (not the worker's empty-messages error)", () => {
    expect(() => toPromptInput(req([{ role: "user", content: [{ type: "container_upload", file_id: "f" }] }]), opts)).toThrow(
      /no message has content the served model can read/,
    );
  });
});
