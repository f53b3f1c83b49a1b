"""ctypes binding to node-llama-cpp's prebuilt libllama: only the calls the engine uses.

The libraries come from npm's @node-llama-cpp/<platform> packages (package.json pins
them); the server points PENSIEVE_LLAMA_LIB_DIR at their bins/<platform>/ folder.
Struct layouts are copied from llama.h of the llama.cpp release those packages are
built from (v0.4.0; v0.5.0's layouts are identical for everything bound here), so
the loaded library's version is checked before any struct crosses the boundary.
"""

from __future__ import annotations

import ctypes as C
import os
import re
import sys
import threading
from pathlib import Path
from typing import Optional

ENV_LIB_DIR = "PENSIEVE_LLAMA_LIB_DIR"
ENV_LOG = "PENSIEVE_LLAMA_LOG"  # debug | info | warn (default) | error | none
# llama_version() prefixes whose llama.h layouts match the structs below.
COMPATIBLE = ("0.4.", "0.5.")
PINNED = "0.4.0 (npm @node-llama-cpp/*@3.21.1)"

p = C.c_void_p


class LlamaLibError(RuntimeError):
    """The llama.cpp libraries are missing or not the version this binding matches."""


class ModelParams(C.Structure):
    _fields_ = [("devices", p), ("tensor_buft_overrides", p), ("n_gpu_layers", C.c_int32),
                ("split_mode", C.c_int), ("load_mode", C.c_int), ("lazy_mode", C.c_int),
                ("main_gpu", C.c_int32), ("tensor_split", p), ("progress_callback", p),
                ("progress_callback_user_data", p), ("kv_overrides", p),
                ("vocab_only", C.c_bool), ("check_tensors", C.c_bool),
                ("use_extra_bufts", C.c_bool), ("no_host", C.c_bool), ("no_alloc", C.c_bool),
                ("load_mtp", C.c_bool)]


class ContextParams(C.Structure):
    _fields_ = [("n_ctx", C.c_uint32), ("n_batch", C.c_uint32), ("n_ubatch", C.c_uint32),
                ("n_seq_max", C.c_uint32), ("n_rs_seq", C.c_uint32),
                ("n_outputs_max", C.c_uint32), ("n_outputs_max_per_seq", C.c_uint32),
                ("n_threads", C.c_int32), ("n_threads_batch", C.c_int32),
                ("ctx_type", C.c_int), ("rope_scaling_type", C.c_int), ("pooling_type", C.c_int),
                ("attention_type", C.c_int), ("flash_attn_type", C.c_int),
                ("rope_freq_base", C.c_float), ("rope_freq_scale", C.c_float),
                ("yarn_ext_factor", C.c_float), ("yarn_attn_factor", C.c_float),
                ("yarn_beta_fast", C.c_float), ("yarn_beta_slow", C.c_float),
                ("yarn_orig_ctx", C.c_uint32), ("defrag_thold", C.c_float),
                ("cb_eval", p), ("cb_eval_user_data", p), ("type_k", C.c_int), ("type_v", C.c_int),
                ("abort_callback", p), ("abort_callback_data", p),
                ("embeddings", C.c_bool), ("offload_kqv", C.c_bool), ("no_perf", C.c_bool),
                ("op_offload", C.c_bool), ("swa_full", C.c_bool), ("kv_unified", C.c_bool),
                ("samplers", p), ("n_samplers", C.c_size_t), ("ctx_other", p)]


class Batch(C.Structure):
    _fields_ = [("n_tokens", C.c_int32), ("token", C.POINTER(C.c_int32)),
                ("embd", C.POINTER(C.c_float)), ("pos", C.POINTER(C.c_int32)),
                ("n_seq_id", C.POINTER(C.c_int32)), ("seq_id", C.POINTER(C.POINTER(C.c_int32))),
                ("logits", C.POINTER(C.c_int8))]


class SamplerChainParams(C.Structure):
    _fields_ = [("no_perf", C.c_bool)]


