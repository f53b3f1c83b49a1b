"""Progress on stderr: tqdm when installed, else a plain percentage.

stdout stays clean because the TypeScript side reads the last stdout line.
"""

from __future__ import annotations

import sys
import time
from typing import Optional


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Progress:
    def __init__(self, desc: str, total: Optional[int], unit: str = "it"):
        self.desc, self.total, self.done = desc, total, 0
        self._last = 0.0
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                             unit_scale=unit == "B", dynamic_ncols=True)
        except ImportError:
            self._bar = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= 1.0:  # at most a line a second
            self._last = now
            log(self._line())

    def _line(self) -> str:
        if self.total:
            return f"{self.desc}: {100 * self.done / self.total:5.1f}%"
        return f"{self.desc}: {self.done}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            log(self._line())
