"""GGUF import: PyPI-shipped test models, Ollama refs, GGUF → MLX directories.

Entry points: `api.import_model(source)` and `python -m pensieve_bridge.gguf`.
"""

from .api import import_model, is_gguf_source, resolve_source  # noqa: F401
