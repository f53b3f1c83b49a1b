"""The token counter: `mlx_inference.py --counter`, a process that loads only the tokenizer.

The server sends every count_tokens here, so rendering and tokenizing a huge prompt
never stalls the model worker's generation loop (the GIL and the loop are not shared),
and a count that runs too long costs a counter restart, never a model reload.
Commands are answered one at a time, in order: load, count_tokens, stats, shutdown."""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from .commands import parse_command
from .errors import WorkerError, bad_request
from .params import parse_prompt, render
from .model import LoadedModel
from .streams import EOF_MARK, ProtocolOut

# What mlx_lm.load_tokenizer itself fetches from the hub (no weights).
_TOKENIZER_FILES = ["*.json", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
                    "*.txt", "*.jsonl", "*.jinja"]


def hello() -> dict:
    from importlib.metadata import version

    import mlx.core as mx

    return {"type": "hello", "pid": os.getpid(), "python": platform.python_version(),
            "mlx": mx.__version__, "mlx_lm": version("mlx-lm"), "platform": sys.platform,
            "role": "counter"}


def load_tokenizer_only(name: str) -> LoadedModel:
    """The tokenizer and chat template exactly as mlx_lm.load sets them up, without weights."""
    from mlx_lm.utils import _download, load_config, load_tokenizer

    path = Path(_download(name, allow_patterns=_TOKENIZER_FILES))
    config = load_config(path)
    tokenizer = load_tokenizer(path, None, eos_token_ids=config.get("eos_token_id", None))
    # Rendering reads only the tokenizer; the context is the model worker's business.
    return LoadedModel(name=name, model=None, tokenizer=tokenizer, config=config, context_length=0)


def _tokenizer_source(msg: dict, name: str) -> str:
    """Where the tokenizer is: the model itself, or for engine "llama" (a .gguf) its
    tokenizer directory (the `tokenizer` load field, else the GGUF's tokenizer-only import)."""
    if msg.get("engine") != "llama":
        return name
    from .llama.loader import tokenizer_dir

    tok = msg.get("tokenizer")
    return str(tokenizer_dir(Path(name).expanduser(), tok if isinstance(tok, str) else None))


class Counter:
    def __init__(self, out: ProtocolOut, inbox):
        self.out = out
        self.inbox = inbox
        self.lm: Optional[LoadedModel] = None

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def run(self) -> int:
        while True:
            raw = self.inbox.get()
            if raw is EOF_MARK:
                self.log("[counter] stdin closed; exiting")
                return 0
            msg = parse_command(raw, self.out.send)
            if msg is not None and self.dispatch(msg) == "exit":
                return 0

    def dispatch(self, msg: dict) -> Optional[str]:
        cmd, cmd_id = msg["cmd"], msg["id"]
        handler = getattr(self, f"cmd_{cmd}", None)
        try:
            if handler is None:
                raise bad_request(f"the token counter does not serve {cmd!r}")
            return handler(msg)
        except WorkerError as exc:
            self.out.send(exc.reply(cmd_id))
        except Exception as exc:  # keep serving: the server decides what to do
            self.log(f"[counter] {cmd} id={cmd_id} failed:\n{traceback.format_exc()}")
            self.out.send(WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(cmd_id))
        return None

    def cmd_load(self, msg: dict) -> None:
        name = msg.get("model")
        if not isinstance(name, str) or not name:
            raise bad_request("load needs a model (path or Hugging Face id)")
        t0 = time.perf_counter()
        try:
            self.lm = load_tokenizer_only(_tokenizer_source(msg, name))
            self.lm.name = name
        except Exception as exc:
            self.log(f"[counter] load failed:\n{traceback.format_exc()}")
            raise WorkerError("load_failed", f"could not load the tokenizer of {name}: "
                              f"{type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - t0
        self.log(f"[counter] tokenizer loaded in {seconds:.3f}s")
        self.out.send({"type": "loaded", "id": msg["id"], "model": name, "counter": True,
                       "load_seconds": round(seconds, 3)})

    def cmd_count_tokens(self, msg: dict) -> None:
        if self.lm is None:
            raise WorkerError("not_loaded", "no tokenizer is loaded; send load first")
        messages, tools, thinking = parse_prompt(msg)
        count = len(render(self.lm, messages, tools, thinking))
        self.out.send({"type": "count", "id": msg["id"], "input_tokens": count})

    def cmd_stats(self, msg: dict) -> None:
        import psutil

        rss = psutil.Process().memory_info().rss / 1e9
        self.out.send({"type": "stats", "id": msg["id"], "model": self.lm.name if self.lm else None,
                       "memory": {"rss_gb": round(rss, 6)}})

    def cmd_shutdown(self, msg: dict) -> str:
        self.out.send({"type": "bye", "id": msg["id"]})
        return "exit"
