"""The load command's engine fields (validated before anything is loaded)."""

from __future__ import annotations

from typing import Optional

from ..errors import bad_request

ENGINES = ("mlx", "llama")


def engine_fields(msg: dict) -> tuple[str, Optional[str]]:
    """(engine, tokenizer directory) of a load command."""
    engine = msg.get("engine") or "mlx"
    if engine not in ENGINES:
        raise bad_request('engine must be "mlx" or "llama"')
    tokenizer = msg.get("tokenizer")
    if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer):
        raise bad_request("tokenizer must be a directory path")
    return engine, tokenizer