LogCallback = C.CFUNCTYPE(None, C.c_int, C.c_char_p, p)

# name -> (restype, argtypes); bound onto Lib as attributes.
_LLAMA = {
    "llama_version": (C.c_char_p, []),
    "llama_backend_init": (None, []),
    "llama_print_system_info": (C.c_char_p, []),
    "llama_log_set": (None, [LogCallback, p]),
    "llama_model_default_params": (ModelParams, []),
    "llama_context_default_params": (ContextParams, []),
    "llama_model_load_from_file": (p, [C.c_char_p, ModelParams]),
    "llama_model_free": (None, [p]),
    "llama_init_from_model": (p, [p, ContextParams]),
    "llama_free": (None, [p]),
    "llama_model_get_vocab": (p, [p]),
    "llama_model_n_ctx_train": (C.c_int32, [p]),
    "llama_model_n_layer": (C.c_int32, [p]),
    "llama_model_n_head": (C.c_int32, [p]),
    "llama_model_n_head_kv": (C.c_int32, [p]),
    "llama_model_n_embd": (C.c_int32, [p]),
    "llama_model_meta_val_str": (C.c_int32, [p, C.c_char_p, C.c_char_p, C.c_size_t]),
    "llama_model_desc": (C.c_int32, [p, C.c_char_p, C.c_size_t]),
    "llama_model_size": (C.c_uint64, [p]),
    "llama_model_ftype": (C.c_int, [p]),
    "llama_ftype_name": (C.c_char_p, [C.c_int]),
    "llama_vocab_n_tokens": (C.c_int32, [p]),
    "llama_get_logits_ith": (C.POINTER(C.c_float), [p, C.c_int32]),
    "llama_vocab_is_eog": (C.c_bool, [p, C.c_int32]),
    "llama_n_ctx": (C.c_uint32, [p]),
    "llama_n_batch": (C.c_uint32, [p]),
    "llama_set_n_threads": (None, [p, C.c_int32, C.c_int32]),
    "llama_set_abort_callback": (None, [p, p, p]),  # callback as a void pointer: NULL clears it
    "llama_batch_init": (Batch, [C.c_int32, C.c_int32, C.c_int32]),
    "llama_batch_free": (None, [Batch]),
    "llama_decode": (C.c_int32, [p, Batch]),
    "llama_get_memory": (p, [p]),
    "llama_memory_seq_rm": (C.c_bool, [p, C.c_int32, C.c_int32, C.c_int32]),
    "llama_state_seq_get_size": (C.c_size_t, [p, C.c_int32]),
    "llama_state_seq_get_data": (C.c_size_t, [p, p, C.c_size_t, C.c_int32]),
    "llama_state_seq_set_data": (C.c_size_t, [p, p, C.c_size_t, C.c_int32]),
    "llama_sampler_chain_default_params": (SamplerChainParams, []),
    "llama_sampler_chain_init": (p, [SamplerChainParams]),
    "llama_sampler_chain_add": (None, [p, p]),
    "llama_sampler_init_greedy": (p, []),
    "llama_sampler_init_dist": (p, [C.c_uint32]),
    "llama_sampler_init_top_k": (p, [C.c_int32]),
    "llama_sampler_init_top_p": (p, [C.c_float, C.c_size_t]),
    "llama_sampler_init_temp": (p, [C.c_float]),
    "llama_sampler_init_penalties": (p, [C.c_int32, C.c_float, C.c_float, C.c_float]),
    "llama_sampler_accept": (None, [p, C.c_int32]),
    "llama_sampler_sample": (C.c_int32, [p, p, C.c_int32]),
    "llama_sampler_free": (None, [p]),
}
_GGML = {"ggml_backend_load_all_from_path": (None, [C.c_char_p])}
_LEVELS = {"none": 99, "error": 4, "warn": 3, "info": 2, "debug": 1}


