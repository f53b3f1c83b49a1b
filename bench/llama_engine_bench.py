"""Micro-benchmark of Pensieve's llama.cpp engine, in-process: prefill and decode tok/s.

Runs the worker's own generation path (LlamaSolo: chunked prefill, sampler chain,
detokenizer) on a prompt of about N tokens, for each N given, on a fresh sequence
(nothing cached), then a decode of --gen tokens. Prints one JSON object.

  PENSIEVE_LLAMA_LIB_DIR=node_modules/@node-llama-cpp/linux-x64/bins/linux-x64 \\
    .venv/bin/python bench/llama_engine_bench.py [--tokens 2048,11500] [--gen 64] \\
    [--ubatch 512] [--threads N] [--flash-attn 1] [--model GGUF] [--tokenizer DIR]

Without --tokenizer the GGUF's tokenizer-only import is made (cached) first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python_bridge"))
DEFAULT_MODEL = ROOT / ".pensieve/test-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DEFAULT_LIB = ROOT / "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
CODE = ("def fibonacci(n):\n    '''Return the n-th Fibonacci number.'''\n    a, b = 0, 1\n"
        "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n")


class Host:
    """Records when the prefill ended (first token) and counts deltas."""

    def __init__(self) -> None:
        self.first = None
        self.done = None

    def send(self, msg: dict) -> None:
        if msg["type"] == "progress" and msg["processed"] == msg["total"] and self.first is None:
            self.first = time.perf_counter()
        if msg["type"] == "done":
            self.done = msg

    def poll(self) -> None:
        pass

    def log(self, line: str) -> None:
        print(line, file=sys.stderr)


def _prompt(lm, n_tokens: int, salt: int) -> list:
    # A user turn of numbered code blocks, sized by the tokenizer: about n_tokens in all.
    per = len(lm.tokenizer.encode(CODE))
    blocks = [f"# block {salt}-{i}\n{CODE}" for i in range(max(1, n_tokens // (per + 6)))]
    return [{"role": "user", "content": "Explain this code.\n" + "".join(blocks)}]


def run_one(lm, n_tokens: int, gen: int, salt: int) -> dict:
    from pensieve_bridge.llama.solo import LlamaSolo

    host = Host()
    msg = {"id": f"b{salt}", "messages": _prompt(lm, n_tokens, salt), "max_tokens": gen + 1,
           "temperature": 0}
    t0 = time.perf_counter()
    solo = LlamaSolo(host, lm, msg)
    while not solo.step():
        pass
    end = time.perf_counter()
    n_prompt, done = solo.n_prompt, host.done
    prefill_s = host.first - t0
    decode_n = max(0, done["completion_tokens"] - 1)
    decode_s = end - host.first
    return {"prompt_tokens": n_prompt, "cached_tokens": done["cached_tokens"],
            "prefill_s": round(prefill_s, 3), "prefill_tps": round(n_prompt / prefill_s, 1),
            "decode_tokens": decode_n, "finish": done["finish_reason"],
            "decode_tps": round(decode_n / decode_s, 2) if decode_n else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--tokens", default="2048,11500", help="prompt sizes, comma-separated")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--ubatch", type=int, default=None, help="prefill chunk = n_batch = n_ubatch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flash-attn", type=int, default=None, help="-1 auto, 0 off, 1 on")
    ap.add_argument("--context", type=int, default=16384)
    args = ap.parse_args(argv)
    os.environ.setdefault("PENSIEVE_LLAMA_LIB_DIR", str(DEFAULT_LIB))
    if args.threads:
        os.environ["PENSIEVE_LLAMA_THREADS"] = str(args.threads)
    if args.flash_attn is not None:
        os.environ["PENSIEVE_LLAMA_FLASH_ATTN"] = str(args.flash_attn)
    from pensieve_bridge.llama.loader import load_llama_model

    t0 = time.perf_counter()
    # 0 kept entries: every prompt is prefilled from scratch.
    lm = load_llama_model(args.model, args.tokenizer, args.context, args.ubatch, 0, 0)
    load_s = time.perf_counter() - t0
    runs = [run_one(lm, int(n), args.gen, i) for i, n in enumerate(args.tokens.split(","))]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": "llama", "backend": lm.info["backend"], "load_s": round(load_s, 2),
                      "runs": runs, "peak_rss_mb": round(rss_mb),
                      "threads_tps": lm.model.tuner.describe()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
