"""The loaded model: load, facts the server needs, and prompt rendering."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import mlx.core as mx
from mlx.utils import tree_flatten

from . import templates
from .prompt_cache import GB, PromptCache
from .toolcalls import ToolFormat, format_for

DEMO_MARKER = "pensieve-tiny-model.json"  # written by make_tiny_model.py
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length",
                 "n_positions", "n_ctx")
_FALLBACK_CONTEXT = 4096


class RenderError(ValueError):
    """The chat template could not render these messages."""


@dataclass
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    config: dict
    context_length: int
    prefill_step_size: int = 2048
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    tool_format: Optional[ToolFormat] = None
    think: Optional[tuple[str, str]] = None  # (start, end) markers
    # PromptCache (llama: SeqCache); None where nothing generates (the token counter).
    prompt_cache: Any = None
    # The rest is set from the load command (options.configure); None in the token counter.
    # Text events of a generation closer together than this are joined (coalesce.py).
    delta_window_s: Optional[float] = None
    # Sampling defaults from generation_config.json (sampling.py); a request's values win.
    sampling: dict = field(default_factory=dict)
    # Most tokens one generation may produce (--max-output-tokens, or the model's own limit).
    max_output_tokens: Optional[int] = None
    # Tokens of exact repetition that end a generation (loops.py; 0 disables).
    loop_span: Optional[int] = None

    # What the chat template accepts (templates.probe), learned once: see dialect().
    template_dialect: Optional[dict] = None

    def render(self, messages: list, tools: Optional[list] = None,
               enable_thinking: Optional[bool] = None) -> list[int]:
        """Token ids of the prompt, rendered by the tokenizer's own chat template.

        A final assistant message with text and no tool calls is continued (continue_final in
        the protocol says so; generation.parse_prompt checks the two agree). Which turns are
        prefills, and dropping blank ones, is the server's decision, not the worker's.
        Roles or tools the template refuses or ignores are rewritten first (templates.py).
        """
        dialect = self.dialect()
        try:
            return self._render_native(*self.adapt(messages, tools, dialect), enable_thinking)
        except RenderError as exc:
            wider = templates.widen(dialect, messages, tools)
            if wider == dialect:
                raise
            first_error = exc
        # A shape the probe did not cover failed: adapt what this conversation uses, retry
        # once, and keep the wider dialect when that works (so it is one failure per model).
        try:
            ids = self._render_native(*self.adapt(messages, tools, wider), enable_thinking)
        except RenderError:
            raise first_error  # the template's own complaint, not the retry's
        dialect.update(wider, learned="render_error")  # in place: info["template"] shows it too
        return ids

    def dialect(self) -> dict:
        """The template's dialect, probed on first use and cached on the model."""
        if self.template_dialect is None:
            self.template_dialect = templates.probe(self.tokenizer)
        return self.template_dialect

    def adapt(self, messages: list, tools: Optional[list],
              dialect: Optional[dict] = None) -> tuple[list, Optional[list]]:
        """(messages, tools) as this model's template accepts them (unchanged when native)."""
        return templates.adapt(messages, tools, dialect or self.dialect(), self._call_format())

    def _call_format(self) -> str:
        # Past calls written as text use the form the output parser reads for this model.
        fmt = self.tool_format or format_for(self.tokenizer)  # the counter sets none
        tags = fmt is not None and fmt.name == "json_tools"
        return templates.CALL_FORMAT_TAGS if tags else templates.CALL_FORMAT_JSON

    def _render_native(self, messages: list, tools: Optional[list],
                       enable_thinking: Optional[bool]) -> list[int]:
        prefill = _prefill_of(messages)
        kwargs: dict[str, Any] = {"add_generation_prompt": prefill is None, "tokenize": True}
        if prefill is not None:
            kwargs["continue_final_message"] = True
        if tools:
            kwargs["tools"] = tools
        # Only templates that read enable_thinking (Qwen3 style) get it; others
        # keep mlx-lm's default.
        if enable_thinking is not None and self._template_uses("enable_thinking"):
            kwargs["enable_thinking"] = bool(enable_thinking)
        try:
            out = self.tokenizer.apply_chat_template(messages, **kwargs)
        except Exception as exc:  # jinja TemplateError, TypeError on odd shapes, ...
            if prefill is None:
                raise RenderError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
            # Templates that alter the assistant's text defeat continue_final_message:
            # render the turn before it with the generation prompt, then append the prefill.
            return self._render_prefill_by_hand(messages, kwargs, prefill)
        return _as_ids(out)

    def _render_prefill_by_hand(self, messages: list, kwargs: dict, prefill: str) -> list[int]:
        kw = {k: v for k, v in kwargs.items() if k != "continue_final_message"}
        kw.update(add_generation_prompt=True, tokenize=False)
        try:
            text = self.tokenizer.apply_chat_template(messages[:-1], **kw)
        except Exception as exc:
            raise RenderError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
        return [int(t) for t in self.tokenizer.encode(text + prefill, add_special_tokens=False)]

    def _template_uses(self, name: str) -> bool:
        tpl = getattr(self.tokenizer, "chat_template", None)
        if isinstance(tpl, dict):
            tpl = " ".join(str(v) for v in tpl.values())
        return isinstance(tpl, str) and name in tpl


