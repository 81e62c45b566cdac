"""How long ``pyrovae evaluate`` takes, where the time goes, and how close its plan came.

Runs the exact commands a user runs, as subprocesses with stderr to a log file (so the
progress is written as lines, as in a job log):

- the README's example, ``pyrovae evaluate RUN --num-test 500 --num-train 5000``;
- the default, ``pyrovae evaluate RUN`` with no flags (1,000 held-out images, 10,000
  training encodings, K=1000, every source, sample quality, ELBO surgery).

For each it prints the wall time, the plan's estimate (the ``evaluate`` line written before
the work starts) and the ratio measured / estimate (target: within [0.5, 2]), the share of
the time per step (from each step's closing progress line: fits, log p(x) of the sources,
the prior on its own draws, sample quality, surgery; the rest is start-up, loading and
planning), and the reference measured in the same run: the time of the command's decoder
passes alone (num_test x K decoder log-likelihoods of the model, in batches of the
estimator's size, plain PyTorch calls), and the ratio of the command to it.

    python benchmarks/evaluate_cost.py RUN_DIR --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pyrovae.analysis.likelihood.loglik import default_draws_per_pass
from pyrovae.analysis.progress import CLOSING_LINE
from pyrovae.data import fixed_binarization, load_dataset
from pyrovae.runs import load_run
from pyrovae.settings import DEFAULT_NUM_TEST

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
PLAN = re.compile(r"^evaluate \(rates measured in (\d+) s\): about (.+?) on this machine")


def seconds_of(text: str) -> float:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min`` or ``4.3 s`` in seconds."""
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+) (h|min|s)\b", text):
        total += float(value) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


def decoder_floor(run_dir: str, data_root: str, num_test: int, k: int) -> float:
    """Seconds of num_test x K decoder log-likelihood passes, batched as the estimator."""
    vae = load_run(run_dir)
    data = load_dataset(vae.run_config.train.dataset, root=data_root)
    x = fixed_binarization(data.test.x[:num_test])
    per_pass = default_draws_per_pass("cpu")
    rows = max(1, per_pass // k)
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, num_test, rows):
            xb = x[s : s + rows]
            z = torch.randn(k, xb.shape[0], vae.z_dim)
            vae.decoder(z.reshape(-1, vae.z_dim)).log_prob(
                xb.repeat(k, 1)
            )  # the same work as a pass of the estimator's decoder
    return time.perf_counter() - start


def run(label: str, argv: list[str], env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stderr.log"
        out = Path(tmp) / "evaluation.json"
        start = time.perf_counter()
        with open(log, "w") as err:
            proc = subprocess.run(
                [*argv, "--out", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                check=False,
            )
        wall = time.perf_counter() - start
        text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"{label}: exit {proc.returncode}\n{text}")
    estimate = planning = float("nan")
    steps: dict[str, float] = {}
    plan_lines: list[str] = []
    for line in text.splitlines():
        plan = PLAN.match(line)
        if plan:
            planning, estimate = float(plan.group(1)), seconds_of(plan.group(2))
            plan_lines.append(line)
        elif plan_lines and len(plan_lines) < 12 and line.startswith("  "):
            plan_lines.append(line)
        close = CLOSING_LINE.match(line.strip())
        if close:
            steps[close.group("desc")] = steps.get(close.group("desc"), 0) + float(
                close.group("seconds")
            )
    return {
        "wall": wall,
        "estimate": estimate,
        "planning": planning,
        "steps": steps,
        "plan": plan_lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--only", choices=["readme", "default"], help="run one of the two")
    args = parser.parse_args()
    env = {**os.environ, "PYROVAE_PROGRESS_INTERVAL": "30"}
    base = [sys.executable, "-m", "pyrovae", "evaluate", args.run_dir, "--data-root"]
    base.append(args.data_root)
    readme = ["--num-test", "500", "--num-train", "5000"]
    cases = {"readme": (readme, 500), "default": ([], DEFAULT_NUM_TEST)}
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    for label, (flags, num_test) in cases.items():
        if args.only and args.only != label:
            continue
        result = run(label, [*base, *flags], env)
        floor = decoder_floor(args.run_dir, args.data_root, num_test, 1000)
        wall, estimate = result["wall"], result["estimate"]
        print(f"\n{label}: pyrovae evaluate RUN {' '.join(flags)}")
        print(
            f"  wall {wall:.0f} s, plan {estimate:.0f} s (measured in {result['planning']:.0f} s"
            f"), measured / plan {wall / estimate:.2f}"
        )
        print(f"  decoder passes alone ({num_test} x 1000): {floor:.1f} s, command / them "
              f"{wall / floor:.1f}x")  # fmt: skip
        accounted = 0.0
        for desc, seconds in result["steps"].items():
            accounted += seconds
            print(f"  {100 * seconds / wall:5.1f}%  {seconds:7.1f} s  {desc}")
        rest = wall - accounted
        print(f"  {100 * rest / wall:5.1f}%  {rest:7.1f} s  start-up, loading, planning, writing")
        print(f"  load average after: {os.getloadavg()[0]:.1f}")
        print("  the plan:\n" + "\n".join("    " + line for line in result["plan"]))


if __name__ == "__main__":
    main()
