"""Context limits: prompt_too_long and max_tokens clamping, on a 64-token context."""

import pytest

SMALL_CONTEXT = 64
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def small(tiny_model):
    from conftest import WorkerProc

    w = WorkerProc()
    assert w.recv()["type"] == "hello"
    loaded = w.load(str(tiny_model), context_length=SMALL_CONTEXT)
    assert loaded["context_length"] == SMALL_CONTEXT
    yield w
    w.stop()


def test_prompt_too_long_has_numbers_a_neutral_message_and_nothing_else(small):
    long = [{"role": "user", "content": "tell me about the quick brown fox " * 20}]
    n = small.request("count_tokens", messages=long)["input_tokens"]
    assert n > SMALL_CONTEXT
    err = small.request("generate", messages=long, max_tokens=10)
    assert err["type"] == "error" and err["code"] == "prompt_too_long"
    # Numbers for the server to word; Anthropic's wording lives in src/anthropic/errors.ts.
    assert err["message"] == f"prompt has {n} tokens; the context holds {SMALL_CONTEXT}"
    assert err["prompt_tokens"] == n and err["max_context"] == SMALL_CONTEXT
    # No started/done followed: the next message is the reply to this stats.
    stats_id = small.send("stats")
    assert small.recv()["id"] == stats_id


def test_max_tokens_is_clamped_to_what_the_context_has_left(small):
    msgs = small.generate(messages=HI, max_tokens=100_000, temperature=0)
    started, done = msgs[0], msgs[-1]
    assert started["type"] == "started" and done["type"] == "done"
    assert done["finish_reason"] == "length"
    assert done["completion_tokens"] == SMALL_CONTEXT - started["prompt_tokens"]
