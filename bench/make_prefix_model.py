"""Write the prefix-cache benchmark model: the tiny test model with more layers, offline.

Usage: python3 bench/make_prefix_model.py OUTDIR [--layers N]

Same tokenizer, chat template, width and weight recipe as the tiny test model
(python_bridge/make_tiny_model.py), but 2 layers by default. On MLX's CPU build
a prefill's cost is the attention of every layer but the last (the last layer's
output is needed for the final token only), so the 1-layer tiny model prefills
Claude Code's 24.5k-token first turn almost for free and its turn-2/turn-1 ratio
measures fixed costs. With 2 layers the first turn costs real attention work
(tens of seconds here) while the model stays small. Idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python_bridge"))
import make_tiny_model as tiny  # noqa: E402  (tokenizer, config, weights and writer)

GENERATOR_VERSION = 1
KIND = "prefix-bench"


def settings(layers: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "tiny_generator": tiny.GENERATOR_VERSION,
            "layers": layers}


def is_complete(outdir: Path, layers: int) -> bool:
    try:
        info = json.loads((outdir / tiny.MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (info.get("kind") == KIND and info.get("settings") == settings(layers)
            and all((outdir / f).is_file() for f in tiny.FILES))


def make(outdir: Path, layers: int) -> bool:
    if is_complete(outdir, layers):
        return False
    config = dict(tiny.CONFIG, num_hidden_layers=layers)
    tok = tiny.build_tokenizer()
    tiny.write_model(outdir, tok, tiny.build_weights(tok.get_vocab_size(), config), config, {
        "kind": KIND, "settings": settings(layers), "demo": True,
        "note": "random weights: benchmark use only"})
    return True


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args(argv[1:])
    if args.layers < 1:
        ap.error("--layers must be >= 1")
    outdir = Path(args.outdir).resolve()
    made = make(outdir, args.layers)
    print(f"prefix-cache bench model ({args.layers} layers) "
          f"{'written to' if made else 'already present in'} {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
