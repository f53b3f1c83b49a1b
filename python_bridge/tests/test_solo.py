"""A lone generate runs solo on stream_generate; ones that arrive meanwhile join the batch,
and the solo itself then continues in the batch (one forward pass per step for all)."""

import pytest

from conftest import wait_for
from test_batch import of, run_all

PROMPTS = [[{"role": "user", "content": f"solo test {i}: say something"}] for i in range(3)]


@pytest.fixture(scope="module")
def sworker(batch_worker):
    return batch_worker


def counts(w):
    st = w.request("stats")
    return st["solo_generations"], st["batched_generations"]


def text(msgs, gid):
    return "".join(m["text"] for m in of(msgs, gid, "delta"))


def test_a_lone_generate_runs_solo(sworker):
    solo0, batched0 = counts(sworker)
    msgs = sworker.generate(messages=PROMPTS[0], max_tokens=8, temperature=0)
    done = msgs[-1]
    assert done["type"] == "done" and done["completion_tokens"] == 8
    assert counts(sworker) == (solo0 + 1, batched0)
    line = f"generate id={done['id']} finish=length"
    assert wait_for(lambda: any(line in l and "path=solo" in l for l in sworker.stderr_lines))


def test_a_generate_arriving_during_a_solo_joins_the_batch_with_the_same_output(sworker):
    # Greedy output is the same as alone, for the joiner and for the solo handed to the batch.
    ref = {}  # each prompt's greedy output, run alone (solo)
    for i, n in ((0, 120), (1, 16)):
        msgs = sworker.generate(messages=PROMPTS[i], max_tokens=n, temperature=0)
        ref[i] = text(msgs, msgs[-1]["id"])
    solo0, batched0 = counts(sworker)
    a = sworker.send("generate", messages=PROMPTS[0], max_tokens=120, temperature=0)
    first = sworker.until(lambda m: m.get("id") == a and m["type"] == "delta")
    b = sworker.send("generate", messages=PROMPTS[1], max_tokens=16, temperature=0)
    msgs = first + run_all(sworker, [a, b])
    # b started while a was still generating, and ended before it.
    idx = {id(m): i for i, m in enumerate(msgs)}
    assert idx[id(of(msgs, b, "started")[0])] < idx[id(of(msgs, a, "done")[0])]
    assert idx[id(of(msgs, b, "done")[0])] < idx[id(of(msgs, a, "done")[0])]
    for gid, n in ((a, 120), (b, 16)):
        done = of(msgs, gid, "done")[0]
        assert done["finish_reason"] == "length" and done["completion_tokens"] == n
    assert (text(msgs, a), text(msgs, b)) == (ref[0], ref[1])
    assert counts(sworker) == (solo0 + 1, batched0 + 1)
    assert wait_for(lambda: any(f"generate id={b} " in l and "path=batch" in l
                                for l in sworker.stderr_lines))
    assert wait_for(lambda: any(f"generate id={a} " in l and "path=solo+batch" in l
                                for l in sworker.stderr_lines))


def test_cancel_of_the_handed_off_solo_leaves_the_batch_running(sworker):
    a = sworker.send("generate", messages=PROMPTS[0], max_tokens=10**6, temperature=0)
    sworker.until(lambda m: m.get("id") == a and m["type"] == "delta")
    b = sworker.send("generate", messages=PROMPTS[1], max_tokens=300, temperature=0)
    before = sworker.until(lambda m: m.get("id") == b and m["type"] == "delta")
    stats = sworker.request("stats")
    assert sorted(stats["active"]) == sorted([a, b])
    assert sworker.request("cancel", target=a)["found"] is True
    msgs = before + run_all(sworker, [a, b])
    assert of(msgs, a, "done")[0]["finish_reason"] == "cancelled"
    done_b = of(msgs, b, "done")[0]
    assert done_b["finish_reason"] == "length" and done_b["completion_tokens"] == 300
    assert sworker.request("stats")["active"] == []


