"""Per-architecture knowledge: GGUF metadata → config.json, GGUF tensor
names → the Hugging Face names mlx_lm's model classes load, and the few
value transforms llama.cpp's converter applied on the way in.

mlx_lm's classes are the ground truth: convert.py checks every name and
shape produced here against an instantiated (lazy, never evaluated) model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np


class UnsupportedArchitecture(ValueError):
    pass


SUPPORTED = ("llama", "qwen2", "qwen3", "gemma3")  # mistral ships as "llama"

# GGUF names shared by llama-like decoders (llama.cpp's tensor_mapping, inverted).
_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3 has four norms per block; GGUF's ffn_norm is its pre-FFN norm.
_GEMMA3_BLOCK = {
    **_BLOCK,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")
# Tensors llama.cpp adds that mlx_lm derives itself (rope_freqs → rope_scaling).
_DROPPED = {"rope_freqs.weight"}


class Meta:
    """Typed access to GGUF key/values, with the arch prefix filled in."""

    def __init__(self, fields: dict[str, Any], arch: str):
        self.fields, self.arch = fields, arch

    def get(self, key: str, default: Any = None) -> Any:
        key = key.replace("{arch}", self.arch)
        return self.fields.get(key, default)

    def need(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ValueError(f"GGUF metadata lacks {key.replace('{arch}', self.arch)}")
        return value


@dataclass
class TensorInfo:
    name: str          # GGUF name
    shape: tuple       # numpy order (rows first)


@dataclass
class ArchPlan:
    """Everything convert.py needs for one file."""

    config: dict
    hf_name: Callable[[str], Optional[str]]           # None: drop the tensor
    transform: Callable[[str, np.ndarray], np.ndarray]


def check_supported(arch: str) -> None:
    if arch not in SUPPORTED:
        raise UnsupportedArchitecture(
            f"GGUF architecture {arch!r} is not supported for conversion to MLX "
            f"(supported: {', '.join(SUPPORTED)}; Mistral GGUFs use 'llama')")


def _hf_namer(block_map: dict[str, str]) -> Callable[[str], Optional[str]]:
    def name(gguf_name: str) -> Optional[str]:
        if gguf_name in _DROPPED:
            return None
        if m := _BLOCK_RE.match(gguf_name):
            layer, part, kind = m.groups()
            if part in block_map:
                return f"model.layers.{layer}.{block_map[part]}.{kind}"
        elif (m := _GLOBAL_RE.match(gguf_name)) and m.group(1) in _GLOBAL:
            return f"{_GLOBAL[m.group(1)]}.{m.group(2)}"
        raise ValueError(f"no Hugging Face name known for GGUF tensor {gguf_name!r}")
    return name


def _common_config(meta: Meta, tensors: dict[str, TensorInfo]) -> dict:
    heads = int(meta.need("{arch}.attention.head_count"))
    hidden = int(meta.need("{arch}.embedding_length"))
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": int(meta.need("{arch}.block_count")),
        "intermediate_size": int(meta.need("{arch}.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("{arch}.attention.head_count_kv", heads)),
        "rms_norm_eps": float(meta.need("{arch}.attention.layer_norm_rms_epsilon")),
        # The embedding's rows, not the token list: some files pad the matrix.
        "vocab_size": int(tensors["token_embd.weight"].shape[0]),
        "max_position_embeddings": int(meta.get("{arch}.context_length", 4096)),
        "rope_theta": float(meta.get("{arch}.rope.freq_base", 10000.0)),
        # GGUF drops lm_head when it is tied to the embedding.
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    head_dim = meta.get("{arch}.attention.key_length")
    config["head_dim"] = int(head_dim) if head_dim else hidden // heads
    return config


def _linear_rope_scaling(meta: Meta) -> Optional[dict]:
    kind = meta.get("{arch}.rope.scaling.type")
    factor = meta.get("{arch}.rope.scaling.factor")
    if kind in (None, "none") or not factor:
        return None
    if kind != "linear":
        raise ValueError(f"rope scaling type {kind!r} is not supported")
    return {"type": "linear", "factor": float(factor)}


# -- llama (and Mistral) ---------------------------------------------------

def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of q/k rows (HF rotate-half → GGUF interleaved).

    llama.cpp: reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2); this is
    its inverse. Works for weights (2-D) and biases (1-D).
    """
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's permute (for tests: build GGUF-layout weights from HF ones)."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _llama3_factors(base: float, dims: int, factor: float, low: float,
                    high: float, orig: int) -> np.ndarray:
    """The rope_freqs tensor convert_hf_to_gguf writes for Llama 3 scaling."""
    freqs = 1.0 / base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def llama3_rope_scaling(meta: Meta, config: dict, rope_freqs: np.ndarray) -> dict:
    """Recover Llama 3's rope_scaling config from the rope_freqs tensor.

    GGUF keeps only the per-dimension factors; mlx_lm wants the parameters,
    so we try Meta's published values and accept only an exact fit.
    """
    factor = float(rope_freqs.max())
    orig = int(meta.get("{arch}.rope.scaling.original_context_length", 8192))
    for low, high in ((1.0, 4.0),):
        want = _llama3_factors(config["rope_theta"], config["head_dim"], factor,
                               low, high, orig)
        if want.shape == rope_freqs.shape and np.allclose(want, rope_freqs, rtol=1e-3):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": orig}
    raise ValueError("rope_freqs tensor does not match Llama 3 rope scaling")


