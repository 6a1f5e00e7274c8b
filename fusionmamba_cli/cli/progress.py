"""Progress for batches: Rich's live bar on a terminal; off a terminal (logs, CI, `nohup`), where a
live bar prints nothing, a plain line on stderr every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

PLAIN_PROGRESS_SECONDS = 5.0  # between two plain progress lines


def _duration(seconds: float) -> str:
    """A short human duration: 42 s, 3 min 5 s, 2 h 10 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class PlainProgress:
    """Counts finished items and prints `LABEL: done/total pairs, R pairs/s, ETA T` at most every
    `interval` seconds (never for the last item: the summary follows)."""

    def __init__(self, console: Console, label: str, total: int, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.label, self.total = console, label, total
        self.interval = PLAIN_PROGRESS_SECONDS if interval is None else interval
        self.clock = clock
        self.start = self.last = clock()
        self.done = 0

    def advance(self) -> None:
        self.done += 1
        now = self.clock()
        if self.done < self.total and now - self.last >= self.interval:
            self.last = now
            self.console.print(self.line(now), markup=False, highlight=False)

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"{self.label}: {self.done}/{self.total} pairs, {rate:.2f} pairs/s, ETA {_duration(eta)}"
