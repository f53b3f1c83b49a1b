"""Sampling defaults from the model's own generation_config.json.

Clients often send no temperature; a local model then samples as its authors
recommend rather than at the protocol's fallback of 1.0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

# generation_config.json keys -> GenerateParams fields.
_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
         "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_new_tokens"}
# The fallbacks where neither the request nor the model says anything.
FALLBACK = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": None}


def read_defaults(dirs: Iterable[Optional[str]]) -> dict[str, Any]:
    """The sampling values the first generation_config.json among `dirs` sets."""
    for d in dirs:
        if not d:
            continue
        path = Path(d).expanduser() / "generation_config.json"
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        # do_sample false means greedy, whatever temperature the file also names.
        if cfg.get("do_sample") is False:
            return {"temperature": 0.0}
        return {field: cfg[key] for key, field in _KEYS.items() if _valid(key, cfg.get(key))}
    return {}


def _valid(key: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if key in ("top_k", "max_new_tokens"):
        return isinstance(value, int) and value >= (0 if key == "top_k" else 1)
    if key == "top_p":
        return 0.0 < value <= 1.0
    if key == "repetition_penalty":
        return value > 0
    return value >= 0


def logits_processors(repetition_penalty: Optional[float]) -> list:
    """mlx-lm logits processors for the request (none when nothing applies)."""
    if repetition_penalty is None or repetition_penalty == 1.0:
        return []
    from mlx_lm.sample_utils import make_logits_processors

    return make_logits_processors(repetition_penalty=float(repetition_penalty))
