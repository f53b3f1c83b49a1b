"""Prompt-prefix cache: KV caches of recent generations, reused by common prefix.

LRU, bounded by entry count and bytes. An entry is never altered while it is
shared: a longer entry is copied and the copy trimmed; an entry that is a whole
prefix of the new prompt is moved out and comes back, extended, after the
generation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

GB = 1e9


@dataclass(eq=False)  # identity: entries are removed by object
class Entry:
    tokens: np.ndarray  # int32: the tokens whose KV the cache holds
    cache: list
    nbytes: int
    trimmable: bool


def cache_nbytes(cache: list) -> int:
    total = 0
    for c in cache:
        try:
            total += int(c.nbytes)
        except (AttributeError, NotImplementedError, TypeError):
            pass  # an empty layer cache (keys None) holds nothing
    return total


def cache_length(cache: list) -> Optional[int]:
    """Tokens held by the cache (its first layer's offset), None when unknown."""
    for c in cache:
        off = getattr(c, "offset", None)
        if isinstance(off, int):
            return off
    return None


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token id lists."""
    return _common_prefix(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    if m == 0:
        return 0
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


def _copy_trimmed(cache: list, length: int, keep: int) -> list:
    """A new cache holding the first `keep` of `length` tokens; `cache` is untouched."""
    from mlx_lm.models.cache import KVCache, trim_prompt_cache

    out = []
    for c in cache:
        if type(c) is KVCache and c.keys is not None:
            # Slices are new arrays: writes to the copy never reach the entry.
            n = KVCache()
            n.keys, n.values, n.offset = c.keys[..., :keep, :], c.values[..., :keep, :], keep
            out.append(n)
        else:
            out.append(copy.deepcopy(c))
    rest = [c for c, o in zip(out, cache) if not (type(o) is KVCache and o.keys is not None)]
    if rest and length > keep:
        trim_prompt_cache(rest, length - keep)
    return out


class PrefixCache:
    """What both prompt-prefix caches share: LRU entries (each with its `tokens`), bounded by
    entry count and bytes, found by longest common prefix. PromptCache below keeps MLX KV
    caches; llama/prompt_cache.py's SeqCache keeps llama.cpp sequences."""

    def __init__(self, max_entries: int, max_bytes: float):
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.entries: list = []  # least recently used first
        self.hits = self.misses = self.tokens_reused = 0

    @property
    def nbytes(self) -> int:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.entries), "bytes": self.nbytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "tokens_reused": self.tokens_reused}

    def relieve(self, level: str) -> None:
        """trim: keep at most half the bytes (oldest out); drop: empty."""
        if level == "drop":
            self.clear()
        else:
            self._evict(self.max_entries, self.nbytes // 2)

    def clear(self) -> None:
        while self.entries:
            self._drop(self.entries[0])

    def _lookup(self, ids: list[int], count: bool = True,
                usable: Callable[[Any, int], bool] = lambda e, n: True) -> tuple[Any, int]:
        """(the entry sharing the longest usable prefix with ids, its length), or (None, 0).

        At most len(ids) - 1: at least one token is always computed. count: a hit or miss."""
        best, best_n = None, 0
        if self.max_entries > 0 and len(ids) >= 2:
            want = np.asarray(ids, dtype=np.int32)
            limit = len(ids) - 1
            for e in self.entries:
                n = min(_common_prefix(e.tokens, want), limit)
                if n > best_n and usable(e, n):
                    best, best_n = e, n
        if count and best is None:
            self.misses += 1
        elif count:
            self.hits += 1
            self.tokens_reused += best_n
        return best, best_n

    def _drop_prefixes_of(self, tokens: np.ndarray) -> None:
        # An entry whose tokens are a prefix of the new one can serve nothing more.
        for e in list(self.entries):
            if len(e.tokens) <= len(tokens) and _common_prefix(e.tokens, tokens) == len(e.tokens):
                self._drop(e)

    def _drop(self, e: Any) -> None:
        self.entries.remove(e)

    def _evict(self, max_entries: int, max_bytes: int) -> None:
        while self.entries and (len(self.entries) > max_entries or self.nbytes > max_bytes):
            self._drop(self.entries[0])


class PromptCache(PrefixCache):
    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def fetch(self, ids: list[int]) -> tuple[Optional[list], int]:
        """(cache holding the first n prompt tokens, n), or (None, 0) on a miss."""
        # A cache that cannot be trimmed serves only as a whole prefix.
        best, n = self._lookup(ids, usable=lambda e, n: n == len(e.tokens) or e.trimmable)
        if best is None:
            return None, 0
        self.entries.remove(best)
        if n == len(best.tokens):
            # The whole entry is a prefix: move it out; it returns extended.
            return best.cache, n
        self.entries.append(best)  # most recently used
        return _copy_trimmed(best.cache, len(best.tokens), n), n

    def store(self, tokens: list[int], cache: list) -> bool:
        """Keeps cache (holding exactly `tokens`) as the most recent entry; True if kept."""
        from mlx_lm.models.cache import can_trim_prompt_cache

        if self.max_entries <= 0 or not tokens:
            return False
        nbytes = cache_nbytes(cache)
        if nbytes > self.max_bytes:
            return False
        arr = np.asarray(tokens, dtype=np.int32)
        entry = Entry(arr, cache, nbytes, bool(can_trim_prompt_cache(cache)))
        if entry.trimmable:
            self._drop_prefixes_of(arr)
        self.entries.append(entry)
        self._evict(self.max_entries, self.max_bytes)
        return entry in self.entries
