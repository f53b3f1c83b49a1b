"""Coalescing of streamed text: fewer lines on a fast model, same text, first text at once."""

import pytest

from pensieve_bridge.coalesce import Coalescer

PROMPT = [{"role": "user", "content": "write something long about the server"}]


# -- the Coalescer alone, on a fake clock ------------------------------------------------

def delta(text, gid="g"):
    return {"type": "delta", "id": gid, "text": text}


def test_first_text_goes_out_at_once_then_text_within_the_window_is_held():
    sent, c = [], Coalescer("g", window=0.004)
    c.push(sent.append, [delta("a")], now=10.0)
    assert sent == [delta("a")]
    c.push(sent.append, [delta("b")], now=10.001)
    c.push(sent.append, [delta("c")], now=10.002)
    assert sent == [delta("a")] and c.holding
    c.tick(sent.append, now=10.0039)
    assert len(sent) == 1
    c.tick(sent.append, now=10.0041)
    assert sent == [delta("a"), delta("bc")] and not c.holding


def test_a_slow_stream_sends_every_token_at_once():
    sent, c = [], Coalescer("g", window=0.004)
    for i in range(5):
        c.push(sent.append, [delta(str(i))], now=1.0 + i * 0.005)
    assert sent == [delta(str(i)) for i in range(5)]


def test_other_events_flush_held_text_first_and_keep_the_order():
    sent, c = [], Coalescer("g", window=1.0)
    call = {"type": "tool_call", "id": "g", "name": "Bash", "arguments": {}}
    c.push(sent.append, [delta("a")], now=0.0)
    c.push(sent.append, [delta("b"), {"type": "thinking", "id": "g", "text": "t1"}], now=0.1)
    c.push(sent.append, [{"type": "thinking", "id": "g", "text": "t2"}, call, delta("c")], now=0.2)
    c.flush(sent.append)
    assert [(m["type"], m.get("text")) for m in sent] == [
        ("delta", "a"), ("delta", "b"), ("thinking", "t1t2"), ("tool_call", None), ("delta", "c")]


def test_a_zero_window_sends_every_event():
    sent, c = [], Coalescer("g", window=0.0)
    for t in "abc":
        c.push(sent.append, [delta(t)], now=5.0)
    assert sent == [delta("a"), delta("b"), delta("c")]


# -- through a real worker ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tiny_model):
    """A worker that coalesces within a long window, and one that never coalesces."""
    from conftest import WorkerProc

    workers = {}
    for name, ms in (("slow", 60_000), ("wide", 1000), ("off", 0)):
        w = WorkerProc()
        assert w.recv()["type"] == "hello"
        loaded = w.load(str(tiny_model), coalesce_ms=ms, prompt_cache_entries=0)
        assert loaded["type"] == "loaded", loaded
        workers[name] = w
    yield workers
    for w in workers.values():
        w.stop()
        assert not w.bad_lines


def deltas(msgs):
    return [m for m in msgs if m["type"] == "delta"]


def generate_on(w, path, **args):
    """A lone generate runs solo; one sent while another runs joins the batch."""
    if path == "solo":
        return w.generate(**args)
    filler = w.send("generate", messages=PROMPT, max_tokens=10**6, temperature=0)
    w.until(lambda m: m.get("id") == filler and m["type"] == "delta")
    gid = w.send("generate", **args)
    msgs = w.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"))
    w.send("cancel", target=filler)
    w.until(lambda m: m.get("id") == filler and m["type"] == "done")
    return [m for m in msgs if m.get("id") == gid]


@pytest.mark.parametrize("path", ["batch", "solo"])
def test_coalesced_text_is_identical_and_comes_in_fewer_lines(pair, path):
    args = dict(messages=PROMPT, max_tokens=200, temperature=0)
    ref = generate_on(pair["off"], path, **args)
    got = generate_on(pair["wide"], path, **args)
    assert got[-1]["type"] == ref[-1]["type"] == "done"
    assert got[-1]["completion_tokens"] == ref[-1]["completion_tokens"] == 200
    assert "".join(m["text"] for m in deltas(got)) == "".join(m["text"] for m in deltas(ref))
    assert len(deltas(ref)) > 100  # uncoalesced: about one line per token
    assert len(deltas(got)) < 200 / 2
    # Still the protocol's order: started, progress..., deltas, done.
    kinds = [m["type"] for m in got if m["type"] != "progress"]
    assert kinds[0] == "started" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}


def test_the_first_text_is_not_held_and_a_cancel_flushes_the_rest(pair):
    w = pair["slow"]  # everything after the first text is held for a minute
    reference = "".join(m["text"] for m in deltas(pair["off"].generate(
        messages=PROMPT, max_tokens=400, temperature=0)))
    gid = w.send("generate", messages=PROMPT, max_tokens=5000, temperature=0)
    before = w.until(lambda m: m.get("id") == gid and m["type"] == "delta")
    assert not [m for m in before if m["type"] == "done"]
    w.send("cancel", target=gid)
    after = w.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"))
    assert after[-1]["type"] == "done" and after[-1]["finish_reason"] == "cancelled"
    # The generation was still running when its first text came: the cancel cut it short.
    assert after[-1]["completion_tokens"] < 5000
    got = deltas(before) + deltas(after)
    assert len(got) <= 2  # the first text, then the held rest at the cancel
    text = "".join(m["text"] for m in got)
    n = min(len(text), len(reference))
    assert n > 0 and text[:n] == reference[:n]


def test_bad_coalesce_ms_is_refused(spawn, tiny_model):
    w = spawn()
    for bad in (-1, "4", True, 10**9):
        err = w.load(str(tiny_model), coalesce_ms=bad)
        assert err["type"] == "error" and err["code"] == "bad_request", err
