"""Per-token cost of constrained decoding for a forced tool call (python_bridge/pensieve_bridge/constrain.py).

Usage: python bench/constrain_bench.py --tokenizer DIR [--tokenizer DIR ...] [--model DIR ...]
       [--repeats N] [--max-tokens N] [--json OUT]

For each tokenizer: the time to map it for each library (llguidance, outlines-core when
installed), to compile the forced-call grammar, and the microseconds per token to compute
the next token's mask along a canonical call (the mask as a bool array over the vocabulary,
which is what an engine applies). With --model (the tiny random-weight model): generation
tok/s on mlx-lm with and without the constraint, the same prompts and seeds.
xgrammar is not measured: its wheel requires torch (and triton), disqualifying for the bridge.
Prints one JSON object (also written to --json).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_bridge"))

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
             "required": ["a", "b"], "additionalProperties": False}}}]
CC_CALL = ('<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -la /tmp && echo done", '
           '"description": "List files"}}\n</tool_call>')
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris, the capital of France", "days": 3}}\n</tool_call>'


def fake_lm(path: Path):
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from pensieve_bridge.toolcalls import format_for

    tok = load_tokenizer(path)
    return SimpleNamespace(tokenizer=tok, tool_format=format_for(tok), think=None,
                           config=json.loads((path / "config.json").read_text()))


def us(seconds: list[float]) -> float:
    return round(1e6 * statistics.median(seconds), 1)


def bench_llguidance(path: Path, repeats: int, tools: list = TOOLS, call: str = CALL) -> dict:
    import pensieve_bridge.constrain as constrain

    lm = fake_lm(path)
    t0 = time.perf_counter()
    constrain.ll_tokenizer(lm.tokenizer, constrain._vocab_size(lm))
    map_s = time.perf_counter() - t0
    p = SimpleNamespace(tools=tools, tool_choice="required")
    compile_s, per_token = [], []
    ids = list(lm.tokenizer.encode(call, add_special_tokens=False))
    for _ in range(repeats):
        t0 = time.perf_counter()
        c = constrain.constraint_for(lm, p)
        compile_s.append(time.perf_counter() - t0)
        for t in ids:
            t0 = time.perf_counter()
            mask = c.allowed()
            per_token.append(time.perf_counter() - t0)
            assert mask[t] and c.advance(t)
        assert c.done
    return {"library": "llguidance", "version": _version("llguidance"), "vocab": int(mask.shape[0]),
            "map_tokenizer_s": round(map_s, 3), "compile_ms": round(1e3 * statistics.median(compile_s), 2),
            "mask_us_per_token": us(per_token), "mask_us_mean": round(1e6 * float(np.mean(per_token)), 1),
            "mask_us_p90": round(1e6 * np.percentile(per_token, 90), 1), "tokens": len(ids)}


def _byte_vocab(hf) -> tuple[dict, int]:
    """outlines-core's vocabulary: token bytes -> ids (byte-level BPE), EOS apart."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    dec = {c: b for b, c in bytes_to_unicode().items()}
    eos = hf.eos_token_id
    added = {t.content for t in hf.added_tokens_decoder.values()}
    out: dict[bytes, list[int]] = {}
    for tok, i in hf.get_vocab().items():
        if i == eos:
            continue
        raw = tok.encode() if tok in added else bytes(dec[c] for c in tok if c in dec)
        out.setdefault(raw, []).append(i)
    return out, eos