def plan_llama(meta: Meta, tensors: dict[str, TensorInfo]) -> ArchPlan:
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
              **_common_config(meta, tensors)}
    config["attention_bias"] = "blk.0.attn_q.bias" in tensors
    config["mlp_bias"] = "blk.0.ffn_up.bias" in tensors
    if scaling := _linear_rope_scaling(meta):
        config["rope_scaling"] = scaling
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    def transform(name: str, w: np.ndarray) -> np.ndarray:
        # Only llama's q/k were permuted (llama.cpp uses NORM rope for it).
        if ".attn_q." in name:
            return unpermute_qk(w, heads)
        if ".attn_k." in name:
            return unpermute_qk(w, kv_heads)
        return w
    return ArchPlan(config, _hf_namer(_BLOCK), transform)


# -- qwen2 / qwen3 ------------------------------------------------------------

def plan_qwen2(meta: Meta, tensors: dict[str, TensorInfo]) -> ArchPlan:
    config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
              **_common_config(meta, tensors)}
    if scaling := _linear_rope_scaling(meta):
        config["rope_scaling"] = scaling
    return ArchPlan(config, _hf_namer(_BLOCK), lambda _n, w: w)


def plan_qwen3(meta: Meta, tensors: dict[str, TensorInfo]) -> ArchPlan:
    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
              **_common_config(meta, tensors)}
    if scaling := _linear_rope_scaling(meta):
        config["rope_scaling"] = scaling
    return ArchPlan(config, _hf_namer(_BLOCK), lambda _n, w: w)


# -- gemma3 -------------------------------------------------------------------

def plan_gemma3(meta: Meta, tensors: dict[str, TensorInfo]) -> ArchPlan:
    config = {"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
              **_common_config(meta, tensors)}
    # llama.cpp hard-codes these for gemma3 (pattern 6, local base 10k) and
    # scales queries by 1/sqrt(head_dim) except for the 27B model.
    config["sliding_window"] = int(meta.get("{arch}.attention.sliding_window", 512))
    config["sliding_window_pattern"] = 6
    config["rope_local_base_freq"] = 10000.0
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    big = config["num_hidden_layers"] == 62
    config["query_pre_attn_scalar"] = hidden // heads if big else config["head_dim"]
    if scaling := _linear_rope_scaling(meta):
        config["rope_scaling"] = scaling
    config.pop("tie_word_embeddings")  # gemma3_text ties when lm_head is absent

    def transform(name: str, w: np.ndarray) -> np.ndarray:
        # llama.cpp stores Gemma's RMSNorm weights as 1+w; mlx_lm adds the 1.
        return w - 1.0 if name.endswith("norm.weight") else w
    return ArchPlan(config, _hf_namer(_GEMMA3_BLOCK), transform)


PLANNERS = {"llama": plan_llama, "qwen2": plan_qwen2, "qwen3": plan_qwen3,
            "gemma3": plan_gemma3}


def plan(arch: str, meta: Meta, tensors: dict[str, TensorInfo]) -> ArchPlan:
    check_supported(arch)
    return PLANNERS[arch](meta, tensors)
