"""Progress of the long analyses on stderr: a tqdm bar on a terminal, plain lines elsewhere.

On a terminal each step shows a live tqdm bar. When stderr is not a terminal (a log file,
a job scheduler, CI), a bar's carriage-return redraws would pile up into one unreadable
line, so each step prints one line when it ends instead: what it did, ``n/total`` and the
elapsed time. Neither draws random numbers, so results never depend on them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

__all__ = ["LineProgress", "progress_bar", "progress_iter"]


class LineProgress:
    """The tqdm calls the analyses use (``update``, ``set_postfix_str``, iteration, a
    context), written as one line on stderr when the step closes."""

    def __init__(
        self, total: int | None, desc: str, unit: str, iterable: Iterable[Any] | None = None
    ) -> None:
        self.total, self.desc, self.unit, self.iterable = total, desc, unit, iterable
        self.n = 0
        self.start = time.perf_counter()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:  # a live detail: nothing to show here
        del text

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = time.perf_counter() - self.start
        total = "" if self.total is None else f"/{self.total}"
        print(f"{self.desc}: {self.n}{total} {self.unit}s, {seconds:.1f} s", file=sys.stderr)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(total: int, desc: str, unit: str, progress: bool) -> Any:
    """A bar over ``total`` ``unit``s on stderr (a line when it ends, off a terminal);
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
