"""Resolve `ollama:NAME[:TAG]` to the GGUF blob in Ollama's local store.

Layout: <root>/manifests/<host>/<namespace>/<name>/<tag> is JSON whose
layers[] entry of mediaType application/vnd.ollama.image.model has digest
`sha256:<hex>`, stored as <root>/blobs/sha256-<hex>. A bare NAME means
registry.ollama.ai/library/NAME; `ns/name` and `host/ns/name` work too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
PREFIX = "ollama:"


class OllamaError(LookupError):
    pass


def store_root(root: Optional[Path] = None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def parse_ref(ref: str) -> tuple[str, str, str, str]:
    """`ollama:[host/][ns/]name[:tag]` → (host, namespace, name, tag)."""
    body = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    if not body:
        raise OllamaError("empty Ollama model name (expected ollama:NAME[:TAG])")
    path, _, tag = body.rpartition(":") if ":" in body.split("/")[-1] else (body, "", "")
    parts = path.split("/")
    if len(parts) > 3 or not all(parts):
        raise OllamaError(f"bad Ollama model name {body!r}")
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    return host, namespace, parts[-1], tag or "latest"


def _manifest(root: Path, host: str, namespace: str, name: str, tag: str) -> Path:
    path = root / "manifests" / host / namespace / name / tag
    if path.is_file():
        return path
    tags_dir = path.parent
    known = sorted(p.name for p in tags_dir.iterdir()) if tags_dir.is_dir() else []
    hint = f"; tags present: {', '.join(known)}" if known else ""
    raise OllamaError(f"Ollama model {namespace}/{name}:{tag} not found in {root} "
                      f"(no manifest {path}){hint}. Pull it with `ollama pull {name}:{tag}` "
                      "or set OLLAMA_MODELS")


def resolve(ref: str, root: Optional[Path] = None) -> Path:
    """The GGUF blob path for an Ollama model reference."""
    root = store_root(root)
    host, namespace, name, tag = parse_ref(ref)
    manifest = _manifest(root, host, namespace, name, tag)
    try:
        layers = json.loads(manifest.read_text()).get("layers", [])
    except ValueError as e:
        raise OllamaError(f"unreadable Ollama manifest {manifest}: {e}") from e
    models = [l for l in layers if l.get("mediaType") == MODEL_MEDIA_TYPE]
    if not models:
        raise OllamaError(f"Ollama manifest {manifest} has no model layer ({MODEL_MEDIA_TYPE})")
    digest = models[0].get("digest", "")
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or not hexdigest:
        raise OllamaError(f"Ollama manifest {manifest}: unexpected digest {digest!r}")
    blob = root / "blobs" / f"sha256-{hexdigest}"
    if not blob.is_file():
        raise OllamaError(f"Ollama blob {blob} named by {manifest} is missing")
    return blob


def display_name(ref: str) -> str:
    """A readable cache-dir name for an Ollama ref (blob names are hashes)."""
    _h, namespace, name, tag = parse_ref(ref)
    prefix = "" if namespace == DEFAULT_NAMESPACE else f"{namespace}-"
    return f"ollama-{prefix}{name}-{tag}"
