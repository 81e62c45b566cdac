"""Progress of the long analyses on stderr: a tqdm bar on a terminal, timed lines elsewhere.

On a terminal each step shows a live tqdm bar. When stderr is not a terminal (a log file,
a job scheduler, CI), a bar's carriage-return redraws would pile up into one unreadable
line, so a step writes plain lines instead: while it runs, one line at a steady cadence
with ``done/total``, the share done, the elapsed time and the time left (extrapolated from
the rate so far), and one line when it ends. A line is written once at least
``interval`` seconds have passed since the last one (``$PYROVAE_PROGRESS_INTERVAL``,
default 10 s) and either 5% more of the step is done or ``6 * interval`` seconds have
passed, so a slow step keeps talking and a fast one does not flood the log. The cadence is
kept by a background timer, so a step whose units each take minutes still reports its
elapsed time. Neither form draws random numbers, so results never depend on them.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

__all__ = [
    "CLOSING_LINE",
    "LineProgress",
    "format_seconds",
    "progress_bar",
    "progress_interval",
    "progress_iter",
]

#: Seconds between progress lines off a terminal, unless ``$PYROVAE_PROGRESS_INTERVAL``.
DEFAULT_INTERVAL = 10.0
#: A line is due at a share step this large (or after ``SILENT_INTERVALS`` intervals).
SHARE_STEP = 0.05
SILENT_INTERVALS = 6


def progress_interval() -> float:
    """Seconds between progress lines (``$PYROVAE_PROGRESS_INTERVAL``, default 10)."""
    raw = os.environ.get("PYROVAE_PROGRESS_INTERVAL")
    if raw is None or raw == "":
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"PYROVAE_PROGRESS_INTERVAL must be a positive number of seconds, got {raw!r}; "
            "unset it for the default of 10"
        )
    return value


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


#: The line a step writes when it ends off a terminal (:meth:`LineProgress.close`):
#: ``desc: n/total units, 12.3 s``; benchmarks read each step's seconds from it.
CLOSING_LINE = re.compile(r"^(?P<desc>.*?): \d+/\d+ [\w ]+?, (?P<seconds>[0-9.]+) s$")


def _plural(unit: str, count: int | None) -> str:
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


class LineProgress:
    """The tqdm calls the analyses use (``update``, ``set_postfix_str``, iteration, a
    context), written as timed lines on stderr (see the module docstring)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        iterable: Iterable[Any] | None = None,
        interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.iterable = total, desc, unit, iterable
        self.n = 0
        self.interval = progress_interval() if interval is None else float(interval)
        self.start = time.perf_counter()
        self.closed = False
        self._last_time = self.start
        self._last_n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # the timer holds the bar weakly, so a bar dropped without close() still goes away
        timer = threading.Thread(
            target=LineProgress._tick,
            args=(weakref.ref(self), self._stop, self.interval / 4),
            name=f"progress: {desc}",
            daemon=True,
        )
        timer.start()

    @staticmethod
    def _tick(ref: weakref.ref, stop: threading.Event, wait: float) -> None:
        while not stop.wait(wait):
            bar = ref()
            if bar is None:
                return
            bar._maybe_write()
            del bar

    def _due(self, now: float) -> bool:
        waited = now - self._last_time
        if waited < self.interval:
            return False
        if waited >= SILENT_INTERVALS * self.interval or not self.total:
            return True
        return (self.n - self._last_n) / self.total >= SHARE_STEP

    def _maybe_write(self) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.closed or not self._due(now):
                return
            self._last_time, self._last_n = now, self.n
            print(self.status(now), file=sys.stderr, flush=True)

    def status(self, now: float | None = None) -> str:
        """``desc: n/total units (p%), elapsed, about T left`` as of ``now``."""
        elapsed = (time.perf_counter() if now is None else now) - self.start
        unit = _plural(self.unit, self.total)
        if not self.total:
            return f"{self.desc}: {self.n} {unit}, {format_seconds(elapsed)} elapsed"
        share = self.n / self.total
        text = f"{self.desc}: {self.n}/{self.total} {unit} ({100 * share:.0f}%), "
        text += f"{format_seconds(elapsed)} elapsed"
        if 0 < self.n < self.total:
            text += f", about {format_seconds(elapsed * (1 - share) / share)} left"
        return text

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_write()

    def set_postfix_str(self, text: str) -> None:  # a live detail: nothing to show here
        del text

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._stop.set()
        seconds = time.perf_counter() - self.start
        total = "" if self.total is None else f"/{self.total}"
        unit = _plural(self.unit, self.total if self.total is not None else self.n)
        print(f"{self.desc}: {self.n}{total} {unit}, {seconds:.1f} s", file=sys.stderr)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a bar dropped without close() stops its timer
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(total: int | None, desc: str, unit: str, progress: bool) -> Any:
    """A bar over ``total`` ``unit``s on stderr (timed lines, off a terminal);
    ``progress=False`` shows nothing. It is left on screen when done."""
    if progress and not _terminal():
        return LineProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)


def progress_iter(items: Iterable[Any], desc: str, unit: str, progress: bool) -> Any:
    """:func:`progress_bar` that iterates over ``items``."""
    items = list(items)
    if progress and not _terminal():
        return LineProgress(len(items), desc, unit, items)
    return tqdm(items, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
