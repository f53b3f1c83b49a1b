"""The tool-calling fixture model: real generation always yields the Bash call."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import make_tool_model as mtool

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-tool-model"
FIXTURE = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "claude-code-first-turn.json"


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tool-model")
    env = {**os.environ, "PENSIEVE_PYTHON": sys.executable}
    subprocess.run([str(SCRIPT), str(out)], check=True, timeout=120, env=env)
    return out


@pytest.fixture(scope="module")
def tworker(tool_model):
    from conftest import WorkerProc

    # The fixture emits its whole call as one added token, which a call grammar never admits:
    # these tests cover the unconstrained forced path (test_constrain.py covers the grammar).
    w = WorkerProc(env={"PENSIEVE_CONSTRAIN": "0"})
    assert w.recv()["type"] == "hello"
    assert w.load(str(tool_model))["type"] == "loaded"
    yield w
    w.stop()
    assert not w.bad_lines


def claude_code_prompt():
    body = json.loads(FIXTURE.read_text())["body"]
    messages = [{"role": "system", "content": "\n".join(b["text"] for b in body["system"])}]
    for m in body["messages"]:
        content = m["content"] if isinstance(m["content"], str) else "\n".join(
            b.get("text", "") for b in m["content"])
        messages.append({"role": m["role"], "content": content})
    tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                               "parameters": t.get("input_schema", {})}}
             for t in body["tools"]]
    return messages, tools


def calls_of(msgs):
    return [m for m in msgs if m["type"] == "tool_call"]


def test_claude_code_prompt_gives_the_bash_call_then_a_tool_result_turn(tworker):
    messages, tools = claude_code_prompt()
    first = tworker.generate(messages=messages, tools=tools, max_tokens=64, temperature=0)
    assert [m["type"] for m in first if m["type"] not in ("progress",)] == \
        ["started", "tool_call", "done"]
    call = calls_of(first)[0]
    assert call["name"] == "Bash" and call["arguments"] == mtool.TOOL_INPUT
    assert "call_id" not in call  # the server mints tool_use ids
    done = first[-1]
    assert done["finish_reason"] == "tool_calls" and done["completion_tokens"] == 4
    # Turn 2: the call and its result in the history. The model calls again
    # (position-independent); claude -p --max-turns 2 stops there.
    history = messages + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_01", "type": "function",
             "function": {"name": "Bash", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "pensieve-tool-ok\n"}]
    second = tworker.generate(messages=history, tools=tools, max_tokens=64, temperature=0)
    assert second[0]["cached_tokens"] > 0
    assert calls_of(second)[0]["arguments"] == mtool.TOOL_INPUT
    assert second[-1]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("prompt", ["hi", "Please list the files in /tmp \u65e5\u672c", "x" * 500])
def test_any_prompt_gives_the_call(tworker, prompt):
    msgs = tworker.generate(messages=[{"role": "user", "content": prompt}],
                            tools=[{"type": "function", "function": {"name": "Bash",
                                                                     "parameters": {}}}],
                            max_tokens=16, temperature=0)
    assert [c["name"] for c in calls_of(msgs)] == ["Bash"]
    assert msgs[-1]["finish_reason"] == "tool_calls"


def test_tool_choice_none_gives_the_call_as_text(tworker):
    msgs = tworker.generate(messages=[{"role": "user", "content": "hi"}],
                            tools=[{"type": "function", "function": {"name": "Bash"}}],
                            tool_choice="none", max_tokens=16, temperature=0)
    assert not calls_of(msgs)
    assert "".join(m["text"] for m in msgs if m["type"] == "delta") == mtool.CALL_TEXT
    assert msgs[-1]["finish_reason"] == "stop"


def test_required_and_single_call(tworker):
    msgs = tworker.generate(messages=[{"role": "user", "content": "hi"}],
                            tools=[{"type": "function", "function": {"name": "Bash"}}],
                            tool_choice="required", parallel_tool_calls=False,
                            max_tokens=16, temperature=0)
    assert [c["arguments"] for c in calls_of(msgs)] == [mtool.TOOL_INPUT]
    assert msgs[-1]["finish_reason"] == "tool_calls"


def test_wrapper_is_idempotent_and_marks_the_kind(tool_model):
    marker = json.loads((tool_model / "pensieve-tiny-model.json").read_text())
    assert marker["kind"] == "tool-call" and marker["call_text"] == mtool.CALL_TEXT
    env = {**os.environ, "PENSIEVE_PYTHON": sys.executable}
    res = subprocess.run([str(SCRIPT), str(tool_model)], capture_output=True, env=env, timeout=60)
    assert res.returncode == 0 and b"already present" in res.stderr
