"""Pensieve's long-lived MLX worker: one model, JSON lines on stdin/stdout.

The protocol is documented in PROTOCOL.md beside this file. stdout carries
protocol lines only; logs go to stderr and never contain prompt or generated
text.

Usage:
  python3 python_bridge/mlx_inference.py [--model PATH_OR_ID --cache-limit-gb GB
      --prompt-cache-entries N --prompt-cache-gb GB --max-batch N --max-output-tokens N
      --loop-guard-tokens N --coalesce-ms MS] [--engine mlx|llama] [--tokenizer DIR]
      (--model needs every value the load command needs; llama: PENSIEVE_LLAMA_LIB_DIR set)
  python3 python_bridge/mlx_inference.py --clear-cache
  python3 python_bridge/mlx_inference.py --counter   (token counter: tokenizer only)
"""

from __future__ import annotations

import argparse
import os
import sys

# The package lives beside this file; the compiled server extracts both together.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pensieve_bridge.options import REQUIRED  # noqa: E402 - light: no MLX import


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="mlx_inference.py", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="load this model at start (local dir or Hugging Face id)")
    ap.add_argument("--engine", choices=("mlx", "llama"), default="mlx",
                    help="engine for --model: mlx (default) or llama (a .gguf file)")
    ap.add_argument("--tokenizer", help="tokenizer directory for --engine llama")
    # The load command's required values (options.py), required with --model too: no defaults here.
    for key, integer, _lo, _hi in REQUIRED:
        ap.add_argument("--" + key.replace("_", "-"), type=int if integer else float,
                        help=f"{key} of the load command (with --model)")
    ap.add_argument("--counter", action="store_true",
                    help="run as the token counter: load only the tokenizer, serve count_tokens")
    ap.add_argument("--clear-cache", action="store_true",
                    help="clear this process's MLX cache and exit (see note)")
    args = ap.parse_args(argv)
    missing = [f"--{key.replace('_', '-')}" for key, *_ in REQUIRED if getattr(args, key) is None]
    if args.model and missing:
        ap.error(f"--model needs {' '.join(missing)}")
    return args


def load_message(args: argparse.Namespace) -> dict:
    """The load command that --model stands for (id null: nobody asked, the command line did)."""
    msg = {"id": None, "cmd": "load", "model": args.model, "engine": args.engine,
           "tokenizer": args.tokenizer}
    return {**msg, **{key: getattr(args, key) for key, *_ in REQUIRED}}


def clear_cache_cli() -> int:
    import mlx.core as mx

    mx.clear_cache()
    print("[mlx_inference] cleared this process's MLX cache. A running worker's cache "
          "lives in that worker's process and cannot be cleared from here: the server "
          "clears it through the protocol's clear_cache command.", file=sys.stderr)
    return 0


def run_counter(out, inbox) -> int:
    from pensieve_bridge.counter import Counter, hello

    try:
        out.send(hello())
        return Counter(out, inbox).run()
    except BrokenPipeError:
        print("[counter] stdout closed; exiting", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 130


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.clear_cache:
        return clear_cache_cli()

    # Streams first, before mlx-lm/transformers are imported: their prints
    # (and any C-level output on fd 1) must land on stderr.
    from pensieve_bridge.streams import start_reader, take_over_stdout

    out = take_over_stdout()
    if args.counter:
        return run_counter(out, start_reader())
    from pensieve_bridge.worker import Worker, hello

    worker = Worker(out, start_reader())
    try:
        out.send(hello())
        if args.model:
            worker.dispatch(load_message(args))  # a failure is an error line; the worker stays up
        return worker.run()
    except BrokenPipeError:
        # The server closed our stdout: nobody is listening any more.
        print("[worker] stdout closed; exiting", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    # os._exit: skip interpreter teardown, where the stdin reader thread (blocked
    # on read) and MLX's own teardown only add latency to a clean exit.
    os._exit(code)
