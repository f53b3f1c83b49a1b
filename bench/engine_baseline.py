"""In-process mlx-lm baseline for the overhead benchmark: no server, no IPC framing.

Usage: python bench/engine_baseline.py MODEL_DIR

Loads the model once, prints {"ready": ...} on stdout, then answers one JSON
line per request line read from stdin:
  {"messages": [...], "tools": [...]|null, "max_tokens": N}
The prompt is rendered the way the Pensieve worker renders it (the tokenizer's
own chat template, add_generation_prompt=True, tools only when given) and
decoded greedily with mlx_lm.stream_generate. Times are perf_counter seconds
from the moment the request line was read (rendering included).
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: engine_baseline.py MODEL_DIR", file=sys.stderr)
        return 2
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    t0 = time.perf_counter()
    model, tokenizer = load(argv[1])
    out = sys.stdout
    out.write(json.dumps({"ready": True, "load_s": time.perf_counter() - t0}) + "\n")
    out.flush()
    sampler = make_sampler(temp=0.0)

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        start = time.perf_counter()
        kwargs = {"add_generation_prompt": True, "tokenize": True}
        if req.get("tools"):
            kwargs["tools"] = req["tools"]
        ids = tokenizer.apply_chat_template(req["messages"], **kwargs)
        if hasattr(ids, "keys") and "input_ids" in ids:
            ids = ids["input_ids"]
        first_text_at = None
        end_at = start
        tokens = 0
        pieces = []
        engine_tps = 0.0
        for resp in stream_generate(model, tokenizer, mx.array(ids),
                                    max_tokens=int(req["max_tokens"]), sampler=sampler):
            now = time.perf_counter()
            if resp.text:
                pieces.append(resp.text)
                if first_text_at is None:
                    first_text_at = now
            tokens = resp.generation_tokens
            engine_tps = resp.generation_tps
            end_at = now
        mx.clear_cache()
        out.write(json.dumps({
            "prompt_tokens": len(ids),
            "output_tokens": int(tokens),
            "ttft_s": None if first_text_at is None else first_text_at - start,
            "decode_s": None if first_text_at is None else end_at - first_text_at,
            "total_s": end_at - start,
            "engine_reported_tps": engine_tps,
            "text": "".join(pieces),
        }) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
