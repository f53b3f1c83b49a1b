"""What the worker and CLI call: source resolution and one-call import."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import ollama


def is_gguf_source(source: str) -> bool:
    """True for `ollama:...` refs and paths ending in .gguf."""
    return source.startswith(ollama.PREFIX) or source.lower().endswith(".gguf")


def resolve_source(source: str) -> tuple[Path, Optional[str]]:
    """(GGUF path, display name) for a file path or an ollama: ref."""
    if source.startswith(ollama.PREFIX):
        return ollama.resolve(source), ollama.display_name(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such GGUF file: {path}")
    return path, None


def import_model(source: str, out_root: Optional[Path] = None, dtype: Optional[str] = None,
                 quantize: Optional[int] = None, tokenizer_only: bool = False) -> Path:
    """Resolve and convert (cached): the MLX directory for `source`."""
    from .convert import convert
    path, name = resolve_source(source)
    return convert(path, out_root, dtype, quantize, name=name, tokenizer_only=tokenizer_only)