def _find(lib_dir: Path, stem: str) -> Path:
    # Versioned names (libllama.v0.4.0.so, libllama.metal.v0.4.0.dylib); never libllama-common.
    pat = re.compile(rf"^{re.escape(stem)}(\.[\w.]+)?\.(so|dylib|dll)$")
    hits = sorted(f for f in lib_dir.iterdir() if pat.match(f.name))
    if not hits:
        raise LlamaLibError(f"no {stem} library in {lib_dir}")
    return hits[0]


class _Log:
    """llama/ggml log lines to stderr (never stdout), filtered by PENSIEVE_LLAMA_LOG."""

    def __init__(self) -> None:
        self.min_level = _LEVELS.get(os.environ.get(ENV_LOG, "warn").lower(), 3)
        self.cpu_variant: Optional[str] = None
        self._last = 3
        self.callback = LogCallback(self._on_log)  # kept alive: C holds the pointer

    def _on_log(self, level: int, text: bytes, _user) -> None:
        msg = (text or b"").decode("utf-8", "replace")
        m = re.search(r"loaded CPU backend from .*libggml-cpu-([\w.\-]+?)\.(so|dylib|dll)", msg)
        if m:
            self.cpu_variant = m.group(1)
        if level == 5:  # GGML_LOG_LEVEL_CONT: continues the previous line's level
            level = self._last
        self._last = level
        if level >= self.min_level:
            sys.stderr.write(f"[llama] {msg}" if level != 5 else msg)
            sys.stderr.flush()


class Lib:
    """The loaded libraries; functions are attributes (lib.llama_decode(...))."""

    def __init__(self, lib_dir: Path):
        self.dir = lib_dir
        self.log = _Log()
        mode = C.RTLD_GLOBAL  # libllama and the CPU backends resolve ggml from these
        try:
            C.CDLL(str(_find(lib_dir, "libggml-base")), mode=mode)
            ggml = C.CDLL(str(_find(lib_dir, "libggml")), mode=mode)
            llama = C.CDLL(str(_find(lib_dir, "libllama")), mode=mode)
        except OSError as exc:
            raise LlamaLibError(f"could not load llama.cpp from {lib_dir}: {exc}") from exc
        self._bind(llama, _LLAMA)
        self.version = (self.llama_version() or b"").decode()
        if not self.version.startswith(COMPATIBLE):
            raise LlamaLibError(f"llama.cpp {self.version!r} in {lib_dir} is not the pinned "
                                f"release {PINNED}: reinstall (bun install) or point "
                                f"{ENV_LIB_DIR} at a matching build")
        self._bind(ggml, _GGML)
        self.llama_log_set(self.log.callback, None)
        # Registers every backend in the folder; the CPU loader keeps the best variant.
        self.ggml_backend_load_all_from_path(str(lib_dir).encode())
        self.llama_backend_init()

    def _bind(self, dll: C.CDLL, table: dict) -> None:
        for name, (res, args) in table.items():
            fn = getattr(dll, name)
            fn.restype, fn.argtypes = res, args
            setattr(self, name, fn)

    def system_info(self) -> str:
        return (self.llama_print_system_info() or b"").decode().strip().rstrip("|").strip()


_LIB: Optional[Lib] = None
_LOCK = threading.Lock()


def lib_dir() -> Path:
    """PENSIEVE_LLAMA_LIB_DIR (the server sets it from node_modules/@node-llama-cpp)."""
    raw = os.environ.get(ENV_LIB_DIR)
    if not raw:
        raise LlamaLibError(f"{ENV_LIB_DIR} is not set: the llama engine needs the "
                            "@node-llama-cpp/<platform> package's bins/<platform>/ folder")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise LlamaLibError(f"{ENV_LIB_DIR}={raw} is not a directory")
    return path


def load_lib() -> Lib:
    """The process-wide binding, loaded once (the libraries cannot be unloaded)."""
    global _LIB
    with _LOCK:
        if _LIB is None:
            _LIB = Lib(lib_dir())
        return _LIB
