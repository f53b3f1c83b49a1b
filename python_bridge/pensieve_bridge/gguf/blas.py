"""Which BLAS the MLX CPU backend runs on, for the worker's hello and loaded.

MLX's Linux wheel links the reference (netlib) BLAS, about 20x slower than
OpenBLAS; the server preloads OpenBLAS when installed, and this says which won.
"""

from __future__ import annotations

import ctypes
import re
import sys

SLOW_HINT = "install libopenblas0-pthread"


def _maps() -> str:
    try:
        with open("/proc/self/maps") as f:
            return f.read()
    except OSError:
        return ""


def _openblas(maps: str):
    """'openblas 0.3.21 (pthread, 2 threads)' when OpenBLAS is in the global namespace."""
    try:
        lib = ctypes.CDLL(None)
        get_config = lib.openblas_get_config
    except (OSError, AttributeError):
        return None
    get_config.restype = ctypes.c_char_p
    text = (get_config() or b"").decode(errors="replace")
    m = re.search(r"OpenBLAS\s+([\d.]+)", text)
    kind = next((k for k in ("pthread", "openmp", "serial") if f"openblas-{k}" in maps), None)
    try:
        threads = int(lib.openblas_get_num_threads())
    except AttributeError:
        threads = None
    extra = ", ".join(x for x in (kind, threads and f"{threads} thread{'s' if threads > 1 else ''}") if x)
    return f"openblas {m.group(1) if m else '?'}" + (f" ({extra})" if extra else "")


def describe_blas(device: str) -> str:
    """The BLAS (or backend) MLX computes with, in words."""
    if sys.platform == "darwin":
        return "metal" if device == "gpu" else "accelerate"
    maps = _maps()
    found = _openblas(maps)
    if found:
        return found
    if "libmkl" in maps:
        return "mkl"
    if re.search(r"mlx_cpu\.libs/libblas|/libblas\.so", maps):
        return f"reference (netlib) — slow; {SLOW_HINT}"
    return "unknown"
