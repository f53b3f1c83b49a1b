"""Constrained decoding: a forced tool call (tool_choice "required" or {"name": X}) cannot fail.

The output is decoded under a grammar: the family's call start marker, one call
{"name": <an allowed tool>, "arguments": <JSON valid for that tool's schema>}, the end
marker, then only EOS. Whatever the weights sample, the answer is one valid call, and
nothing is injected into the prompt, so nothing injected can come back as text.

llguidance computes the token masks (bench/constrain_bench.py, Qwen2.5's 151k tokens, this
2-core CPU): ~36 us median per token, grammar compiled in 7-60 ms for Claude Code's 12
tools. outlines-core masks as fast but builds its index in ~4 s for two small tools and
cannot express Claude Code's schemas; xgrammar's wheel requires torch. Engine-neutral:
`Constraint.allowed()` is the next token's mask as a numpy bool array, `advance(token)`
feeds the sampled token; `mlx_processor()` wraps both as an mlx-lm logits processor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .toolcalls import LLAMA3_JSON, ToolFormat, tool_schemas

# Canonical JSON (json.dumps spacing, as chat templates render calls): no free whitespace,
# so a model cannot spend its tokens on blanks; unknown schema keywords are ignored.
JSON_OPTS = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", ",
             "lenient": True}
_logged: set[str] = set()  # one log line per kind of fallback
_tokenizers: dict[int, tuple[Any, Any]] = {}  # id(TokenizerWrapper) -> (it, LLTokenizer)


def _log_once(log: Optional[Callable[[str], None]], key: str, line: str) -> None:
    if key not in _logged and log is not None:
        _logged.add(key)
        log(f"[worker] constrain: {line}")


# -- the call's form ------------------------------------------------------------------

@dataclass
class CallForm:
    """How one forced call is written: start/end markers and the JSON around the arguments."""
    start: str = ""  # "" = a bare JSON object (no parser, or Llama 3.x)
    end: str = ""
    args_key: str = "arguments"
    mistral: bool = False  # [TOOL_CALLS]name[ARGS]{...}

    def alternative(self, name: str, schema: Any) -> tuple[str, str]:
        """(text before, text after) the arguments' JSON for a call to `name`."""
        if self.mistral:
            return f"{name}[ARGS]", ""
        return '{"name": ' + json.dumps(name) + f', "{self.args_key}": ', "}"


def call_form(fmt: Optional[ToolFormat]) -> CallForm:
    """The form a call takes so that the splitter (splitter.py) parses it back.

    Families whose calls are JSON between markers (json_tools) and Mistral are written
    natively; others with a start marker get JSON between their markers, which
    toolcalls.parse_calls reads with its generic JSON fallback. No parser: a bare JSON
    object at the start of the answer, which the splitter's generic forms read."""
    if fmt is None:
        return CallForm()
    if fmt.name == LLAMA3_JSON:
        return CallForm(args_key="parameters")
    if fmt.name == "mistral":
        return CallForm(start=fmt.start, mistral=True)
    if not fmt.start:
        return CallForm()
    return CallForm(start=fmt.start + "\n", end=("\n" + fmt.end) if fmt.end else "")


# -- grammar --------------------------------------------------------------------------

def _lit(text: str, special: Callable[[str], Optional[int]]) -> str:
    """A Lark literal for text; a marker that is one special token is referenced as it."""
    if not text:
        return ""
    core = text.strip("\n")
    tid = special(core) if core else None
    if tid is None:
        return json.dumps(text)
    lead, trail = text[: text.index(core)], text[text.index(core) + len(core):]
    parts = [json.dumps(lead)] if lead else []
    parts.append(f"<[{tid}]>")
    if trail:
        parts.append(json.dumps(trail))
    return " ".join(parts)


def _args_schema(schema: Any) -> dict:
    # Arguments are an object: a schema that says nothing about the type gets "object".
    out = dict(schema) if isinstance(schema, dict) else {}
    if "type" not in out and not any(k in out for k in ("anyOf", "oneOf", "allOf", "$ref", "enum", "const")):
        out["type"] = "object"
    # Only the declared arguments: still valid for the schema, and a model cannot wander
    # off into invented keys (a random-weight one would until max_tokens).
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    out["x-guidance"] = JSON_OPTS
    return out


def grammar_for(form: CallForm, schemas: dict[str, Any], prefix: str,
                special: Callable[[str], Optional[int]]) -> str:
    """A Lark grammar (llguidance dialect): prefix, one call to one of `schemas`, then stop."""
    alts = []
    for i, (name, schema) in enumerate(schemas.items()):
        before, after = form.alternative(name, schema)
        alts.append(f"call_{i}: {_lit(before, special)} %json {json.dumps(_args_schema(schema))}"
                    + (f" {_lit(after, special)}" if after else ""))
    head = " ".join(x for x in (_lit(prefix, special), _lit(form.start, special)) if x)
    tail = _lit(form.end, special)
    calls = " | ".join(f"call_{i}" for i in range(len(alts)))
    start = f"start: {head} ({calls}) {tail}".rstrip()
    return "%llguidance {}\n" + start + "\n" + "\n".join(alts) + "\n"


