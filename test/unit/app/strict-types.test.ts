import { describe, expect, test } from "bun:test";
import { makeApp, postMessages, simpleBody } from "./harness";

describe("integer fields are not coerced from strings", () => {
  for (const field of ["max_tokens", "top_k"]) {
    test(`${field}: "10" is a 400 invalid_request_error, as Anthropic answers`, async () => {
      const h = makeApp();
      const res = await postMessages(h, simpleBody({ [field]: "10" }));
      expect(res.status).toBe(400);
      const body = (await res.json()) as { type: string; error: { type: string } };
      expect(body.type).toBe("error");
      expect(body.error.type).toBe("invalid_request_error");
    });
  }
  test("a fractional max_tokens is a 400", async () => {
    const res = await postMessages(makeApp(), simpleBody({ max_tokens: 10.5 }));
    expect(res.status).toBe(400);
  });
});
