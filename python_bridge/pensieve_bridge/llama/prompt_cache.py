"""Prompt-prefix cache for llama.cpp: one conversation resident in the KV cache, the rest saved.

Same contract as the MLX PromptCache (fetch by longest common prefix, at most the
prompt length - 1; LRU by entry count and bytes; relieve/clear/stats). The context holds
one sequence: llama.cpp attends over every cell up to the highest one in use, whatever
sequence owns it, so a second conversation kept in the same KV cache slowed every
generation beside it (a 6k-token one: 2k prefill 106 -> 84 tok/s, decode 18 -> 14). The last
generation's sequence stays resident, so the next turn of that conversation only trims
and extends it; the others are kept as saved sequence state in memory and copied back
(llama_state_seq_get/set_data) when a prompt continues one of them. A saved entry is never
altered: a partial reuse copies it back and trims the copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..prompt_cache import GB, PrefixCache
from .engine import LlamaEngine

WORK = 0  # the one sequence of the context
# A resident conversation reused only up to here keeps a saved copy when at least this many
# tokens would be lost (a side request sharing Claude Code's system prompt, say).
SAVE_TAIL_MIN = 256


@dataclass(eq=False)
class SeqEntry:
    tokens: np.ndarray  # int32: what the entry's KV holds, position by position
    data: Optional[np.ndarray] = None  # uint8 saved state; None: resident in WORK


class SeqCache(PrefixCache):
    def __init__(self, engine: LlamaEngine, max_entries: int, max_bytes: float):
        super().__init__(max_entries, max_bytes)
        self.eng = engine
        self.kv_bytes = engine.kv_bytes_per_token()
        self.active: Optional[int] = None  # the sequence a running generation owns

    # -- what the worker reads ---------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Saved states' bytes plus the resident entry's KV."""
        return sum(len(e.data) if e.data is not None else len(e.tokens) * self.kv_bytes
                   for e in self.entries)

    # -- what a generation does ----------------------------------------------------

    def acquire(self, ids: list[int], count: bool = True) -> tuple[int, int]:
        """(sequence for the generation, prompt tokens it already holds)."""
        best, n = self._lookup(ids, count)
        resident = self._resident()
        if best is not None and best is resident:
            self.entries.remove(best)
            if n < len(best.tokens) and not self._trim_resident(best, n):
                return self._fresh()
            return self._own(), n
        if best is not None:
            self.entries.remove(best)  # out of reach of the eviction that saving may cause
        self._save_resident()
        self.eng.seq_rm(WORK)
        if best is None:
            return self._own(), 0
        if not self.eng.load_seq(best.data, WORK) or not self._trim(n, len(best.tokens)):
            return self._fresh()  # a state that does not load back is of no use: dropped
        if n < len(best.tokens):
            # Only a copy was trimmed: the entry stays, the most recently used.
            self.entries.append(best)
            self._evict(self.max_entries, self.max_bytes)
        # A whole entry is taken over: it comes back, extended, on release.
        return self._own(), n

    def release(self, seq: int, tokens: list[int]) -> int:
        """Keeps seq (holding exactly `tokens`) as the newest, resident entry; tokens kept (0: none)."""
        self.active = None
        nbytes = len(tokens) * self.kv_bytes
        if self.max_entries <= 0 or not tokens or nbytes > self.max_bytes:
            self.eng.seq_rm(seq)
            return 0
        arr = np.asarray(tokens, dtype=np.int32)
        self._drop_prefixes_of(arr)
        entry = SeqEntry(arr)
        self.entries.append(entry)
        self._evict(self.max_entries, self.max_bytes)
        return len(tokens) if entry in self.entries else 0

    def discard(self, seq: int) -> None:
        """The generation failed: its sequence's contents are unknown, never reuse them."""
        self.active = None
        self.eng.seq_rm(seq)

    # -- internals -------------------------------------------------------------------

    def _resident(self) -> Optional[SeqEntry]:
        return next((e for e in self.entries if e.data is None), None)

    def _own(self) -> int:
        self.active = WORK
        return WORK

    def _fresh(self) -> tuple[int, int]:
        self.eng.seq_rm(WORK)
        return self._own(), 0

    def _trim(self, n: int, held: int) -> bool:
        # Partial removal can fail (a cache that cannot drop a suffix): then reuse nothing.
        return n == held or self.eng.seq_rm(WORK, n, -1)

    def _trim_resident(self, e: SeqEntry, n: int) -> bool:
        if len(e.tokens) - n >= SAVE_TAIL_MIN and self._fits(len(e.tokens)):
            data = self.eng.save_seq(WORK)
            if data is not None:
                self.entries.append(SeqEntry(e.tokens, data))
                self._evict(self.max_entries, self.max_bytes)
        return self._trim(n, len(e.tokens))

    def _save_resident(self) -> None:
        e = self._resident()
        if e is None:
            return
        data = self.eng.save_seq(WORK) if self._fits(len(e.tokens)) else None
        if data is None:
            self.entries.remove(e)
            return
        e.data = data
        self._evict(self.max_entries, self.max_bytes)

    def _fits(self, tokens: int) -> bool:
        return tokens * self.kv_bytes <= self.max_bytes

    def _drop(self, e: SeqEntry) -> None:
        self.entries.remove(e)
        if e.data is None and self.active is None:
            self.eng.seq_rm(WORK)  # the resident entry's cells


__all__ = ["SeqCache", "SeqEntry", "GB"]