def bench_outlines(path: Path, repeats: int, tools: list = TOOLS, call: str = CALL) -> dict:
    import outlines_core as oc

    lm = fake_lm(path)
    hf = lm.tokenizer._tokenizer
    t0 = time.perf_counter()
    vocab_map, eos = _byte_vocab(hf)
    vocab = oc.Vocabulary(eos, vocab_map)
    map_s = time.perf_counter() - t0
    calls = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                               "arguments": t["function"]["parameters"]},
              "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    body = oc.json_schema.build_regex_from_schema(json.dumps({"anyOf": calls}), r"[ ]?")
    regex = re.escape("<tool_call>\n") + body + re.escape("\n</tool_call>")
    t0 = time.perf_counter()
    index = oc.Index(regex, vocab)
    compile_s = time.perf_counter() - t0
    n_vocab = max(len(hf), lm.config.get("vocab_size") or 0)
    bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
    ids = list(lm.tokenizer.encode(call, add_special_tokens=False))
    per_token = []
    for _ in range(repeats):
        guide = oc.Guide(index)
        for t in ids:
            t0 = time.perf_counter()
            guide.write_mask_into(bits.ctypes.data, bits.size, 4)
            mask = np.unpackbits(bits.view(np.uint8), bitorder="little")[:n_vocab].astype(bool)
            per_token.append(time.perf_counter() - t0)
            assert mask[t], (t, hf.decode([t]))
            guide.advance(t)
        assert guide.is_finished()
    return {"library": "outlines-core", "version": _version("outlines-core"), "vocab": n_vocab,
            "map_tokenizer_s": round(map_s, 3), "compile_ms": round(1e3 * compile_s, 2),
            "mask_us_per_token": us(per_token), "mask_us_mean": round(1e6 * float(np.mean(per_token)), 1),
            "mask_us_p90": round(1e6 * np.percentile(per_token, 90), 1), "tokens": len(ids)}


def bench_e2e(path: Path, repeats: int, max_tokens: int = 300) -> dict:
    """tok/s of the tiny model on mlx-lm: free generation vs under the forced-call constraint."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler
    import pensieve_bridge.constrain as constrain

    model, tok = load(str(path))
    lm = SimpleNamespace(tokenizer=tok, tool_format=fake_lm(path).tool_format, think=None,
                         config=json.loads((path / "config.json").read_text()))
    prompt = mx.array(tok.encode("What's the weather in Paris? " * 4))
    p = SimpleNamespace(tools=TOOLS, tool_choice="required")
    rates: dict[str, list[float]] = {"free": [], "constrained": []}
    for seed in range(repeats):
        for kind in ("free", "constrained"):
            procs = constrain.processors(constrain.constraint_for(lm, p) if kind == "constrained" else None,
                                         int(prompt.shape[0]))
            mx.random.seed(seed)
            n, t0 = 0, None
            for r in stream_generate(model, tok, prompt, max_tokens=max_tokens, logits_processors=procs,
                                     sampler=make_sampler(temp=1.0)):
                if t0 is None:
                    t0 = time.perf_counter()  # from the first token: decode only
                n += 1
            if n > 4:
                rates[kind].append((n - 1) / (time.perf_counter() - t0))
    free, con = statistics.median(rates["free"]), statistics.median(rates["constrained"])
    return {"model": str(path), "free_tok_s": round(free, 1), "constrained_tok_s": round(con, 1),
            "ratio": round(con / free, 3)}


LIBS = {"bench_llguidance": "llguidance", "bench_outlines": "outlines-core"}


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", action="append", default=[])
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--tools-fixture", help="a request JSON whose tools (Claude Code's) are measured too")
    a = ap.parse_args()
    out: dict = {"masks": [], "e2e": None, "e2e_all": [], "xgrammar": "not measured: requires torch and triton"}
    sets = [("2 small tools", TOOLS, CALL)]
    if a.tools_fixture:
        cc = json.loads(Path(a.tools_fixture).read_text())["tools"]
        sets.append((f"Claude Code's {len(cc)} tools", cc, CC_CALL))
    for d in a.tokenizer:
        for label, tools, call in sets:
            for fn in (bench_llguidance, bench_outlines):
                try:
                    res = fn(Path(d), a.repeats, tools, call)
                except Exception as exc:  # noqa: BLE001 - not installed, or cannot express the schemas
                    res = {"library": LIBS[fn.__name__], "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
                out["masks"].append({"tokenizer": d, "tools": label, **res})
                print(json.dumps(out["masks"][-1]), file=sys.stderr)
    for m in a.model:
        out["e2e_all"].append(bench_e2e(Path(m), a.repeats, a.max_tokens))
        print(json.dumps(out["e2e_all"][-1]), file=sys.stderr)
    out["e2e"] = out["e2e_all"][0] if out["e2e_all"] else None  # the first model's (the tiny one)
    text = json.dumps(out, indent=2)
    if a.json:
        Path(a.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
