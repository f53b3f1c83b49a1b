"""Write the ~100M-parameter random-weight benchmark model, fully offline.

Usage: python3 bench/make_bench_model.py OUTDIR [--layers N] [--hidden N] [--dtype float32|bfloat16|float16]

Same tokenizer and chat template as the tiny test model (imported from
python_bridge/make_tiny_model.py), but a qwen2 config big enough (hidden 768,
12 layers, ~105M parameters by default) that decoding is not dominated by
per-token overhead. The (tied) embedding rows of special and added tokens, and
of byte tokens that are not valid UTF-8 alone, are zero: greedy decoding never
picks them, so every run generates exactly max_tokens of plain text that
streams token by token (no end of turn, no held-back tool-call marker).
Idempotent: a complete model with the same settings is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python_bridge"))
import make_tiny_model as tiny  # noqa: E402  (tokenizer, template and file helpers)

GENERATOR_VERSION = 2
MARKER = "pensieve-bench-model.json"
SEED = 4321


def config_for(args: argparse.Namespace, vocab_size: int) -> dict:
    heads = args.hidden // 64
    return dict(
        tiny.CONFIG,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 3),
        head_dim=64,
        torch_dtype=args.dtype,
        vocab_size=vocab_size,
    )


def settings(args: argparse.Namespace) -> dict:
    return {"generator_version": GENERATOR_VERSION, "layers": args.layers,
            "hidden": args.hidden, "dtype": args.dtype}


def is_complete(outdir: Path, args: argparse.Namespace) -> bool:
    try:
        info = json.loads((outdir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("settings") == settings(args) and all((outdir / f).is_file() for f in tiny.FILES)


def unstreamable_ids(tok, vocab_size: int) -> list[int]:
    """Special/added tokens, and tokens that do not decode to valid text on their own."""
    marked = {tok.token_to_id(t) for t in tiny.SPECIAL_TOKENS + tiny.ADDED_TOKENS}
    for i in range(vocab_size):
        text = tok.decode([i], skip_special_tokens=False)
        if not text or "\ufffd" in text:
            marked.add(i)
    return sorted(i for i in marked if i is not None)


def build_weights(cfg: dict, zero_rows: list[int]) -> dict:
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.models.qwen2 import Model, ModelArgs

    model = Model(ModelArgs.from_dict(cfg))
    rng = np.random.default_rng(SEED)
    weights = {}
    for name, param in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            arr = np.ones(param.shape, dtype=np.float32)
        else:
            arr = (rng.standard_normal(param.shape, dtype=np.float32) * 0.02).astype(np.float32)
        if name == "model.embed_tokens.weight":
            # Tied head: a zero row gives logit 0, never the max over ~1000 random logits.
            arr[zero_rows] = 0.0
        weights[name] = arr
    return weights


def make(outdir: Path, args: argparse.Namespace) -> bool:
    if is_complete(outdir, args):
        return False
    outdir.mkdir(parents=True, exist_ok=True)
    import mlx.core as mx

    tok = tiny.build_tokenizer()
    vocab_size = tok.get_vocab_size()
    eos_id = tok.token_to_id("<|im_end|>")
    pad_id = tok.token_to_id("<|endoftext|>")
    cfg = config_for(args, vocab_size)
    weights = build_weights(cfg, unstreamable_ids(tok, vocab_size))
    dtype = getattr(mx, args.dtype)
    n_params = sum(int(w.size) for w in weights.values())

    fd, tmp = tempfile.mkstemp(dir=outdir, prefix=".model.", suffix=".safetensors")
    os.close(fd)
    mx.save_safetensors(tmp, {k: mx.array(v).astype(dtype) for k, v in weights.items()}, {"format": "mlx"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, outdir / "model.safetensors")

    tiny._write_bytes(outdir / "tokenizer.json", tok.to_str(pretty=True).encode())
    tiny._write_json(outdir / "config.json", dict(cfg, eos_token_id=eos_id, bos_token_id=None))
    tiny._write_json(outdir / "generation_config.json",
                     {"eos_token_id": [eos_id, pad_id], "pad_token_id": pad_id, "do_sample": True})
    tiny._write_json(outdir / "special_tokens_map.json",
                     {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                      "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tiny._write_json(outdir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": tiny.CONTEXT_LENGTH,
        "clean_up_tokenization_spaces": False,
        "chat_template": tiny.CHAT_TEMPLATE,
    })
    # The marker goes last: its presence means every other file is complete.
    tiny._write_json(outdir / MARKER, {"settings": settings(args), "parameters": n_params,
                                       "note": "random weights: benchmark use only"})
    return True


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768, help="a multiple of 192")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv[1:])
    if args.hidden % 192:
        ap.error("--hidden must be a multiple of 192 (64-wide heads, 3 query heads per KV head)")
    outdir = Path(args.outdir).resolve()
    made = make(outdir, args)
    info = json.loads((outdir / MARKER).read_text())
    print(f"bench model ({info['parameters'] / 1e6:.1f}M parameters) "
          f"{'written to' if made else 'already present in'} {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