def lazy_grammar_for(form: CallForm, schemas: dict[str, Any],
                     special: Callable[[str], Optional[int]]) -> Optional[str]:
    """Free text, where each call the model starts (its start marker) is constrained.

    For tool_choice auto with strict tools; None for forms without a start marker (the
    call is the whole answer there, so nothing can trigger it)."""
    if not form.start or form.mistral:
        return None
    marker = form.start.rstrip("\n")
    alts, names = [], []
    for i, (name, schema) in enumerate(schemas.items()):
        before, after = form.alternative(name, schema)
        alts.append(f"call_{i}: {_lit(before, special)} %json {json.dumps(_args_schema(schema))}"
                    + (f" {_lit(after, special)}" if after else ""))
        names.append(f"call_{i}")
    rest = " ".join(x for x in (_lit(form.start[len(marker):], special), f"({' | '.join(names)})",
                                _lit(form.end, special)) if x)
    tid = special(marker)
    if tid is not None:  # a special token ends free text by itself
        head = f"seg: TAG_TEXT <[{tid}]> {rest}"
    else:  # else a lazy lexeme: matched as soon as the marker's text appears
        head = f"seg_trig[lazy]: TAG_TEXT {json.dumps(marker)}\nseg: seg_trig {rest}"
    return ("%llguidance {}\nstart: seg* TAG_TEXT\nTAG_TEXT: /(.|\\n)*/\n" + head + "\n"
            + "\n".join(alts) + "\n")


def strict_tools(tools: Optional[list]) -> bool:
    """Some tool is marked `strict: true` (on the tool or its OpenAI function)."""
    for t in tools or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(t, dict) and (t.get("strict") is True or (isinstance(fn, dict) and fn.get("strict") is True)):
            return True
    return False


# -- the tokenizer --------------------------------------------------------------------

def ll_tokenizer(tokenizer: Any, vocab_size: Optional[int] = None,
                 log: Optional[Callable[[str], None]] = None) -> Any:
    """llguidance's view of an mlx-lm TokenizerWrapper (cached: ~1 s for 151k tokens), or None."""
    hit = _tokenizers.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    try:
        import llguidance.hf

        hf = getattr(tokenizer, "_tokenizer", tokenizer)
        n_vocab = vocab_size if vocab_size and vocab_size >= len(hf) else None
        eos = sorted(getattr(tokenizer, "eos_token_ids", None) or [hf.eos_token_id])
        llt = llguidance.hf.from_tokenizer(hf, n_vocab=n_vocab, eos_token=eos)
    except Exception as exc:  # noqa: BLE001 - no mapping: forced calls work as before
        _log_once(log, "tokenizer", f"no llguidance tokenizer ({type(exc).__name__}: {exc}); "
                  "forced tool calls are not constrained")
        return None
    _tokenizers.clear()  # one model per worker: keep only the current one
    _tokenizers[id(tokenizer)] = (tokenizer, llt)
    return llt


def prepare(lm: Any, log: Optional[Callable[[str], None]] = None) -> bool:
    """Maps the model's tokenizer ahead of the first forced call (at load); False: cannot."""
    return ll_tokenizer(lm.tokenizer, _vocab_size(lm), log) is not None


def _special_lookup(tokenizer: Any, llt: Any) -> Callable[[str], Optional[int]]:
    def special(text: str) -> Optional[int]:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        return ids[0] if len(ids) == 1 and llt.is_special_token(ids[0]) else None
    return special


# -- the per-generation constraint ----------------------------------------------------

class Constraint:
    """The grammar's state for one generation.

    allowed(): bool mask over the vocabulary for the next token (only EOS once the call
    is complete). advance(token): the token sampled; False if the grammar refused it
    (then only EOS is allowed: the turn ends). `done`: the call is complete."""

    def __init__(self, matcher: Any, n_vocab: int, eos: list[int]):
        from llguidance.numpy import allocate_token_bitmask

        self.matcher, self.n_vocab, self.eos = matcher, n_vocab, eos
        self._bits = allocate_token_bitmask(1, n_vocab)
        self.consumed = 0  # tokens fed so far
        self.failed = False

    @property
    def done(self) -> bool:
        return self.failed or self.matcher.is_stopped()

    def allowed(self) -> np.ndarray:
        if self.failed:
            mask = np.zeros(self.n_vocab, dtype=bool)
            mask[self.eos] = True
            return mask
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._bits)
        return np.unpackbits(self._bits[0].view(np.uint8), bitorder="little")[: self.n_vocab].astype(bool)

    def advance(self, token: int) -> bool:
        self.consumed += 1
        if self.failed or self.matcher.is_stopped():
            return not self.failed
        if not self.matcher.consume_token(int(token)):
            self.failed = True
        return not self.failed

    def mlx_processor(self, offset: int) -> Callable[[Any, Any], Any]:
        """An mlx-lm logits processor: feeds the tokens sampled since its last call, masks.

        offset: where the generated tokens start in the `tokens` the engine passes (solo:
        the uncached prompt; batch: the whole prompt). Counting from it, a generation the
        batch adopts from a solo (its last token fed again) is not fed twice."""
        import mlx.core as mx

        def process(tokens: Any, logits: Any) -> Any:
            seen = max(0, int(tokens.shape[-1]) - offset)
            if seen > self.consumed:
                for t in tokens[offset + self.consumed: offset + seen].tolist():
                    self.advance(t)
            mask = self.allowed()
            width = logits.shape[-1]
            if width != mask.shape[0]:  # the model's rows past the tokenizer's: never allowed
                mask = np.pad(mask, (0, max(0, width - mask.shape[0])))[:width]
            return mx.where(mx.array(mask), logits, mx.array(-float("inf"), dtype=logits.dtype))
        return process


