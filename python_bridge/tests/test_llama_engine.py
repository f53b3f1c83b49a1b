"""The llama.cpp engine through a real worker process, on the real 0.5B GGUF.

Skipped only with PENSIEVE_REAL_MODELS=0, or when the @node-llama-cpp platform package
(bun install) is absent. The model comes from fetch_model("0.5b") (cached).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import pytest

from conftest import BRIDGE, WorkerProc, load_fields

ROOT = BRIDGE.parent
REAL = os.environ.get("PENSIEVE_REAL_MODELS") != "0"
LOAD_TIMEOUT = 300.0
GEN_TIMEOUT = 240.0  # two shared cores: a prefill chunk can take a while under load
CONTEXT = 2048
STEP = 1024  # large prefill chunks: a cancel must still stop one midway (abort callback)


def _platform_dir() -> str:
    arch = "arm64" if platform.machine() in ("arm64", "aarch64") else "x64"
    return "mac-arm64-metal" if sys.platform == "darwin" else f"linux-{arch}"


def _lib_dir() -> Path:
    env = os.environ.get("PENSIEVE_LLAMA_LIB_DIR")
    if env:
        return Path(env)
    name = _platform_dir()
    return ROOT / "node_modules" / "@node-llama-cpp" / name / "bins" / name


def _skip_reason() -> str | None:
    if not REAL:
        return "PENSIEVE_REAL_MODELS=0"
    lib = _lib_dir()
    if not lib.is_dir() or not any(lib.glob("libllama*")):
        return f"no llama.cpp libraries in {lib} (run bun install: @node-llama-cpp/{_platform_dir()})"
    return None


@pytest.fixture(scope="module")
def model_files() -> tuple[Path, Path]:
    if _skip_reason() is not None:
        pytest.skip(_skip_reason())
    from pensieve_bridge.gguf.convert import convert
    from pensieve_bridge.gguf.fetch import fetch_model

    gguf = fetch_model("0.5b", ROOT / ".pensieve" / "test-models")
    tok = convert(gguf, ROOT / ".pensieve" / "test-models" / "llama-tokenizers", tokenizer_only=True)
    return gguf, tok


def _start(gguf: Path, tok: Path, **load) -> tuple[WorkerProc, dict]:
    w = WorkerProc(env={"PENSIEVE_LLAMA_LIB_DIR": str(_lib_dir())})
    assert w.recv()["type"] == "hello"
    cid = w.send("load", **load_fields(gguf, engine="llama", tokenizer=str(tok), **load))
    return w, w.until(lambda m: m.get("id") == cid, timeout=LOAD_TIMEOUT)[-1]


@pytest.fixture(scope="module")
def llama(model_files):
    gguf, tok = model_files
    w, loaded = _start(gguf, tok, context_length=CONTEXT, prefill_step_size=STEP)
    assert loaded["type"] == "loaded", (loaded, w.stderr[-3000:])
    w.loaded = loaded
    yield w
    w.stop()
    assert not w.bad_lines, f"non-protocol stdout lines: {w.bad_lines[:5]}"


def _gen(w: WorkerProc, **fields) -> list[dict]:
    gid = w.send("generate", **fields)
    return w.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"),
                   timeout=GEN_TIMEOUT)


def _text(msgs: list[dict]) -> str:
    return "".join(m["text"] for m in msgs if m["type"] == "delta")


def _ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_loaded_facts(llama):
    r = llama.loaded
    assert r["engine"] == "llama" and r["model"].endswith(".gguf")
    assert r["context_length"] == CONTEXT and r["max_concurrency"] == 1
    assert r["vocab_size"] == 151936 and r["model_type"] == "qwen2"
    # Qwen2.5-0.5B: 24 layers x 2 KV heads x 64 dims x 2 (K, V) x 2 bytes.
    assert r["kv_bytes_per_token"] == 24 * 2 * 64 * 2 * 2
    assert r["has_tool_calling"] and r["tool_parser"] == "json_tools" and not r["has_thinking"]
    assert r["quantization"] == "Q4_K_M" and r["device"] in ("cpu", "gpu")
    b = r["backend"]
    assert b["name"] == "llama.cpp" and b["version"].startswith(("0.4.", "0.5."))
    assert b["threads"] >= 1 and b["n_batch"] == STEP and "CPU" in b["system_info"]
    assert r["memory"]["rss_gb"] > 0


def test_chat_answers_paris(llama):
    msgs = _gen(llama, messages=_ask("What is the capital of France?"), max_tokens=24,
                temperature=0)
    done = msgs[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop", msgs[-3:]
    assert "Paris" in _text(msgs)
    started = next(m for m in msgs if m["type"] == "started")
    assert started["prompt_tokens"] == done["prompt_tokens"] > 10
    progress = [m for m in msgs if m["type"] == "progress"]
    assert progress and progress[-1]["processed"] == progress[-1]["total"] == done["prompt_tokens"]


def test_completion_continues_prefill(llama):
    messages = [{"role": "user", "content": "Finish my sentence."},
                {"role": "assistant", "content": "The capital of France is"}]
    msgs = _gen(llama, messages=messages, max_tokens=8, temperature=0)
    assert msgs[-1]["type"] == "done", msgs[-3:]
    assert "Paris" in _text(msgs)


def test_prefix_reuse_is_faster(llama):
    system = "You are a careful assistant for a software team. " + " ".join(
        f"Rule {i}: answer briefly and precisely about topic number {i}." for i in range(40))
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]

    def timed(messages):
        t0 = time.perf_counter()
        gid = llama.send("generate", messages=messages, max_tokens=4, temperature=0,
                         cache_prefix={"messages": 1})
        ttft = None
        seen = []
        while True:
            m = llama.recv(GEN_TIMEOUT)
            if m.get("id") != gid:
                continue
            seen.append(m)
            if m["type"] == "progress" and m["processed"] == m["total"] and ttft is None:
                ttft = time.perf_counter() - t0
            if m["type"] in ("done", "error"):
                return seen, ttft

    a, ttft_a = timed(first)
    second = first + [{"role": "assistant", "content": _text(a) or "Hi."},
                      {"role": "user", "content": "And now say bye."}]
    b, ttft_b = timed(second)
    da, db = a[-1], b[-1]
    assert da["type"] == db["type"] == "done", (a[-2:], b[-2:])
    assert da["prompt_tokens"] > 400
    assert da["cache_created_tokens"] > 400  # the system prompt was written (breakpoint 1)
    assert db["cached_tokens"] > 400 and db["cached_tokens"] < db["prompt_tokens"]
    assert db["cache_created_tokens"] == 0  # the breakpoint lies inside what was read
    assert ttft_b < ttft_a, (ttft_a, ttft_b)
    st = llama.request("stats")
    assert st["prompt_cache"]["hits"] >= 1 and st["prompt_cache"]["entries"] >= 1
    assert st["prompt_cache"]["bytes"] > 0


def test_greedy_output_same_with_cache_hit(llama):
    q = _ask("Name three primary colors.")
    one = _gen(llama, messages=q, max_tokens=12, temperature=0)
    two = _gen(llama, messages=q, max_tokens=12, temperature=0)
    assert two[-1]["cached_tokens"] > 0
    assert _text(one) == _text(two)


def test_cancel_during_long_prefill(llama):
    long = "Summarize the following notes.\n" + "\n".join(
        f"Note {i}: the build of module {i} failed on step {i % 7} with code {i * 13}." for i in range(70))
    gid = llama.send("generate", messages=_ask(long), max_tokens=16)
    # The first progress (processed 0) comes right before the first chunk's decode starts.
    llama.until(lambda m: m.get("id") == gid and m["type"] == "progress", timeout=GEN_TIMEOUT)
    time.sleep(0.5)
    t0 = time.perf_counter()
    reply = llama.request("cancel", target=gid)
    assert reply["found"] is True
    seen = llama.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"),
                       timeout=GEN_TIMEOUT)
    elapsed = time.perf_counter() - t0
    done = seen[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled", done
    assert done["completion_tokens"] == 0 and done["prompt_tokens"] > 1000
    # Stopped inside the chunk: no progress past the first, and well before a 1024-token
    # chunk could end (about 5 s on two idle cores, far more when they are shared).
    assert not [m for m in seen if m["type"] == "progress" and m["processed"] > 0]
    assert elapsed < 3.0, elapsed
    # The worker goes on normally after the abort.
    after = _gen(llama, messages=_ask("What is the capital of France?"), max_tokens=8,
                 temperature=0)
    assert after[-1]["type"] == "done" and "Paris" in _text(after)


def test_tool_call(llama):
    tools = [{"type": "function", "function": {
        "name": "Bash", "description": "Run a shell command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                       "required": ["command"]}}}]
    msgs = _gen(llama, messages=_ask("List the files in the current directory."), tools=tools,
                max_tokens=60, temperature=0)
    calls = [m for m in msgs if m["type"] == "tool_call"]
    assert msgs[-1]["finish_reason"] == "tool_calls", msgs[-3:]
    assert calls and calls[0]["name"] == "Bash" and isinstance(calls[0]["arguments"], dict)
    assert "call_id" not in calls[0]  # the server mints tool_use ids


def test_forced_call_is_always_valid_under_the_grammar(llama):
    # tool_choice forces a call: decoded under the call grammar (constrain.py), even at temperature 1.
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    for seed in range(4):
        msgs = _gen(llama, messages=_ask("What's the weather in Paris?"), tools=tools,
                    tool_choice="required", max_tokens=40, temperature=1.0, seed=seed)
        calls = [m for m in msgs if m["type"] == "tool_call"]
        assert msgs[-1]["finish_reason"] == "tool_calls", msgs[-3:]
        assert len(calls) == 1 and calls[0]["name"] == "get_weather"
        assert isinstance(calls[0]["arguments"].get("city"), str)


def test_stop_sequence(llama):
    msgs = _gen(llama, messages=_ask("What is the capital of France?"), max_tokens=24,
                temperature=0, stop=["Paris"])
    done = msgs[-1]
    assert done["finish_reason"] == "stop_sequence" and done["stop_sequence"] == "Paris"
    assert "Paris" not in _text(msgs)


def test_max_tokens_length(llama):
    msgs = _gen(llama, messages=_ask("Write a long poem about the sea."), max_tokens=3,
                temperature=0)
    done = msgs[-1]
    assert done["finish_reason"] == "length" and done["completion_tokens"] == 3
    assert _text(msgs)


def test_prompt_too_long(llama):
    text = " ".join(f"word{i}" for i in range(2 * CONTEXT))
    msgs = _gen(llama, messages=_ask(text), max_tokens=4)
    err = msgs[-1]
    assert err["type"] == "error" and err["code"] == "prompt_too_long", err
    assert err["max_context"] == CONTEXT and err["prompt_tokens"] > CONTEXT
    assert not [m for m in msgs if m["type"] == "started"]


def test_count_tokens_and_relieve(llama):
    q = _ask("What is the capital of France?")
    count = llama.request("count_tokens", messages=q)
    gen = _gen(llama, messages=q, max_tokens=1, temperature=0)
    assert count["input_tokens"] == gen[-1]["prompt_tokens"]
    relieved = llama.request("cache_relieve", level="drop")
    assert relieved["entries"] == 0 and relieved["bytes"] == 0
    cleared = llama.request("clear_cache")
    assert cleared["type"] == "cleared" and cleared["memory"]["rss_gb"] > 0
    after = _gen(llama, messages=q, max_tokens=1, temperature=0)
    assert after[-1]["cached_tokens"] == 0


def test_counter_counts_like_the_worker(llama, model_files, spawn):
    gguf, tok = model_files
    counter = spawn(["--counter"])
    loaded = counter.request("load", model=str(gguf), engine="llama", tokenizer=str(tok))
    assert loaded["type"] == "loaded" and loaded["counter"] is True, loaded
    q = _ask("How many tokens is this?")
    assert (counter.request("count_tokens", messages=q)["input_tokens"]
            == llama.request("count_tokens", messages=q)["input_tokens"])
    assert not counter.bad_lines


def test_bad_engine_and_missing_gguf(spawn, model_files):
    _gguf, tok = model_files
    w = spawn(env={"PENSIEVE_LLAMA_LIB_DIR": str(_lib_dir())})
    bad = w.load("x.gguf", engine="onnx")
    assert bad["type"] == "error" and bad["code"] == "bad_request"
    missing = w.load("/nonexistent/m.gguf", engine="llama", tokenizer=str(tok))
    assert missing["type"] == "error" and missing["code"] == "load_failed"
    assert not w.bad_lines


# -- units without the library: the sequence cache and the thread tuner ----------------


class FakeEngine:
    """One sequence of KV, with saved states as copies of it (llama_state_seq_* stand-ins)."""

    n_seq = 1

    def __init__(self, header: int = 0):
        self.seqs: dict[int, list] = {}
        self.saves = self.loads = 0
        self.header = header  # bytes a saved state carries beyond its tokens' KV

    def kv_bytes_per_token(self) -> int:
        return 10

    def seq_rm(self, seq, p0=-1, p1=-1):
        held = self.seqs.get(seq, [])
        self.seqs[seq] = [] if p0 < 0 else held[:p0]
        return True

    def save_seq(self, seq):
        import numpy as np

        self.saves += 1
        held = self.seqs.get(seq, [])
        raw = np.asarray(held, dtype=np.int32).tobytes() + bytes(6 * len(held) + self.header)  # 10 bytes a token
        return np.frombuffer(raw, dtype=np.uint8).copy()

    def load_seq(self, data, seq):
        self.loads += 1
        assert not self.seqs.get(seq)  # restored into an empty sequence
        n = (len(data) - self.header) // 10
        self.seqs[seq] = [int(x) for x in data[:4 * n].view("int32")]
        return True


def _generate(eng, cache, prompt, reply=()):
    seq, cached = cache.acquire(prompt)
    assert eng.seqs.get(seq, [])[:cached] == list(prompt[:cached]) and len(eng.seqs.get(seq, [])) == cached
    eng.seqs[seq] = list(prompt) + list(reply)
    cache.release(seq, list(prompt) + list(reply))
    return cached


def test_seq_cache_keeps_one_conversation_resident_and_the_others_saved():
    from pensieve_bridge.llama.prompt_cache import SeqCache

    eng = FakeEngine()
    cache = SeqCache(eng, 3, 10_000)
    assert _generate(eng, cache, [1, 2, 3, 4], [9]) == 0 and cache.misses == 1
    # The next turn of the same conversation: the resident sequence is extended, nothing copied.
    assert _generate(eng, cache, [1, 2, 3, 4, 9, 5], [6]) == 5
    assert eng.saves == 0 and eng.loads == 0 and len(cache.entries) == 1
    # Another conversation: the first is saved, the KV holds only the new one.
    assert _generate(eng, cache, [7, 7, 7], [8]) == 0 and eng.saves == 1
    assert eng.seqs == {0: [7, 7, 7, 8]} and len(cache.entries) == 2  # kept entries take no KV cells
    # Back to the first: its saved state is loaded back, the second saved in turn.
    assert _generate(eng, cache, [1, 2, 3, 4, 9, 5, 6, 2]) == 7 and eng.loads == 1 and eng.saves == 2
    assert cache.nbytes == 8 * 10 + 4 * 10  # resident KV + the saved one
    # A prompt sharing only part of a saved entry: a copy is loaded and trimmed; the entry stays.
    assert _generate(eng, cache, [7, 7, 1]) == 2 and eng.loads == 2
    assert any(list(e.tokens) == [7, 7, 7, 8] for e in cache.entries)
    cache.relieve("drop")
    assert cache.stats()["entries"] == 0 and cache.nbytes == 0 and eng.seqs[0] == []


def test_seq_cache_saves_a_resident_tail_worth_keeping():
    from pensieve_bridge.llama import prompt_cache as pc

    eng = FakeEngine()
    cache = pc.SeqCache(eng, 3, 1_000_000)
    long = list(range(1000, 1000 + pc.SAVE_TAIL_MIN + 10))
    _generate(eng, cache, [5] * 20 + long)
    # A side request sharing only the first 20 tokens: the resident's long tail is saved first.
    assert _generate(eng, cache, [5] * 20 + [1, 2]) == 20 and eng.saves == 1
    assert _generate(eng, cache, [5] * 20 + long + [3]) == 20 + len(long)  # the main one comes back whole


def test_seq_cache_restores_an_entry_that_saving_the_resident_would_evict():
    from pensieve_bridge.llama.prompt_cache import SeqCache

    eng = FakeEngine(header=30)
    cache = SeqCache(eng, 4, 100)
    _generate(eng, cache, [1, 2, 3, 4])  # resident: 40 bytes
    _generate(eng, cache, [7, 7, 7])  # [1..4] saved (70) + resident 30 = 100
    # Continuing [1..4]: saving [7,7,7] (60) goes over the bound, and the oldest is the one wanted.
    assert _generate(eng, cache, [1, 2, 3, 4, 5]) == 4 and eng.loads == 1
    assert cache.nbytes <= 100


def test_seq_cache_bounds():
    from pensieve_bridge.llama.prompt_cache import SeqCache

    eng = FakeEngine()
    cache = SeqCache(eng, 2, 60)
    for first in (10, 20, 30):  # three unrelated prompts: the oldest goes
        _generate(eng, cache, [first, 1, 2])
    assert [int(e.tokens[0]) for e in cache.entries] == [20, 30]
    seq, _ = cache.acquire([40] * 7)
    assert cache.release(seq, [40] * 7) == 0  # 70 bytes > the 60-byte bound: not kept
    assert set(eng.seqs) == {0}  # one sequence only, whatever was kept
    assert SeqCache(eng, 0, 0).release(0, [1, 2]) == 0  # caching off


def test_thread_tuner_prefers_the_faster_count():
    from pensieve_bridge.llama.threads import ThreadTuner

    t = ThreadTuner(2)
    assert t.choose("token") == 2
    t.record("token", 2, 1.0, 1)  # two threads stall (shared cores)
    assert t.choose("token") == 1
    t.record("token", 1, 0.1, 1)
    picks = [t.choose("token") for _ in range(1500)]
    assert picks.count(1) > 1480 and 2 in picks  # mostly one thread, re-measuring now and then
    assert ThreadTuner(2, fixed=2).choose("chunk") == 2
    assert ThreadTuner(1).choose("chunk") == 1


def test_thread_tuner_never_probes_one_thread_while_the_cores_are_its_own():
    from pensieve_bridge.llama.threads import ThreadTuner

    t = ThreadTuner(2)
    for _ in range(500):
        n = t.choose("chunk")
        assert n == 2  # no one-thread probe: the first request pays nothing
        t.record("chunk", n, 1.0, 512, cpu_seconds=1.96)  # 2 threads x 1 s x 0.98
    assert t.describe()["cpu_share"] == {"chunk": 0.98}


def test_thread_tuner_probes_when_the_cores_are_shared_and_comes_back():
    from pensieve_bridge.llama.threads import ThreadTuner

    t = ThreadTuner(2)
    t.record("chunk", 2, 1.0, 512, cpu_seconds=1.96)
    assert t.choose("chunk") == 2
    for _ in range(4):  # another process takes one core: 2 threads get 65 % and slow down
        t.record("chunk", 2, 4.0, 512, cpu_seconds=5.2)
    assert t.choose("chunk") == 1  # measured once
    t.record("chunk", 1, 1.5, 512, cpu_seconds=1.5)
    picks = [t.choose("chunk") for _ in range(200)]
    assert picks.count(1) > 190 and 2 in picks  # one thread, all cores re-measured now and then
    t.record("chunk", 2, 1.0, 512, cpu_seconds=1.96)  # the other process is gone
    t.record("chunk", 2, 1.0, 512, cpu_seconds=1.96)
    assert [t.choose("chunk") for _ in range(50)] == [2] * 50
