"""Stop sequences over streamed text, with hold-back of possible prefixes."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple


class StopMatcher:
    """Feeds text fragments; releases only text that cannot begin a stop sequence.

    A fragment's tail that could still grow into a stop sequence is held until
    later text resolves it. On a match, only the text before the match is
    released, and the match is reported.
    """

    def __init__(self, stops: Optional[Iterable[str]] = None):
        # Empty strings would match everywhere: they are ignored.
        self.stops = sorted({s for s in (stops or []) if s}, key=len)
        self._held = ""
        self.matched: Optional[str] = None

    def feed(self, text: str) -> Tuple[str, Optional[str]]:
        """Returns (text safe to emit, matched stop sequence or None)."""
        if self.matched is not None:
            return "", self.matched
        buf = self._held + text
        if not self.stops:
            self._held = ""
            return buf, None
        hit = self._earliest_match(buf)
        if hit is not None:
            pos, stop = hit
            self._held = ""
            self.matched = stop
            return buf[:pos], stop
        keep = self._longest_prefix_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], None

    def flush(self) -> str:
        """At the end of generation, the held text is known not to be a stop."""
        out, self._held = self._held, ""
        return "" if self.matched is not None else out

    @property
    def held(self) -> str:
        return self._held

    def _earliest_match(self, buf: str) -> Optional[Tuple[int, str]]:
        best: Optional[Tuple[int, int, str]] = None
        for stop in self.stops:
            pos = buf.find(stop)
            if pos < 0:
                continue
            # Earliest start wins; at the same start, the one that completes first.
            key = (pos, pos + len(stop), stop)
            if best is None or key[:2] < best[:2]:
                best = key
        return None if best is None else (best[0], best[2])

    def _longest_prefix_suffix(self, buf: str) -> int:
        """Length of the longest tail of buf that is a proper prefix of a stop."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), longest, -1):
                if buf.endswith(stop[:n]):
                    longest = n
                    break
        return longest
