"""Write a tiny model whose greedy output, for any prompt, reasons in <think> then answers.

Usage: python3 python_bridge/make_think_model.py OUTDIR

Greedy output: `<think>` REASONING `</think>` ANSWER `<|im_end|>` (5 tokens). `<think>` and
`</think>` are single added tokens, so mlx-lm's TokenizerWrapper finds them in the vocabulary
and reports has_thinking. Same construction as make_tool_model.py (the next token depends
on the current one only); the chat template is the tiny model's ChatML one, which ignores
reasoning_content and enable_thinking. Idempotent; its marker file has "kind":"thinking".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_model as mtm  # noqa: E402
import make_tool_model as mtool  # noqa: E402

GENERATOR_VERSION = 1
KIND = "thinking"
THINK_START, THINK_END = "<think>", "</think>"
REASONING = "\nThe user wants the marker; pensieve-reasoning-trace.\n"
ANSWER = "\n\npensieve-think-ok"
CHAIN = (THINK_START, REASONING, THINK_END, ANSWER, "<|im_end|>")


def is_complete(outdir: Path) -> bool:
    return mtm.is_complete(outdir, KIND, GENERATOR_VERSION)


def make(outdir: Path) -> bool:
    """Write the model into outdir; return False when it was already there."""
    if is_complete(outdir):
        return False
    tok = mtm.build_tokenizer(extra_tokens=(THINK_START, THINK_END, REASONING, ANSWER))
    mtm.write_model(outdir, tok, mtool.chain_weights(tok, CHAIN), mtool.CONFIG, {
        "generator_version": GENERATOR_VERSION,
        "kind": KIND,
        "demo": True,
        "reasoning": REASONING,
        "answer": ANSWER,
        "note": "fixed weights: greedy output is always <think>reasoning</think> answer, then <|im_end|>",
    })
    return True


def main(argv: list[str]) -> int:
    return mtool.run_cli(argv, "think model", make)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
