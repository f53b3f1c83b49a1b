"""The thinking fixture model: real generation reasons in <think> then answers."""

import json

import pytest

import make_think_model as mthink


@pytest.fixture(scope="module")
def think_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("think-model")
    assert mthink.make(out)
    return out


@pytest.fixture(scope="module")
def thinker(think_model):
    from conftest import WorkerProc

    w = WorkerProc()
    assert w.recv()["type"] == "hello"
    loaded = w.load(str(think_model))
    assert loaded["type"] == "loaded" and loaded["has_thinking"] is True, loaded
    yield w
    w.stop()
    assert not w.bad_lines


def kinds(msgs):
    return [m["type"] for m in msgs if m["type"] != "progress"]


def texts(msgs, kind):
    return "".join(m["text"] for m in msgs if m["type"] == kind)


USER = [{"role": "user", "content": "Say the marker."}]


def test_thinking_enabled_gives_reasoning_then_the_answer(thinker):
    msgs = thinker.generate(messages=USER, enable_thinking=True, max_tokens=16, temperature=0)
    k = kinds(msgs)
    assert k[0] == "started" and k[-1] == "done"
    assert "thinking" in k and "delta" in k
    assert max(i for i, x in enumerate(k) if x == "thinking") < k.index("delta")
    assert texts(msgs, "thinking") == mthink.REASONING
    assert texts(msgs, "delta") == mthink.ANSWER.strip()  # the blank line after </think> goes
    done = msgs[-1]
    assert done["finish_reason"] == "stop" and done["completion_tokens"] == 5


@pytest.mark.parametrize("enable", [False, None])
def test_thinking_off_drops_the_reasoning(thinker, enable):
    fields = {} if enable is None else {"enable_thinking": enable}
    msgs = thinker.generate(messages=USER, max_tokens=16, temperature=0, **fields)
    assert "thinking" not in kinds(msgs)
    answer = texts(msgs, "delta")
    assert answer == mthink.ANSWER.strip()
    assert "pensieve-reasoning" not in answer and "<think>" not in answer


def test_history_with_earlier_reasoning_is_accepted(thinker):
    history = USER + [
        {"role": "assistant", "content": mthink.ANSWER.strip(), "reasoning_content": mthink.REASONING.strip()},
        {"role": "user", "content": "Again."}]
    msgs = thinker.generate(messages=history, enable_thinking=True, max_tokens=16, temperature=0)
    assert msgs[-1]["type"] == "done" and msgs[-1]["finish_reason"] == "stop"
    assert texts(msgs, "delta") == mthink.ANSWER.strip()


def test_generator_is_idempotent_and_marks_the_kind(think_model):
    marker = json.loads((think_model / "pensieve-tiny-model.json").read_text())
    assert marker["kind"] == "thinking" and marker["answer"] == mthink.ANSWER
    assert mthink.make(think_model) is False