def _prefill_of(messages: list) -> Optional[str]:
    """The text of a final assistant message to continue, or None."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "assistant" or last.get("tool_calls"):
        return None
    content = last.get("content")
    # transformers finds the prefill by its stripped text.
    return content if isinstance(content, str) and content.strip() else None


def _as_ids(out: Any) -> list[int]:
    # transformers may hand back a BatchEncoding or a batch of one.
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(t) for t in out]


def load_model(name: str, context_length: Optional[int], prefill_step_size: Optional[int],
               prompt_cache_entries: int, prompt_cache_gb: float) -> LoadedModel:
    """mlx_lm.load on a local directory or a Hugging Face id (needs the hub)."""
    from mlx_lm import load

    t0 = time.perf_counter()
    model, tokenizer, config = load(name, return_config=True)
    seconds = time.perf_counter() - t0
    native = _context_from(config, tokenizer)
    lm = LoadedModel(
        name=name, model=model, tokenizer=tokenizer, config=config,
        context_length=int(context_length) if context_length else native,
        prefill_step_size=int(prefill_step_size or 2048), load_seconds=seconds,
        tool_format=format_for(tokenizer),
        prompt_cache=PromptCache(prompt_cache_entries, prompt_cache_gb * GB),
    )
    if getattr(tokenizer, "has_thinking", False):
        lm.think = (tokenizer.think_start, tokenizer.think_end)
    lm.info = describe(lm, name)
    lm.info["template"] = lm.dialect()  # how roles and tools are rendered (templates.py)
    return lm


def describe(lm: LoadedModel, name: str) -> dict:
    """The `loaded` reply's facts (see PROTOCOL.md)."""
    cfg = _text_config(lm.config)
    tok = lm.tokenizer
    local = Path(name).expanduser()
    return {
        "model": name,
        "path": str(local.resolve()) if local.is_dir() else None,
        "model_type": cfg.get("model_type") or lm.config.get("model_type"),
        "context_length": lm.context_length,
        "vocab_size": int(cfg.get("vocab_size") or len(tok.get_vocab())),
        "supports_vision": False,  # mlx-lm serves text only; images are refused upstream
        "kv_bytes_per_token": kv_bytes_per_token(lm.config, lm.model),
        "has_tool_calling": lm.tool_format is not None,
        "has_thinking": lm.think is not None,
        "tool_parser": lm.tool_format.name if lm.tool_format else None,
        "max_concurrency": 1,  # the worker raises it when the model can be batched
        "prompt_cache_entries": lm.prompt_cache.max_entries,
        "prompt_cache_gb": lm.prompt_cache.max_bytes / GB,
        "demo": local.is_dir() and (local / DEMO_MARKER).is_file(),
        "load_seconds": round(lm.load_seconds, 3),
        **_runtime(lm),
    }


def _runtime(lm: LoadedModel) -> dict:
    """Engine, device, BLAS, weight dtype and quantization: the startup line and /health show them."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from .gguf.blas import describe_blas

    device = "gpu" if mx.metal.is_available() else "cpu"
    floats = (v.dtype for _k, v in tree_flatten(lm.model.parameters())
              if mx.issubdtype(v.dtype, mx.floating))
    q = lm.config.get("quantization") or lm.config.get("quantization_config")
    quant = (f"{q.get('bits')}-bit (group {q.get('group_size')})"
             if isinstance(q, dict) and q.get("bits") else None)
    dtype = next(floats, None)
    return {"engine": "mlx", "device": device, "blas": describe_blas(device),
            "dtype": str(dtype).removeprefix("mlx.core.") if dtype is not None else None,
            "quantization": quant}


def _text_config(config: dict) -> dict:
    # Multimodal checkpoints nest the language model's settings.
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def _context_from(config: dict, tokenizer: Any) -> int:
    cfg = _text_config(config)
    for key in _CONTEXT_KEYS:
        val = cfg.get(key)
        if isinstance(val, int) and val > 0:
            return val
    val = getattr(tokenizer, "model_max_length", None)
    if isinstance(val, int) and 0 < val < 10_000_000:
        return val
    return _FALLBACK_CONTEXT


def kv_bytes_per_token(config: dict, model: Any) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
    cfg = _text_config(config)
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_heads") or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or cfg.get("n_kv_heads") or heads)
    hidden = int(cfg.get("hidden_size") or cfg.get("dim") or 0)
    head_dim = int(cfg.get("head_dim") or (hidden // heads if hidden else 128))
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layers")
                 or len(getattr(model, "layers", [])) or 1)
    return 2 * layers * kv_heads * head_dim * _activation_bytes(model)


def _activation_bytes(model: Any) -> int:
    # The KV cache takes the activations' dtype: the first floating parameter
    # (for quantized weights, that is the scales' dtype).
    for _, p in tree_flatten(model.parameters()):
        if isinstance(p, mx.array) and mx.issubdtype(p.dtype, mx.floating):
            return p.dtype.size
    return 2
