"""One GGUF model and its llama.cpp context: decode chunks, sample, save and restore a sequence.

The context holds the running generation's sequence only; kept prompts are saved sequence
states (prompt_cache.py here), because llama.cpp attends over every cell in use.
"""

from __future__ import annotations

import ctypes as C
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .lib import ContextParams, Lib, load_lib
from .threads import ThreadTuner

# llama-server's defaults. On the shared 2-core test machine 512/1024/2048 and flash
# attention on/off measured within noise of each other at 2k tokens.
DEFAULT_UBATCH = 512
FLASH_ATTN = -1       # auto: llama.cpp enables it where the backend supports it (CPU, Metal)
KV_DTYPE_BYTES = 2    # the default f16 K and V cache
# Decode return codes (llama.h): 1 = no KV slot for the batch, 2 = aborted by the callback.
NO_KV_SLOT = 1
ABORTED = 2


class LlamaError(RuntimeError):
    """A llama.cpp call failed."""


class NoKVSlot(LlamaError):
    """The unified KV cache has no room for the batch: kept sequences must go first."""


class Aborted(LlamaError):
    """The abort callback stopped the decode (a cancel arrived)."""


@dataclass
class EngineConfig:
    n_ctx: int
    n_seq: int = 1
    n_threads: int = 0   # 0: physical cores (threads())
    n_ubatch: int = DEFAULT_UBATCH
    flash_attn: int = field(default_factory=lambda: _env_int("PENSIEVE_LLAMA_FLASH_ATTN", FLASH_ATTN))
    max_ctx: int = 32768  # n_ctx 0: min(the model's trained context, this)


def _env_int(name: str, default: int) -> int:
    # Tuning knobs for benchmarks; unset in normal use.
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def threads() -> int:
    """Cores this process may run on, halved when the CPU runs two threads per core.

    ggml's matmuls saturate a core's vector units; SMT siblings only contend for them."""
    env = _env_int("PENSIEVE_LLAMA_THREADS", 0)
    if env > 0:
        return env
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        n = os.cpu_count() or 1
    return max(1, n // _smt())


def _smt() -> int:
    try:
        text = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
    except OSError:
        return 1
    # "0,64" or "0-1": two siblings; "0": none.
    return 2 if ("," in text or "-" in text) else 1


def meta_model(lib: Lib, model: int, key: str) -> Optional[str]:
    buf = C.create_string_buffer(512)
    n = lib.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


class LlamaEngine:
    """The model, its context, one batch buffer; calls are made from the worker's thread only."""

    def __init__(self, path: str, cfg: EngineConfig, lib: Optional[Lib] = None):
        self.lib = L = lib or load_lib()
        self.path = path
        mp = L.llama_model_default_params()
        mp.load_mode = 1  # mmap: the weights stay in the page cache, shared and reclaimable
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise LlamaError(f"llama.cpp could not load {path} (see the [llama] lines on stderr)")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_threads = cfg.n_threads or threads()
        fixed = cfg.n_threads or _env_int("PENSIEVE_LLAMA_THREADS", 0) or None
        self.tuner = ThreadTuner(self.n_threads, fixed)
        self._threads = (self.n_threads, self.n_threads)  # (one token, batch) as set now
        self.n_batch = int(cfg.n_ubatch)
        cp: ContextParams = L.llama_context_default_params()
        n_ctx = cfg.n_ctx or max(256, min(self.n_ctx_train, cfg.max_ctx))
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, self.n_batch, self.n_batch
        cp.n_seq_max = max(1, cfg.n_seq)
        cp.n_threads = cp.n_threads_batch = self.n_threads
        cp.flash_attn_type = cfg.flash_attn
        cp.kv_unified = True  # one cell pool (one sequence: the whole context is its own)
        cp.no_perf = True
        self.flash_attn = cfg.flash_attn
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise LlamaError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.n_ctx = int(L.llama_n_ctx(self.ctx))
        self.n_seq = cp.n_seq_max
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)
        self._pos = (C.c_int32 * self.n_batch)()

    # -- facts ----------------------------------------------------------------

    def meta(self, key: str) -> Optional[str]:
        return meta_model(self.lib, self.model, key)

    @property
    def n_ctx_train(self) -> int:
        return int(self.lib.llama_model_n_ctx_train(self.model))

    def kv_bytes_per_token(self) -> int:
        """2 (K and V) x layers x kv_heads x head_dim x 2 bytes (f16 cache)."""
        L, m = self.lib, self.model
        heads = max(1, int(L.llama_model_n_head(m)))
        kv_heads = int(L.llama_model_n_head_kv(m)) or heads
        arch = self.meta("general.architecture") or ""
        key_len = self.meta(f"{arch}.attention.key_length")
        head_dim = int(key_len) if key_len and key_len.isdigit() else int(L.llama_model_n_embd(m)) // heads
        return 2 * int(L.llama_model_n_layer(m)) * kv_heads * head_dim * KV_DTYPE_BYTES

    def quantization(self) -> str:
        """The GGUF file type, e.g. "Q4_K - Medium" -> "Q4_K_M" style names."""
        name = (self.lib.llama_ftype_name(self.lib.llama_model_ftype(self.model)) or b"").decode()
        return _short_ftype(name)

    def backend(self) -> dict:
        L = self.lib
        return {"name": "llama.cpp", "version": L.version, "lib_dir": str(L.dir),
                "cpu_variant": L.log.cpu_variant, "system_info": L.system_info(),
                "threads": self.n_threads, "adaptive_threads": not self.tuner.fixed, "n_batch": self.n_batch,
                "flash_attn": {-1: "auto", 0: "off", 1: "on"}.get(self.flash_attn, str(self.flash_attn)), "n_ctx": self.n_ctx, "n_seq_max": self.n_seq}

    # -- decoding -------------------------------------------------------------

    def decode(self, tokens: list[int], seq: int, pos0: int, want_logits: bool,
               abort=None) -> None:
        """Feeds tokens (at most n_batch) to sequence seq at positions pos0..; logits for the last.

        abort: a ctypes abort callback checked between graph nodes during this decode only."""
        n = len(tokens)
        b = self.batch
        b.n_tokens = n
        C.memmove(b.token, (C.c_int32 * n)(*tokens), 4 * n)
        for i in range(n):
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 0
        if want_logits:
            b.logits[n - 1] = 1
        kind = "token" if n == 1 else "chunk"
        nt = self._set_threads(kind)
        if abort is not None:
            self.lib.llama_set_abort_callback(self.ctx, C.cast(abort, C.c_void_p), None)
        # The process's CPU time beside the wall time: ggml's threads spin while they wait,
        # so a share below threads x wall means other processes took the cores (threads.py).
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            rc = self.lib.llama_decode(self.ctx, b)
        finally:
            if abort is not None:
                self.lib.llama_set_abort_callback(self.ctx, None, None)
        if rc == ABORTED:
            raise Aborted("decode aborted")
        self.tuner.record(kind, nt, time.perf_counter() - t0, n, time.process_time() - c0)
        if rc == NO_KV_SLOT:
            raise NoKVSlot(f"no KV cache room for {n} tokens")
        if rc != 0:
            raise LlamaError(f"llama_decode failed ({rc})")

    def _set_threads(self, kind: str) -> int:
        nt = self.tuner.choose(kind)
        want = (nt, self._threads[1]) if kind == "token" else (self._threads[0], nt)
        if want != self._threads:
            self.lib.llama_set_n_threads(self.ctx, *want)
            self._threads = want
        return nt

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(self.lib.llama_memory_seq_rm(self.mem, seq, p0, p1))

    def save_seq(self, seq: int) -> Optional[np.ndarray]:
        """A copy of the sequence's KV state (llama_state_seq_get_data), or None when it fails."""
        size = int(self.lib.llama_state_seq_get_size(self.ctx, seq))
        if size <= 0:
            return None
        buf = np.empty(size, dtype=np.uint8)
        n = int(self.lib.llama_state_seq_get_data(self.ctx, buf.ctypes.data, size, seq))
        return buf[:n] if n > 0 else None

    def load_seq(self, data: np.ndarray, seq: int) -> bool:
        """Puts a saved state back into the (empty) sequence; False when llama.cpp refuses it."""
        return int(self.lib.llama_state_seq_set_data(self.ctx, data.ctypes.data, len(data), seq)) > 0

    def mask_logits(self, allowed: np.ndarray) -> None:
        """Tokens outside `allowed` (a bool mask over the vocabulary) get -inf in the last
        decode's logits, in place, before the sampler chain reads them (constrain.py)."""
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
        n = min(len(allowed), self.n_vocab)
        logits[:n][~allowed[:n]] = -np.inf
        logits[n:] = -np.inf

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    # -- sampling -------------------------------------------------------------

    def sampler(self, temperature: float, top_p: float, top_k: int,
                repetition_penalty: Optional[float], seed: Optional[int],
                recent: list[int]) -> "Sampler":
        return Sampler(self, temperature, top_p, top_k, repetition_penalty, seed, recent)

    def close(self) -> None:
        L = self.lib
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None


