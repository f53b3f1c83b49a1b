"""What a generate decides before its first token, whichever path steps it.

Parameters, the rendered prompt, the call grammar, the output cap, the cache breakpoint and
the per-request output state; generation.Generation admits every request here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .coalesce import Coalescer
from .constrain import Constraint, constraint_for, unforced
from .errors import prompt_too_long
from .loops import LoopGuard
from .model import LoadedModel
from .output import TextOutput
from .params import GenerateParams, parse_params, render
from .prompt_cache import common_prefix
from .splitter import OutputSplitter


@dataclass
class Admission:
    gid: Any
    params: GenerateParams
    ids: list[int]  # the prompt as the model sees it
    max_tokens: int  # clamped to the context left and to --max-output-tokens, never refused
    breakpoint: int  # prompt tokens up to the last cache breakpoint (cache_breakpoint)
    constraint: Optional[Constraint]  # the call grammar of a forced call (constrain.py)
    output: TextOutput
    coal: Coalescer
    loop: LoopGuard

    @property
    def n_prompt(self) -> int:
        return len(self.ids)


def admit(log: Callable[[str], None], lm: LoadedModel, msg: dict) -> Admission:
    """Renders and checks a generate command; raises WorkerError (nothing sent) when it cannot run."""
    gid = msg["id"]
    p = parse_params(msg, lm.sampling)
    ids = render(lm, p.messages, p.tools, p.enable_thinking)
    # A forced call is decoded under its grammar: no call start is injected into the prompt.
    constraint = constraint_for(lm, p, ids, log)
    ids, splitter = plan_output(lm, unforced(p) if constraint else p, ids)
    n_prompt, ctx = len(ids), lm.context_length
    if n_prompt >= ctx:
        raise prompt_too_long(n_prompt, ctx)
    return Admission(
        gid=gid, params=p, ids=ids,
        max_tokens=min(p.max_tokens, ctx - n_prompt, lm.max_output_tokens),
        breakpoint=cache_breakpoint(lm, p, ids), constraint=constraint,
        output=TextOutput(gid, p.stop, splitter, bool(p.enable_thinking), p.parallel_tool_calls),
        coal=Coalescer(gid, lm.delta_window_s), loop=LoopGuard(lm.loop_span),
    )


def _ends_in_think(lm: LoadedModel, ids: list[int]) -> bool:
    # Qwen3 (thinking on) and R1 distills open <think> in the generation prompt.
    if lm.think is None:
        return False
    tail = lm.tokenizer.decode(ids[-48:])
    return tail.rfind(lm.think[0]) > tail.rfind(lm.think[1])


def plan_output(lm: LoadedModel, p: GenerateParams, ids: list[int]) -> tuple[list[int], OutputSplitter]:
    """The prompt ids (with any forced call start) and the splitter for its output.

    With tools offered and tool_choice not "none", the splitter gets them: calls are
    checked against them, and generic JSON calls are found even without a parser."""
    tools = p.tools if (p.tools and p.tool_choice != "none") else None
    fmt = lm.tool_format if tools else None
    in_think = _ends_in_think(lm, ids)
    forced = None
    if fmt is not None and p.tool_choice != "auto":
        tool = p.tool_choice.get("name") if isinstance(p.tool_choice, dict) else None
        forced = fmt.forced_prefix(tool)
        text = forced
        if in_think:  # a forced call skips reasoning
            text, in_think = lm.think[1] + "\n\n" + forced, False
        ids = ids + list(lm.tokenizer.encode(text, add_special_tokens=False))
    splitter = OutputSplitter(fmt, tools, lm.think, in_think, forced)
    return ids, splitter


def _utf16_prefix(text: str, units: int) -> str:
    # content_chars counts UTF-16 code units (the server's string lengths), not code points.
    return text.encode("utf-16-le")[:2 * units].decode("utf-16-le", errors="ignore")


def _common_text_prefix(a: str, b: str) -> int:
    # Binary search on slice equality: C-speed compares, not a Python loop per character.
    if b.startswith(a):
        return len(a)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cache_breakpoint(lm: LoadedModel, p: GenerateParams, ids: list[int]) -> int:
    """Prompt tokens up to the request's last cache breakpoint (0: none).

    Renders the prefix as text (no generation prompt). Cheap path: where it diverges from the
    prompt's text, the rest of the prompt must tokenize to the prompt's last ids; else the
    prefix is tokenized and its common prefix with the prompt's ids taken."""
    if p.cache_prefix is None:
        return 0
    n, chars = p.cache_prefix
    msgs = list(p.messages[:n])
    if chars is not None and msgs and isinstance(msgs[-1].get("content"), str):
        msgs[-1] = {**msgs[-1], "content": _utf16_prefix(msgs[-1]["content"], chars)}
    # The prefix as the template sees it: adapted like the prompt itself (templates.py).
    msgs, tools = lm.adapt(msgs, p.tools)
    kwargs: dict[str, Any] = {"add_generation_prompt": False, "tokenize": False}
    if tools:
        kwargs["tools"] = tools
    if p.enable_thinking is not None and lm._template_uses("enable_thinking"):
        kwargs["enable_thinking"] = bool(p.enable_thinking)
    try:
        text = lm.tokenizer.apply_chat_template(msgs, **kwargs)
    except Exception:  # noqa: BLE001 - e.g. a template that cannot render no messages: no writes
        return 0
    if not isinstance(text, str):
        return 0
    tok = lm.tokenizer
    full = tok.decode(ids, clean_up_tokenization_spaces=False)
    same = _common_text_prefix(text, full)
    tail = [int(t) for t in tok.encode(full[same:], add_special_tokens=False)] if same < len(full) else []
    if len(tail) <= len(ids) and ids[len(ids) - len(tail):] == tail:
        return len(ids) - len(tail)
    return common_prefix([int(t) for t in tok.encode(text, add_special_tokens=False)], ids)
