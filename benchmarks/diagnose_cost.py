"""How close the time ``pyrovae diagnose`` announces comes to the time it then takes.

Runs :func:`~pyrovae.analysis.posterior.diagnose.diagnose_run` on a run directory with a small
budget and its progress on, as the CLI does. The plan it writes first (each step's work
and seconds at rates measured in its first seconds, :mod:`~pyrovae.analysis.cost`) is
caught, and so is the closing progress line of each step (its measured seconds). Printed
per repeat: the planning seconds (the NUTS pilot chain and the timed calls), the estimate
of the long steps, their measured time (from the plan to the end, figures and files
included) and the ratio measured / estimate, with the same per step (NUTS; AIS; q* fits
with their ELBOs), and the log-joint gradients the NUTS runs made against those planned
(the unit count apart from the rate); then the medians. The target is a ratio within
[0.5, 2].

    python benchmarks/diagnose_cost.py /tmp/z50 --num-data 8 --nuts-data 2 --chains 2 \\
        --warmup 50 --samples 50 --gap-steps 100 --ais-steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pyrovae.analysis.posterior import diagnose
from pyrovae.analysis.posterior import nuts as posterior
from pyrovae.analysis.posterior.diagnose import DiagnoseBudget, diagnose_run
from pyrovae.analysis.progress import CLOSING_LINE
from pyrovae.data import load_dataset
from pyrovae.runs import load_run, read_config

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


class Tee(io.TextIOBase):
    """Writes to the real stderr and keeps a copy."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def measured_steps(log: str) -> dict[str, float]:
    """Seconds of NUTS, AIS and the q* fits from the progress steps' closing lines."""
    found = {}
    for line in log.splitlines():
        match = CLOSING_LINE.match(line.strip())
        if match is None:
            continue
        desc = match["desc"]
        kind = next((k for k in ("NUTS", "AIS", "q*") if desc.startswith(k)), None)
        if kind is not None:
            found[kind] = found.get(kind, 0.0) + float(match["seconds"])
    return found


def estimated_steps(steps: list) -> dict[str, float]:
    """Seconds of the plan's steps, grouped as :func:`measured_steps` (ELBOs with q*)."""
    found: dict[str, float] = {}
    for step in steps:
        kind = "q*" if step.what.startswith(("q*", "ELBO")) else step.what.split(" ")[0]
        found[kind] = found.get(kind, 0.0) + step.seconds
    return found


def one_run(vae, data, budget: DiagnoseBudget, seed: int) -> dict[str, float]:
    caught: dict = {}
    original, made = diagnose.announce, posterior.latent_model
    calls = [0]

    def catching(title, steps, bounds="", show=True):
        caught["steps"], caught["time"] = list(steps), time.perf_counter()
        calls[0] = 0  # count the gradients of the NUTS runs, not of the pilot
        return original(title, steps, bounds, show)

    def counting(*args):
        model = made(*args)

        def counted() -> None:
            calls[0] += 1
            model()

        return counted

    tee = Tee(sys.stderr)
    diagnose.announce, posterior.latent_model = catching, counting
    try:
        with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(tee):
            start = time.perf_counter()
            diagnose_run(vae, data, out, budget, seed=seed, progress=True)
            end = time.perf_counter()
    finally:
        diagnose.announce, posterior.latent_model = original, made
    estimate = sum(s.seconds for s in caught["steps"])
    nuts = [s for s in caught["steps"] if s.what.startswith("NUTS")]
    row = {
        "plan": caught["time"] - start,
        "estimate": estimate,
        "measured": end - caught["time"],
        "gradients planned": nuts[0].units if nuts else 0.0,
        "gradients counted": float(calls[0]),
    }
    measured = measured_steps(tee.copy.getvalue())
    for kind, seconds in estimated_steps(caught["steps"]).items():
        row[f"{kind} estimate"] = seconds
        row[f"{kind} measured"] = measured.get(kind, float("nan"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--num-data", type=int, default=8)
    parser.add_argument("--nuts-data", type=int, default=2)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--gap-steps", type=int, default=100)
    parser.add_argument("--elbo-draws", type=int, default=200)
    parser.add_argument("--ais-steps", type=int, default=100)
    parser.add_argument("--ais-chains", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("$ python benchmarks/diagnose_cost.py " + shlex.join(sys.argv[1:]))
    budget = DiagnoseBudget(
        num_data=args.num_data,
        nuts_data=args.nuts_data,
        chains=args.chains,
        warmup=args.warmup,
        samples=args.samples,
        gap_steps=args.gap_steps,
        elbo_draws=args.elbo_draws,
        ais_steps=args.ais_steps,
        ais_chains=args.ais_chains,
    )
    vae = load_run(args.run_dir, device="cpu")
    config = read_config(args.run_dir)
    root = args.data_root or config.train.data_root or str(DEFAULT_DATA_ROOT)
    data = load_dataset(config.train.dataset, root, "cpu")
    rows = []
    for repeat in range(args.repeats):
        row = one_run(vae, data, budget, args.seed)
        rows.append(row)
        print(
            f"repeat {repeat}: plan {row['plan']:.1f} s, estimate {row['estimate']:.1f} s, "
            f"measured {row['measured']:.1f} s, ratio {row['measured'] / row['estimate']:.2f}; "
            f"NUTS gradients {row['gradients counted']:.0f} counted / "
            f"{row['gradients planned']:.0f} planned; "
            + "; ".join(
                f"{k} {row[f'{k} measured']:.1f}/{row[f'{k} estimate']:.1f} s"
                for k in ("NUTS", "AIS", "q*")
                if f"{k} estimate" in row
            ),
            flush=True,
        )
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    ratios = [r["measured"] / r["estimate"] for r in rows]
    print(
        f"median of {len(rows)}: plan {median['plan']:.1f} s, estimate "
        f"{median['estimate']:.1f} s, measured {median['measured']:.1f} s, ratio "
        f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})"
    )
    for kind in ("NUTS", "AIS", "q*"):
        if f"{kind} estimate" in median:
            step = [r[f"{kind} measured"] / r[f"{kind} estimate"] for r in rows]
            print(
                f"  {kind}: estimate {median[f'{kind} estimate']:.1f} s, measured "
                f"{median[f'{kind} measured']:.1f} s, ratio {statistics.median(step):.2f}"
            )


if __name__ == "__main__":
    main()
