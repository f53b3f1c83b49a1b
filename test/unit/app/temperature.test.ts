import { describe, expect, test } from "bun:test";
import { parseServeArgs } from "../../../src/config";
import { makeApp, postMessages, simpleBody } from "./harness";

describe("--temperature: the temperature of requests that set none", () => {
  test("unset: the engine gets none (the model's generation_config.json decides)", async () => {
    const h = makeApp();
    await (await postMessages(h, simpleBody())).json();
    expect(h.engine.requests[0]!.temperature).toBeUndefined();
  });

  test("set: requests without a temperature get it; a request's own wins", async () => {
    const h = makeApp({ config: { temperature: 0.2 } });
    await (await postMessages(h, simpleBody())).json();
    await (await postMessages(h, simpleBody({ temperature: 0.9 }))).json();
    await (await postMessages(h, simpleBody({ temperature: 0 }))).json();
    expect(h.engine.requests.map((r) => r.temperature)).toEqual([0.2, 0.9, 0]);
  });

  test("the flag and its variable parse; nonsense is a usage error", () => {
    expect(parseServeArgs([], {}).temperature).toBeUndefined();
    expect(parseServeArgs(["--temperature", "0"], {}).temperature).toBe(0);
    expect(parseServeArgs([], { PENSIEVE_TEMPERATURE: "0.7" }).temperature).toBe(0.7);
    expect(() => parseServeArgs(["--temperature", "hot"], {})).toThrow(/--temperature/);
  });
});
