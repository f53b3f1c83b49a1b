"""Prompt-prefix cache for llama.cpp: kept conversations are sequences of one unified KV cache.

Same contract as the MLX PromptCache (fetch by longest common prefix, at most the
prompt length - 1; LRU by entry count and bytes; relieve/clear/stats), but an entry is a
sequence id whose tokens are tracked here. Reusing part of an entry copies its first n
positions to a free sequence (llama_memory_seq_cp shares cells, it copies nothing), so a
kept entry is never altered; an entry that is a whole prefix of the prompt is taken over
and comes back, extended, after the generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..prompt_cache import GB, PrefixCache, _common_prefix
from .engine import LlamaEngine


@dataclass(eq=False)
class SeqEntry:
    seq: int
    tokens: np.ndarray  # int32: what the sequence's KV holds, position by position


class SeqCache(PrefixCache):
    def __init__(self, engine: LlamaEngine, max_entries: int, max_bytes: float):
        super().__init__(max_entries, max_bytes)
        self.eng = engine
        self.kv_bytes = engine.kv_bytes_per_token()
        self.active: Optional[int] = None  # the sequence a running generation owns

    @staticmethod
    def sequences(max_entries: int) -> int:
        """n_seq_max for the context: the kept entries plus the running generation's."""
        return max(0, int(max_entries)) + 1

    # -- what the worker reads ---------------------------------------------------

    @property
    def nbytes(self) -> int:
        """KV bytes of the entries, shared prefixes counted once."""
        cells, seen = 0, []
        for e in self.entries:
            shared = max((_common_prefix(e.tokens, s) for s in seen), default=0)
            cells += len(e.tokens) - shared
            seen.append(e.tokens)
        return cells * self.kv_bytes

    # -- what a generation does ----------------------------------------------------

    def acquire(self, ids: list[int], count: bool = True) -> tuple[int, int]:
        """(sequence for the generation, prompt tokens it already holds)."""
        best, n = self._lookup(ids, count)
        if best is None:
            seq = self._free_seq()
            self.eng.seq_rm(seq)
            return self._own(seq), 0
        self.entries.remove(best)
        if n == len(best.tokens):  # a whole prefix: take it over
            return self._own(best.seq), n
        self.entries.append(best)  # most recently used; it stays as it is
        seq = self._free_seq()
        self.eng.seq_cp(best.seq, seq, n)
        return self._own(seq), n

    def release(self, seq: int, tokens: list[int]) -> int:
        """Keeps seq (holding exactly `tokens`) as the newest entry; tokens kept (0: none)."""
        self.active = None
        nbytes = len(tokens) * self.kv_bytes
        if self.max_entries <= 0 or not tokens or nbytes > self.max_bytes:
            self.eng.seq_rm(seq)
            return 0
        arr = np.asarray(tokens, dtype=np.int32)
        self._drop_prefixes_of(arr)
        entry = SeqEntry(seq, arr)
        self.entries.append(entry)
        self._evict(self.max_entries, self.max_bytes)
        return len(tokens) if entry in self.entries else 0

    def discard(self, seq: int) -> None:
        """The generation failed: its sequence's contents are unknown, never reuse them."""
        self.active = None
        self.eng.seq_rm(seq)

    def make_room(self) -> bool:
        """Drops the oldest entry so a decode finds KV cells; False when none is left."""
        if not self.entries:
            return False
        self._drop(self.entries[0])
        return True

    # -- internals -------------------------------------------------------------------

    def _own(self, seq: int) -> int:
        self.active = seq
        return seq

    def _free_seq(self) -> int:
        used = {e.seq for e in self.entries}
        if self.active is not None:
            used.add(self.active)
        for seq in range(self.eng.n_seq):
            if seq not in used:
                return seq
        # Every sequence is taken (cannot happen with n_seq = entries + 1): free the oldest.
        oldest = self.entries[0]
        self._drop(oldest)
        return oldest.seq

    def _drop(self, e: SeqEntry) -> None:
        self.entries.remove(e)
        self.eng.seq_rm(e.seq)


__all__ = ["SeqCache", "SeqEntry", "GB"]
