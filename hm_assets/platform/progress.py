"""Progress of a long loop: counts, rate and time left, logged at most every few seconds.

Steps that run for minutes (embedding a catalogue, training the image encoder, a week's customer
shards) report through it to the Dagster log, which ``hm-recs run`` also prints on the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """``advance(n)`` after each chunk of work; a line goes to ``log`` (None: nowhere) when
    ``every_seconds`` have passed since the last one, and ``finish()`` writes the total."""

    def __init__(
        self,
        what: str,
        total: int,
        log: Callable[[str], None] | None = None,
        unit: str = "items",
        every_seconds: float = 15.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.what, self.total, self.unit, self.every = what, max(0, int(total)), unit, every_seconds
        self.log = log or (lambda _line: None)
        self.clock = clock
        self.started = self.last_report = clock()
        self.done = 0

    def line(self) -> str:
        elapsed = self.clock() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = f", about {duration((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else ""
        return f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{share} in {duration(elapsed)}, {rate:,.1f} {self.unit}/s{left}"

    def advance(self, count: int = 1) -> None:
        self.done += int(count)
        now = self.clock()
        if now - self.last_report >= self.every and self.done < self.total:
            self.last_report = now
            self.log(self.line())

    def finish(self) -> None:
        self.log(self.line())