# Repetition penalty looks at the last tokens only, as mlx-lm's default context of 20.
PENALTY_LAST_N = 20


class Sampler:
    """A llama.cpp sampler chain mirroring mlx-lm's make_sampler + repetition penalty."""

    def __init__(self, eng: LlamaEngine, temperature: float, top_p: float, top_k: int,
                 repetition_penalty: Optional[float], seed: Optional[int], recent: list[int]):
        L = self.lib = eng.lib
        self.eng = eng
        self.chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        add = lambda s: L.llama_sampler_chain_add(self.chain, s)  # noqa: E731 - the chain owns s
        if repetition_penalty is not None and repetition_penalty != 1.0:
            add(L.llama_sampler_init_penalties(PENALTY_LAST_N, float(repetition_penalty), 0.0, 0.0))
        if temperature <= 0:
            add(L.llama_sampler_init_greedy())
        else:
            if top_k > 0:
                add(L.llama_sampler_init_top_k(int(top_k)))
            if 0 < top_p < 1:
                add(L.llama_sampler_init_top_p(float(top_p), 1))
            add(L.llama_sampler_init_temp(float(temperature)))
            add(L.llama_sampler_init_dist((seed if seed is not None else random.getrandbits(32))
                                          & 0xFFFFFFFF))
        for t in recent[-PENALTY_LAST_N:]:  # the penalty sees the prompt's tail, as mlx-lm's
            L.llama_sampler_accept(self.chain, int(t))

    def sample(self) -> int:
        """The next token from the last decode's logits (the chain accepts it)."""
        return int(self.lib.llama_sampler_sample(self.chain, self.eng.ctx, -1))

    def free(self) -> None:
        if self.chain:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None


_FTYPE_SUFFIX = {"Small": "S", "Medium": "M", "Large": "L", "Extra Large": "XL"}


def _short_ftype(name: str) -> str:
    # llama_ftype_name: "Q4_K - Medium", "Q8_0", "F16", "IQ4_XS - 4.25 bpw".
    base, _, rest = name.partition(" - ")
    suffix = _FTYPE_SUFFIX.get(rest.strip())
    return f"{base}_{suffix}" if suffix else (base or name)
