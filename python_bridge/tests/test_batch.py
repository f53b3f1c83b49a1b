"""Concurrent generations batched in mlx-lm's BatchGenerator."""

import pytest

PROMPTS = [[{"role": "user", "content": f"request number {i}: tell me something"}] for i in range(3)]


@pytest.fixture(scope="module")
def bworker(batch_worker):
    return batch_worker


def run_all(w, ids):
    """Messages until every id in ids has its done (or error); returns them in order."""
    left, seen = set(ids), []
    while left:
        m = w.recv()
        seen.append(m)
        if m.get("id") in left and m["type"] in ("done", "error"):
            left.discard(m["id"])
    return seen


def of(msgs, gid, kind=None):
    return [m for m in msgs if m.get("id") == gid and (kind is None or m["type"] == kind)]


def test_three_concurrent_generates_interleave_and_each_finishes(bworker):
    ids = [bworker.send("generate", messages=p, max_tokens=24, temperature=0) for p in PROMPTS]
    msgs = run_all(bworker, ids)
    order = [m["id"] for m in msgs if m["type"] == "delta"]
    # Interleaved: some request's delta comes between two deltas of another.
    firsts = {gid: order.index(gid) for gid in ids}
    lasts = {gid: len(order) - 1 - order[::-1].index(gid) for gid in ids}
    assert any(firsts[b] < lasts[a] and firsts[a] < lasts[b] for a in ids for b in ids if a != b)
    for gid in ids:
        own = [m["type"] for m in of(msgs, gid) if m["type"] != "progress"]
        assert own[0] == "started" and own[-1] == "done"
        progress = of(msgs, gid, "progress")
        assert progress[-1]["processed"] == progress[-1]["total"] == of(msgs, gid, "started")[0]["prompt_tokens"]
        done = of(msgs, gid, "done")[0]
        assert done["finish_reason"] == "length" and done["completion_tokens"] == 24
        assert done["cache_created_tokens"] == 0  # caching is off in this worker


def test_batched_greedy_output_matches_a_lone_run(bworker):
    alone = ["".join(m["text"] for m in bworker.generate(messages=p, max_tokens=12, temperature=0)
                     if m["type"] == "delta") for p in PROMPTS]
    ids = [bworker.send("generate", messages=p, max_tokens=12, temperature=0) for p in PROMPTS]
    msgs = run_all(bworker, ids)
    together = ["".join(m["text"] for m in of(msgs, gid, "delta")) for gid in ids]
    assert together == alone


def test_cancel_of_one_leaves_the_others_running(bworker):
    ids = [bworker.send("generate", messages=p, max_tokens=400, temperature=0) for p in PROMPTS]
    victim = ids[1]
    bworker.until(lambda m: m.get("id") == victim and m["type"] == "delta")
    reply = bworker.request("cancel", target=victim)
    assert reply["found"] is True
    msgs = run_all(bworker, ids)
    assert of(msgs, victim, "done")[0]["finish_reason"] == "cancelled"
    for gid in (ids[0], ids[2]):
        done = of(msgs, gid, "done")[0]
        assert done["finish_reason"] == "length" and done["completion_tokens"] == 400
    assert bworker.request("stats")["active"] == []


def test_stats_list_the_batch_and_a_late_request_joins_it(bworker):
    a = bworker.send("generate", messages=PROMPTS[0], max_tokens=300, temperature=0)
    bworker.until(lambda m: m.get("id") == a and m["type"] == "delta")
    b = bworker.send("generate", messages=PROMPTS[1], max_tokens=5, temperature=0)
    # b starts and ends while a is still generating.
    seen = bworker.until(lambda m: m.get("id") == b and m["type"] == "done")
    assert not of(seen, a, "done")
    stats = bworker.request("stats")
    assert stats["active"] == [a] and stats["generating"] == a
    bworker.send("cancel", target=a)
    assert bworker.until(lambda m: m.get("id") == a and m["type"] == "done")[-1]["finish_reason"] == "cancelled"


def test_a_seeded_request_runs_alone_and_others_still_finish(bworker):
    a = bworker.send("generate", messages=PROMPTS[0], max_tokens=30, temperature=0)
    b = bworker.send("generate", messages=PROMPTS[1], max_tokens=8, temperature=1.0, seed=7)
    c = bworker.send("generate", messages=PROMPTS[2], max_tokens=8, temperature=0)
    msgs = run_all(bworker, [a, b, c])
    assert all(of(msgs, g, "done") for g in (a, b, c))
    # b started only after a (the batch it could not join) had finished.
    idx = {id(m): i for i, m in enumerate(msgs)}
    assert idx[id(of(msgs, b, "started")[0])] > idx[id(of(msgs, a, "done")[0])]


def test_bad_max_batch_is_refused(spawn, tiny_model):
    w = spawn()
    err = w.load(str(tiny_model), max_batch=0)
    assert err["type"] == "error" and err["code"] == "bad_request"