def test_cancel_of_the_solo_in_its_prefill_while_a_request_joins(spawn, tiny_model):
    # A long prompt in small chunks: b joins while a is (most likely) still in prefill,
    # so a is cancelled as a solo; either way a ends cancelled and b runs to the end.
    w = spawn()
    loaded = w.load(str(tiny_model), prefill_step_size=8, prompt_cache_entries=0)
    assert loaded["max_concurrency"] == 4
    long = [{"role": "user", "content": "many words " * 1500}]
    a = w.send("generate", messages=long, max_tokens=10**6, temperature=0)
    w.until(lambda m: m.get("id") == a and m["type"] == "progress" and m["processed"] > 0)
    b = w.send("generate", messages=PROMPTS[1], max_tokens=40, temperature=0)
    assert w.request("cancel", target=a)["found"] is True
    msgs = run_all(w, [a, b])
    assert of(msgs, a, "done")[0]["finish_reason"] == "cancelled"
    done_b = of(msgs, b, "done")[0]
    assert done_b["finish_reason"] == "length" and done_b["completion_tokens"] == 40
    alone = w.generate(messages=PROMPTS[1], max_tokens=40, temperature=0)
    assert text(msgs, b) == text(alone, alone[-1]["id"])
    assert w.request("stats")["active"] == []


def test_a_generate_arriving_in_a_solo_prefill_waits_for_its_first_token(spawn, tiny_model):
    # The prefill callback answers stats and cancel, but never admits a generate inside
    # stream_generate: the loop does, after the solo's first token.
    w = spawn()
    assert w.load(tiny_model, prefill_step_size=8, prompt_cache_entries=0)["max_concurrency"] == 4
    long = [{"role": "user", "content": "many words " * 1500}]
    a = w.send("generate", messages=long, max_tokens=4, temperature=0)
    w.until(lambda m: m.get("id") == a and m["type"] == "progress" and m["processed"] > 0)
    b = w.send("generate", messages=PROMPTS[1], max_tokens=4, temperature=0)
    sid = w.send("stats")
    msgs = w.until(lambda m: m.get("id") == sid) + run_all(w, [a, b])
    idx = {id(m): i for i, m in enumerate(msgs)}
    prefilled = [m for m in of(msgs, a, "progress") if m["processed"] == m["total"]][0]
    stats = [m for m in msgs if m.get("id") == sid][0]
    assert idx[id(of(msgs, b, "started")[0])] > idx[id(prefilled)]
    if idx[id(stats)] < idx[id(prefilled)]:  # answered inside the prefill: b waits there
        assert stats["active"] == [a] and stats["deferred"] == 1
    assert [of(msgs, g, "done")[0]["finish_reason"] for g in (a, b)] == ["length"] * 2


def test_the_solo_takes_a_slot_and_a_generate_beyond_the_limit_waits(spawn, tiny_model):
    w = spawn()
    loaded = w.load(str(tiny_model), max_batch=2, prompt_cache_entries=0)
    assert loaded["max_concurrency"] == 2
    a = w.send("generate", messages=PROMPTS[0], max_tokens=10**6, temperature=0)
    w.until(lambda m: m.get("id") == a and m["type"] == "delta")
    b = w.send("generate", messages=PROMPTS[1], max_tokens=10**6, temperature=0)
    w.until(lambda m: m.get("id") == b and m["type"] == "started")
    c = w.send("generate", messages=PROMPTS[2], max_tokens=10**6, temperature=0)
    stats = w.request("stats")
    assert sorted(stats["active"]) == sorted([a, b]) and stats["deferred"] == 1
    w.send("cancel", target=b)
    w.until(lambda m: m.get("id") == c and m["type"] == "started")  # c takes b's slot
    assert sorted(w.request("stats")["active"]) == sorted([a, c])
    for gid in (a, c):
        w.send("cancel", target=gid)
    msgs = run_all(w, [a, c])
    assert [of(msgs, g, "done")[0]["finish_reason"] for g in (a, c)] == ["cancelled"] * 2
    assert w.request("stats")["active"] == []
