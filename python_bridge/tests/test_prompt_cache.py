"""Prompt-prefix cache: reuse, exactness, bounds and relief, through a real worker."""

import pytest

from pensieve_bridge.prompt_cache import PromptCache

SYSTEM = "You are Claude Code. " + " ".join(f"Rule {i}: read files before you edit them." for i in range(60))
TURN1 = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "list the files"}]


def turn2(answer):
    return TURN1 + [{"role": "assistant", "content": answer},
                    {"role": "user", "content": "now run the tests"}]


def text_of(msgs):
    return "".join(m["text"] for m in msgs if m["type"] == "delta")


@pytest.fixture
def loaded(spawn, tiny_model):
    def make(**load_args):
        w = spawn()
        reply = w.load(str(tiny_model), **load_args)
        assert reply["type"] == "loaded", reply
        return w, reply
    return make


def test_second_turn_reuses_the_prefix_and_stats_show_it(loaded):
    w, info = loaded()
    assert info["max_concurrency"] == 4  # qwen2 caches batch; the default max_batch
    assert info["prompt_cache_entries"] == 4 and info["prompt_cache_gb"] == 2
    first = w.generate(messages=TURN1, max_tokens=6, temperature=0)
    assert first[0]["cached_tokens"] == 0
    second = w.generate(messages=turn2(text_of(first)), max_tokens=6, temperature=0)
    started, done = second[0], second[-1]
    assert 0 < started["cached_tokens"] < started["prompt_tokens"]
    assert done["cached_tokens"] == started["cached_tokens"]
    assert started["cached_tokens"] >= first[0]["prompt_tokens"] - 1
    progress = [m for m in second if m["type"] == "progress"]
    assert progress[0]["processed"] == started["cached_tokens"]
    assert progress[-1]["processed"] == progress[-1]["total"] == started["prompt_tokens"]
    pc = w.request("stats")["prompt_cache"]
    assert pc["hits"] == 1 and pc["misses"] == 1
    assert pc["tokens_reused"] == started["cached_tokens"]
    assert pc["entries"] >= 1 and pc["bytes"] > 0


def test_output_is_the_same_with_and_without_the_cache(loaded):
    cold, _ = loaded(prompt_cache_entries=0)
    warm, _ = loaded()
    outs = {}
    for name, w in (("cold", cold), ("warm", warm)):
        a = w.generate(messages=TURN1, max_tokens=12, temperature=0)
        b = w.generate(messages=turn2(text_of(a)), max_tokens=12, temperature=0)
        # The same prompt again: a longer entry is copied and trimmed.
        c = w.generate(messages=TURN1, max_tokens=12, temperature=0)
        outs[name] = [text_of(a), text_of(b), text_of(c)]
        if name == "warm":
            assert b[0]["cached_tokens"] > 0 and c[0]["cached_tokens"] == c[0]["prompt_tokens"] - 1
        else:
            assert b[0]["cached_tokens"] == 0 == c[0]["cached_tokens"]
            assert w.request("stats")["prompt_cache"]["entries"] == 0
    assert outs["cold"] == outs["warm"]
    assert outs["warm"][0] == outs["warm"][2]


def test_relieve_trim_and_drop(loaded):
    w, _ = loaded()
    for i in range(3):
        w.generate(messages=[{"role": "user", "content": f"{i} " + SYSTEM}], max_tokens=2,
                   temperature=0)
    before = w.request("stats")["prompt_cache"]
    assert before["entries"] == 3
    trim = w.request("cache_relieve", level="trim")
    assert trim["type"] == "relieved" and trim["bytes"] <= before["bytes"] // 2
    assert trim["entries"] < 3
    drop = w.request("cache_relieve", level="drop")
    assert (drop["entries"], drop["bytes"]) == (0, 0)
    assert w.request("cache_relieve", level="bogus")["code"] == "bad_request"
    assert w.generate(messages=TURN1, max_tokens=2, temperature=0)[0]["cached_tokens"] == 0


def test_relieve_is_answered_during_a_generation(loaded):
    w, _ = loaded()
    gid = w.send("generate", messages=TURN1, max_tokens=10**9, temperature=0)
    w.until(lambda m: m.get("id") == gid and m["type"] == "delta")
    assert w.request("cache_relieve", level="drop")["type"] == "relieved"
    w.send("cancel", target=gid)
    assert w.until(lambda m: m.get("id") == gid and m["type"] == "done")[-1][
        "finish_reason"] == "cancelled"
    # A cancelled generation's cache is still exact: it is kept and reused.
    again = w.generate(messages=TURN1, max_tokens=2, temperature=0)
    assert again[0]["cached_tokens"] == again[0]["prompt_tokens"] - 1


def test_bounds_count_and_bytes(loaded):
    w, _ = loaded(prompt_cache_entries=2)
    for i in range(4):
        w.generate(messages=[{"role": "user", "content": f"{i} " + SYSTEM}], max_tokens=2,
                   temperature=0)
    assert w.request("stats")["prompt_cache"]["entries"] == 2
    tiny, _ = loaded(prompt_cache_gb=0.000001)  # 1000 bytes: no entry fits
    tiny.generate(messages=TURN1, max_tokens=2, temperature=0)
    pc = tiny.request("stats")["prompt_cache"]
    assert pc["entries"] == 0 and pc["max_bytes"] == 1000
    bad = w.load("x", prompt_cache_entries=-1)
    assert bad["code"] == "bad_request"


class FakeLayer:
    """Stands in for a KV layer cache: offset and nbytes are all the store reads."""

    def __init__(self, n):
        self.offset, self.nbytes = n, n * 10

    def is_trimmable(self):
        return True

    def trim(self, k):
        self.offset -= k
        return k


def test_store_drops_entries_the_new_one_extends_and_evicts_lru():
    pc = PromptCache(max_entries=3, max_bytes=10**6)
    pc.store([1, 2, 3], [FakeLayer(3)])
    pc.store([1, 2, 3, 4, 5], [FakeLayer(5)])  # extends the first: replaces it
    assert [len(e.tokens) for e in pc.entries] == [5]
    pc.store([7, 8], [FakeLayer(2)])
    pc.store([9, 9], [FakeLayer(2)])
    pc.store([6, 6], [FakeLayer(2)])
    assert [e.tokens.tolist() for e in pc.entries] == [[7, 8], [9, 9], [6, 6]]
    cache, n = pc.fetch([9, 9, 1])  # whole entry is a prefix: moved out
    assert n == 2 and len(pc.entries) == 2 and pc.hits == 1
    assert pc.fetch([5, 5])[1] == 0 and pc.misses == 1
