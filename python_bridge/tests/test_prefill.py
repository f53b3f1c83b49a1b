"""Assistant prefill: a final assistant message is continued, not answered anew."""

import pytest

from pensieve_bridge.model import load_model

PREFILL = "The answer is"
USER = [{"role": "user", "content": "What is two plus two?"}]
WITH_PREFILL = USER + [{"role": "assistant", "content": PREFILL}]


@pytest.fixture(scope="module")
def lm(tiny_model):
    return load_model(str(tiny_model), None, None, 0, 0)  # no prompt cache: it only renders


def text_of(lm, ids):
    return lm.tokenizer.decode(ids)


def test_prompt_ends_with_the_prefill_and_no_new_turn(lm):
    text = text_of(lm, lm.render(WITH_PREFILL))
    assert text.endswith("<|im_start|>assistant\n" + PREFILL)
    assert text.count("<|im_start|>assistant") == 1


def test_blank_final_assistant_turn_is_not_continued_nor_dropped(lm):
    # Dropping a blank final turn is the server's rule (anthropic/translate.ts), not the worker's:
    # the worker renders what it is sent, and a blank turn is no prefill.
    text = text_of(lm, lm.render(USER + [{"role": "assistant", "content": ""}]))
    assert text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>assistant") == 2


def test_a_lone_blank_assistant_turn_still_renders(lm):
    # Dropping it would leave no conversation at all, which templates refuse.
    text = text_of(lm, lm.render([{"role": "assistant", "content": ""}]))
    assert text.endswith("<|im_start|>assistant\n")


def test_assistant_with_tool_calls_last_is_not_a_prefill(lm):
    msgs = USER + [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": {}}}]}]
    assert text_of(lm, lm.render(msgs)).endswith("<|im_start|>assistant\n")


def test_template_that_cannot_continue_falls_back_to_appending(lm, monkeypatch):
    real = lm.tokenizer.apply_chat_template

    def no_continue(messages, **kw):
        if kw.get("continue_final_message"):
            raise ValueError("final message does not appear in the chat")
        return real(messages, **kw)

    monkeypatch.setattr(lm.tokenizer, "apply_chat_template", no_continue)
    by_hand = lm.render(WITH_PREFILL)
    monkeypatch.undo()
    assert text_of(lm, by_hand).endswith("<|im_start|>assistant\n" + PREFILL)
    assert by_hand == lm.render(WITH_PREFILL)


def test_continue_final_must_agree_with_the_messages(worker):
    for fields in ({"messages": USER, "continue_final": True},
                   {"messages": WITH_PREFILL, "continue_final": False},
                   {"messages": WITH_PREFILL, "continue_final": "yes"}):
        reply = worker.request("count_tokens", **fields)
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply


def test_count_tokens_and_greedy_output_follow_the_prefill(worker):
    plain = worker.request("count_tokens", messages=USER, continue_final=False)["input_tokens"]
    pre = worker.request("count_tokens", messages=WITH_PREFILL, continue_final=True)["input_tokens"]
    assert pre > plain  # the generation prompt plus the prefill's tokens
    # Without the flag (older servers) the shape alone decides, as before.
    assert worker.request("count_tokens", messages=WITH_PREFILL)["input_tokens"] == pre

    def gen(messages):
        flag = messages[-1]["role"] == "assistant"
        msgs = worker.generate(messages=messages, max_tokens=12, temperature=0, continue_final=flag)
        started, done = msgs[0], msgs[-1]
        assert started["type"] == "started" and done["type"] == "done", msgs[-1]
        return started["prompt_tokens"], "".join(m["text"] for m in msgs if m["type"] == "delta")

    n_plain, out_plain = gen(USER)
    n_pre, out_pre = gen(WITH_PREFILL)
    assert (n_plain, n_pre) == (plain, pre)
    assert out_pre != out_plain
    # Deterministic: the same prefill continues the same way.
    assert gen(WITH_PREFILL)[1] == out_pre
