"""Cache writes (cache_created_tokens) follow Anthropic: only up to the last cache breakpoint."""

import pytest
from transformers import AutoTokenizer

from pensieve_bridge.generation import created_tokens
from pensieve_bridge.model import _as_ids

SYSTEM = "You are Claude Code. " + " ".join(f"Rule {i}: read files before you edit them." for i in range(30))


def convo(tag):
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{tag}: list the files"}]


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(str(tiny_model))


def prefix_len(tok, messages):
    return len(_as_ids(tok.apply_chat_template(messages, add_generation_prompt=False, tokenize=True)))


@pytest.fixture
def w(spawn, tiny_model):
    w = spawn()
    assert w.load(str(tiny_model))["type"] == "loaded"
    return w


def test_created_tokens_stops_at_the_breakpoint():
    assert created_tokens(stored=100, breakpoint=0, cached=0) == 0
    assert created_tokens(stored=100, breakpoint=60, cached=10) == 50
    assert created_tokens(stored=40, breakpoint=60, cached=10) == 30  # a cut-short prefill
    assert created_tokens(stored=100, breakpoint=60, cached=80) == 0  # read past the breakpoint


def test_no_breakpoint_no_cache_writes(w):
    done = w.generate(messages=convo("a"), max_tokens=3, temperature=0)[-1]
    assert done["type"] == "done" and done["cached_tokens"] == 0
    assert done["cache_created_tokens"] == 0
    # The entry is still kept for reuse: the next turn reads it.
    again = w.generate(messages=convo("a"), max_tokens=3, temperature=0)[-1]
    assert again["cached_tokens"] > 0 and again["cache_created_tokens"] == 0


def test_a_breakpoint_on_the_system_prompt_writes_exactly_that_turn(w, tok):
    msgs = convo("b")
    done = w.generate(messages=msgs, max_tokens=3, temperature=0, cache_prefix={"messages": 1})[-1]
    want = prefix_len(tok, msgs[:1])
    assert 0 < want < done["prompt_tokens"]
    assert done["cached_tokens"] == 0 and done["cache_created_tokens"] == want


def test_a_breakpoint_on_the_last_message_writes_all_but_the_generation_prompt(w, tok):
    msgs = convo("c")
    done = w.generate(messages=msgs, max_tokens=3, temperature=0, cache_prefix={"messages": 2})[-1]
    assert done["cache_created_tokens"] == prefix_len(tok, msgs) < done["prompt_tokens"]
    # The same prefix again: read, not written.
    again = w.generate(messages=msgs, max_tokens=3, temperature=0, cache_prefix={"messages": 2})[-1]
    assert again["cached_tokens"] >= done["cache_created_tokens"] and again["cache_created_tokens"] == 0


def test_a_breakpoint_inside_a_message_cuts_it(w, tok):
    msgs = convo("d")
    chars = len("You are Claude Code.")
    done = w.generate(messages=msgs, max_tokens=3, temperature=0,
                      cache_prefix={"messages": 1, "content_chars": chars})[-1]
    whole = prefix_len(tok, msgs[:1])
    assert 0 < done["cache_created_tokens"] < whole
    cut = [{"role": "system", "content": msgs[0]["content"][:chars]}]
    assert done["cache_created_tokens"] <= prefix_len(tok, cut)


def test_batched_requests_count_their_own_breakpoints(w, tok):
    ids = [w.send("generate", messages=convo(f"e{i}"), max_tokens=40, temperature=0,
                  cache_prefix={"messages": 1} if i else None) for i in range(2)]
    dones = {}
    while len(dones) < 2:
        m = w.recv()
        if m.get("id") in ids and m["type"] in ("done", "error"):
            dones[m["id"]] = m
    assert w.request("stats")["batched_generations"] == 1  # the second joined the first's batch
    assert dones[ids[0]]["cache_created_tokens"] == 0
    second = dones[ids[1]]
    assert second["cache_created_tokens"] == prefix_len(tok, convo("x")[:1]) - second["cached_tokens"]


def test_a_bad_cache_prefix_is_a_bad_request(w):
    reply = w.generate(messages=convo("f"), max_tokens=2, cache_prefix={"messages": 5})[-1]
    assert reply["type"] == "error" and "cache_prefix" in reply["message"]


def test_the_cheap_text_path_agrees_with_tokenizing_the_prefix(tok):
    from types import SimpleNamespace

    from pensieve_bridge.admission import cache_breakpoint
    from pensieve_bridge.params import GenerateParams
    from pensieve_bridge.prompt_cache import common_prefix

    lm = SimpleNamespace(tokenizer=tok, _template_uses=lambda name: False,
                         adapt=lambda messages, tools: (messages, tools))
    msgs = convo("g") + [{"role": "assistant", "content": "Here they are."},
                         {"role": "user", "content": "and the tests? ünïcødé 🙂 too"}]
    ids = _as_ids(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
    for n, chars in [(0, None), (1, None), (2, None), (4, None), (1, 7), (4, 20), (4, 27)]:
        p = GenerateParams(messages=msgs, tools=None, enable_thinking=None, max_tokens=1,
                           temperature=0, top_p=1, top_k=0, cache_prefix=(n, chars))
        cut = [dict(m) for m in msgs[:n]]
        if chars is not None:
            # UTF-16 units: the emoji counts two, as in the server's string lengths.
            cut[-1]["content"] = cut[-1]["content"].encode("utf-16-le")[:2 * chars].decode("utf-16-le", "ignore")
        want = common_prefix(_as_ids(tok.apply_chat_template(cut, add_generation_prompt=False, tokenize=True)), ids) if cut else 0
        got = cache_breakpoint(lm, p, ids)
        assert got == want or (chars is not None and abs(got - want) <= 1), (n, chars, got, want)
        assert 0 <= got < len(ids)
