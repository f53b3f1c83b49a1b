"""What every generate decides before its first token, whichever path steps it.

solo.py (stream_generate), batch.py (BatchGenerator) and llama/solo.py (llama.cpp) all admit
a request here: parameters, the rendered prompt, the call grammar, the output cap, the cache
breakpoint and the per-request output state. Only how tokens are produced differs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .coalesce import Coalescer
from .constrain import Constraint, constraint_for, unforced
from .errors import prompt_too_long
from .generation import GenerateParams, Host, TextOutput, cache_breakpoint, parse_params, plan_output, render
from .loops import LoopGuard
from .model import LoadedModel


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


def admit(host: Host, lm: LoadedModel, msg: dict) -> Admission:
    """Renders and checks a generate command; raises WorkerError (nothing sent) when it cannot run."""
    gid = msg["id"]
    p = parse_params(msg, lm.sampling)
    ids = render(lm, p.messages, p.tools, p.enable_thinking)
    # A forced call is decoded under its grammar: no call start is injected into the prompt.
    constraint = constraint_for(lm, p, ids, host.log)
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


def settle_step(a: Admission, send: Callable[[dict], None], log: Callable[[str], None],
                text: str, final: Optional[str], looping: bool, now: float) -> Optional[str]:
    """Feeds one token's text through the output; the finish reason if the generation ends here.

    final: the engine's own end ("stop" at EOS, "length"), or None while it goes on. Shared by
    the single-generation paths (solo.py, llama/solo.py)."""
    out, coal = a.output, a.coal
    if final is not None:
        coal.push(send, out.feed(text) + out.finish(), now)
        return "stop_sequence" if out.matched is not None else final
    coal.push(send, out.feed(text), now)
    if out.stop_now:
        return "stop_sequence" if out.matched is not None else "tool_calls"
    if looping:  # a model repeating itself would run to max_tokens: stop it, as max_tokens
        log(f"[worker] generate id={a.gid} repeats a {a.loop.period}-token pattern "
            f"for {a.loop.span} tokens; stopped")
        coal.push(send, out.finish(), now)
        return "length"
    return None
