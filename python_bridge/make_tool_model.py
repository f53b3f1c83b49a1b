"""Write a tiny model whose greedy output, for any prompt, is one Hermes tool call.

Usage: python3 python_bridge/make_tool_model.py OUTDIR

The call (for Claude Code's Bash tool) is CALL_TEXT below, then <|im_end|>.
How: the tokenizer of make_tiny_model.py plus one added token holding the
call's JSON, so the call is three tokens: <tool_call>, the JSON, </tool_call>.
The one layer's attention and MLP outputs are zeroed (o_proj, down_proj = 0),
so the residual stream is the current token's embedding and the next token
depends on the current token only. Embeddings put each chain token on its own
axis and every other token on a shared axis; the untied lm_head maps each axis
to its successor: any token -> <tool_call> -> JSON -> </tool_call> -> <|im_end|>.
Position-independent, so a second turn (after the tool result) calls again.
Idempotent like make_tiny_model.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_model as mtm  # noqa: E402

GENERATOR_VERSION = 1
KIND = "tool-call"
TOOL_NAME = "Bash"
TOOL_INPUT = {"command": "echo pensieve-tool-ok", "description": "Print a marker"}
CALL_JSON = "\n" + json.dumps({"name": TOOL_NAME, "arguments": TOOL_INPUT}) + "\n"
CALL_TEXT = "<tool_call>" + CALL_JSON + "</tool_call>"
CONFIG = dict(mtm.CONFIG, tie_word_embeddings=False)
LOGIT = 30.0  # successor logit; every other logit is 0


def is_complete(outdir: Path) -> bool:
    return mtm.is_complete(outdir, KIND, GENERATOR_VERSION)


def chain_weights(tok, chain: tuple = ("<tool_call>", CALL_JSON, "</tool_call>", "<|im_end|>")) -> dict:
    """Weights whose greedy successor of any token outside `chain` is chain[0], then each
    chain token's successor is the next one (chain tokens must be distinct single tokens)."""
    import numpy as np

    vocab = tok.get_vocab_size()
    hidden = CONFIG["hidden_size"]
    weights = mtm.build_weights(vocab, CONFIG)
    ids = [tok.token_to_id(t) for t in chain]
    assert None not in ids and len(set(ids)) == len(ids), ids
    assert len(ids) <= hidden, "one embedding axis per chain token"
    # Axis 0: every token not in the chain (so any prompt's last token) -> <tool_call>.
    axis = {t: i + 1 for i, t in enumerate(ids[:-1])}
    embed = np.zeros((vocab, hidden), dtype=np.float32)
    embed[:, 0] = 1.0
    for t, a in axis.items():
        embed[t] = 0.0
        embed[t, a] = 1.0
    head = np.zeros((vocab, hidden), dtype=np.float32)
    head[ids[0], 0] = LOGIT
    for cur, nxt in zip(ids[:-1], ids[1:]):
        head[nxt, axis[cur]] = LOGIT
    weights["model.embed_tokens.weight"] = embed
    weights["lm_head.weight"] = head
    for name in list(weights):
        # Attention and MLP add nothing: the residual stream is the embedding.
        if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
            weights[name] = np.zeros_like(weights[name])
    return weights


def make(outdir: Path) -> bool:
    """Write the model into outdir; return False when it was already there."""
    if is_complete(outdir):
        return False
    tok = mtm.build_tokenizer(extra_tokens=(CALL_JSON,))
    mtm.write_model(outdir, tok, chain_weights(tok), CONFIG, {
        "generator_version": GENERATOR_VERSION,
        "kind": KIND,
        "demo": True,
        "call_text": CALL_TEXT,
        "note": "fixed weights: greedy output is always this Hermes tool call, then <|im_end|>",
    })
    return True


def run_cli(argv: list[str], label: str, make_fn) -> int:
    """`SCRIPT OUTDIR` for the fixed-chain fixture models (tool and think)."""
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(f"usage: {Path(argv[0]).name} OUTDIR", file=sys.stderr)
        return 0 if len(argv) == 2 else 2
    outdir = Path(argv[1]).resolve()
    made = make_fn(outdir)
    print(f"{label} {'written to' if made else 'already present in'} {outdir}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    return run_cli(argv, "tool model", make)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
