"""What a long analysis is about to do and how long it should take, said before it starts.

An analysis (``evaluate``, ``diagnose``, ``study``) lists its steps as :class:`Step` s:
how many units of work each has (decoder passes, (point, component) pairs, NUTS
gradients, ...) and a rate in units per second measured on this machine in its first
seconds (:func:`measure_rate`: the step's own inner call, timed on a small piece of the
real work). :func:`announce` writes one line per step and the total on stderr, with the
flags that bound the work, so a user knows the wait before waiting and how to shorten it.
Rates are measured, not assumed, so the estimate follows the machine and its load at the
time; progress lines (:mod:`~pyrovae.analysis.progress`) then correct it as the work runs.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyrovae.analysis.progress import format_seconds

__all__ = ["Step", "announce", "measure_rate", "plan_text"]


@dataclass(frozen=True)
class Step:
    """One step of an analysis.

    Attributes:
        what: what it does, e.g. ``"log p(x) of 500 test images, K=1000, 7 sources"``.
        seconds: estimated wall-clock seconds (units / rate), NaN when unknown.
        units: the work, e.g. ``3.5e6`` (for the line; 0 to leave it out).
        unit: what a unit is, e.g. ``"decoder passes"``.
    """

    what: str
    seconds: float
    units: float = 0.0
    unit: str = ""


def measure_rate(run: Callable[[], float], min_seconds: float = 0.5, max_calls: int = 20) -> float:
    """Units per second of ``run`` (a call that does some work and returns its units).

    ``run`` is called at least twice (the first call is a warm-up, not timed) and until
    ``min_seconds`` of timed work or ``max_calls`` calls; the rate is the timed units over
    the timed seconds.
    """
    run()  # warm-up: allocations, caches, lazy builds
    units, seconds, calls = 0.0, 0.0, 0
    while calls < max_calls and (calls == 0 or seconds < min_seconds):
        start = time.perf_counter()
        units += run()
        seconds += time.perf_counter() - start
        calls += 1
    return units / max(seconds, 1e-9)


def _count(units: float) -> str:
    if units >= 1e9:
        return f"{units / 1e9:.1f}G"
    if units >= 1e6:
        return f"{units / 1e6:.1f}M"
    if units >= 1e4:
        return f"{units / 1e3:.0f}k"
    return f"{units:.0f}"


def plan_text(title: str, steps: Sequence[Step], bounds: str = "") -> str:
    """The lines :func:`announce` writes (see there)."""
    known = [s.seconds for s in steps if math.isfinite(s.seconds)]
    total = sum(known)
    head = f"{title}: about {format_seconds(total)} on this machine at the rates measured now"
    if len(known) < len(steps):
        head += " (plus steps of unknown length)"
    lines = [head]
    for step in steps:
        seconds = format_seconds(step.seconds) if math.isfinite(step.seconds) else "unknown"
        work = f" ({_count(step.units)} {step.unit})" if step.units and step.unit else ""
        lines.append(f"  {step.what}{work}: ~{seconds}")
    if bounds:
        lines.append(f"  {bounds}")
    return "\n".join(lines)


def announce(title: str, steps: Sequence[Step], bounds: str = "", show: bool = True) -> float:
    """Write the plan on stderr (unless ``show`` is False) and return its total seconds.

    The first line is the total; then one line per step with its work and estimate; then
    ``bounds``, the flags that shorten the work (e.g. ``"--num-test and --num-train bound
    it"``).
    """
    if show:
        print(plan_text(title, steps, bounds), file=sys.stderr, flush=True)
    return sum(s.seconds for s in steps if math.isfinite(s.seconds))
