"""Ends a generation that repeats itself: a small model can loop until max_tokens.

A loop is the last `span` tokens being one period of at most MAX_PERIOD tokens
repeated, with at least MIN_REPEATS copies. One counter per period keeps the check
O(MAX_PERIOD) per token."""

from __future__ import annotations

MAX_PERIOD = 64
MIN_REPEATS = 3


class LoopGuard:
    """push(token) -> True once the output has been looping for `span` tokens (0: never)."""

    def __init__(self, span: int, max_period: int = MAX_PERIOD):
        self.span = int(span)
        self.max_period = max_period
        self.tokens: list[int] = []
        # runs[p-1]: how many latest tokens equal the token p places before them.
        self.runs = [0] * max_period
        self.period: int = 0  # the loop's period once detected

    @property
    def enabled(self) -> bool:
        return self.span > 0

    def push(self, token: int) -> bool:
        if not self.enabled:
            return False
        toks = self.tokens
        toks.append(int(token))
        n = len(toks)
        runs = self.runs
        for p in range(1, min(self.max_period, n - 1) + 1):
            if toks[-1] == toks[-1 - p]:
                runs[p - 1] += 1
                # The last run+p tokens have period p.
                length = runs[p - 1] + p
                if length >= self.span and length >= MIN_REPEATS * p:
                    self.period = p
                    return True
            else:
                runs[p - 1] = 0
        # Only the last max_period+1 tokens are ever compared.
        if n > 4 * self.max_period:
            del toks[: n - self.max_period - 1]
        return False