def forced_tool(p: Any) -> Optional[str]:
    """"" for "required" (any tool), the tool's name, or None when no call is forced."""
    if not p.tools or p.tool_choice in ("auto", "none"):
        return None
    return p.tool_choice.get("name", "") if isinstance(p.tool_choice, dict) else ""


def constraint_for(lm: Any, p: Any, ids: Optional[list[int]] = None,
                   log: Optional[Callable[[str], None]] = None) -> Optional[Constraint]:
    """The constraint for a generate whose tool_choice forces a call, or None.

    ids: the rendered prompt; one that ends inside a reasoning block gets its end
    marker first (a forced call skips reasoning). None also when llguidance cannot map
    the tokenizer or compile the tools' schemas: then the call is forced as before."""
    if os.environ.get("PENSIEVE_CONSTRAIN") == "0":  # kill switch, and the bench's baseline
        return None
    try:
        return _build(lm, p, ids, log)
    except Exception as exc:  # noqa: BLE001 - never fail a generate over its constraint
        _log_once(log, "error", f"{type(exc).__name__}: {exc}; forced tool calls are not constrained")
        return None


def unforced(p: Any) -> Any:
    """The params with tool_choice "auto": what plan_output gets when a constraint forces
    the call, so it injects no call start (the grammar makes the model write it)."""
    import dataclasses

    return dataclasses.replace(p, tool_choice="auto")


def _build(lm: Any, p: Any, ids: Optional[list[int]],
           log: Optional[Callable[[str], None]]) -> Optional[Constraint]:
    tool = forced_tool(p)
    lazy = tool is None and p.tool_choice == "auto" and strict_tools(p.tools)
    schemas = tool_schemas(p.tools) if (tool is not None or lazy) else None
    if not schemas or (tool and tool not in schemas):
        return None
    if tool:
        schemas = {tool: schemas[tool]}
    form = call_form(lm.tool_format)
    if lazy and (not form.start or form.mistral):
        return None  # auto with strict tools, but no marker to trigger on (lazy_grammar_for)
    llt = ll_tokenizer(lm.tokenizer, _vocab_size(lm), log)
    if llt is None:
        return None
    special = _special_lookup(lm.tokenizer, llt)
    prefix = ""
    if lazy:
        grammar = lazy_grammar_for(form, schemas, special)
    else:
        prefix = lm.think[1] + "\n\n" if ids is not None and _in_think(lm, ids) else ""
        grammar = grammar_for(form, schemas, prefix, special)
    matcher = _matcher(llt, grammar)
    if matcher.is_error():
        # A schema llguidance cannot compile: calls still constrained to a tool's name and
        # a JSON object (the splitter checks the arguments as for any call).
        _log_once(log, "grammar", f"tool schemas not compiled ({matcher.get_error()[:200]}); "
                  "their arguments are constrained to a JSON object only")
        loose = {name: {"type": "object"} for name in schemas}
        grammar = (lazy_grammar_for(form, loose, special) if lazy
                   else grammar_for(form, loose, prefix, special))
        matcher = _matcher(llt, grammar)
        if matcher.is_error():
            return None
    eos = sorted(getattr(lm.tokenizer, "eos_token_ids", None) or [lm.tokenizer.eos_token_id])
    return Constraint(matcher, llt.vocab_size, eos)


def _matcher(llt: Any, grammar: str) -> Any:
    import llguidance

    return llguidance.LLMatcher(llt, grammar, log_level=0)


def _vocab_size(lm: Any) -> Optional[int]:
    cfg = lm.config or {}
    n = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    return n if isinstance(n, int) else None


def _in_think(lm: Any, ids: list[int]) -> bool:
    from .admission import _ends_in_think

    return _ends_in_think(lm, ids)


def processors(constraint: Optional[Constraint], offset: int) -> list:
    """The mlx-lm logits processor list entry for a constraint (none without one)."""
    return [constraint.mlx_processor(offset)] if constraint is not None else []
