"""MLX memory figures, the cache limit, and cache hygiene after generations."""

from __future__ import annotations

import sys
from typing import Optional

import mlx.core as mx
import psutil

GB = 1e9  # decimal GB, as mlx-lm reports peak memory
_PROC = psutil.Process()


def snapshot() -> dict[str, float]:
    """MLX active/cache/peak and process RSS, in GB."""
    return {
        "active_gb": round(mx.get_active_memory() / GB, 6),
        "cache_gb": round(mx.get_cache_memory() / GB, 6),
        "peak_gb": round(mx.get_peak_memory() / GB, 6),
        "rss_gb": round(_PROC.memory_info().rss / GB, 6),
    }


def fmt(mem: dict[str, float]) -> str:
    """Log form, in MB so small caches stay visible: active=1.234MB cache=... ."""
    return " ".join(f"{k[:-3]}={v * 1000:.3f}MB" for k, v in mem.items())


def set_cache_limit(gb: float) -> int:
    """Caps MLX's buffer cache; returns the previous limit in bytes."""
    return mx.set_cache_limit(int(gb * GB))


def metal_info() -> Optional[dict]:
    """Metal device facts, or None on builds without Metal."""
    # Metal only: Linux's CPU build has no GPU working set to report or wire.
    # mx.metal.device_info is deprecated (and prints a warning); mx.device_info
    # is the current call but only carries memory sizes on Metal.
    if not mx.metal.is_available():
        return None
    info = mx.device_info()
    return {k: info.get(k) for k in ("device_name", "memory_size", "max_recommended_working_set_size")}


def clear_and_log(what: str, log=None) -> dict[str, float]:
    """mx.clear_cache() with memory logged before and after; returns the after figures."""
    before = snapshot()
    # mx.clear_cache, not the deprecated mx.metal.clear_cache: it works on every backend.
    mx.clear_cache()
    after = snapshot()
    line = f"[worker] memory {what}: before {fmt(before)} | after clear_cache {fmt(after)}"
    (log or _stderr)(line)
    return after


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
