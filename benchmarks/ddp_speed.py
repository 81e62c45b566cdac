"""Two-process data-parallel training (torchrun, gloo) against one process, same machine.

Trains the same model twice on the full training split: ``pyrovae train`` in one process
with T threads, and ``torchrun --nproc_per_node P -m pyrovae train`` with T / P threads per
process. Printed: the median epoch time of each and their ratio, the last validation ELBO
of each (the design makes them equal up to float rounding), and the communication cost
per step: the median time of one all-reduce of a gradient of the model's size over the
same backend, measured in a job of P processes in the same run, times the steps per epoch.

    python benchmarks/ddp_speed.py --epochs 10            # z=50, hidden 400 400, batch 128
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def probe(repeats: int) -> None:
    """In each process of a torchrun job: time all-reduces of the model's gradient size."""
    import torch.distributed as dist

    from pyrovae import ModelConfig, build_model

    dist.init_process_group("gloo")
    vae = build_model(ModelConfig(z_dim=50, hidden_dims=[400, 400]))
    size = sum(p.numel() for p in vae.parameters())
    buffer = torch.zeros(size)
    times = []
    for _ in range(repeats + 5):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(f"ALLREDUCE {size} {statistics.median(times[5:]) * 1e3:.3f}")
    dist.destroy_process_group()


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.PIPE, text=True)
    return time.perf_counter() - start


def epochs(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=50, help="all-reduces timed")
    args = parser.parse_args()
    if args.probe:
        probe(args.repeats)
        return
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    common += ["--z-dim", "50", "--hidden-dims", "400", "400", "--device", "cpu", "--quiet"]
    common += ["--data-root", args.data_root]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", str(args.processes)]
    per_process = max(1, args.threads // args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        wall_one = run(
            [sys.executable, "-m", "pyrovae", "train", "--out", str(one), *common], args.threads
        )
        wall_many = run(
            [*torchrun, "-m", "pyrovae", "train", "--out", str(many), *common], per_process
        )
        out = subprocess.run(
            [*torchrun, __file__, "--probe", "--repeats", str(args.repeats)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(per_process)},
        ).stdout
        rows_one, rows_many = epochs(one), epochs(many)
    _, size, ms = next(line for line in out.splitlines() if line.startswith("ALLREDUCE")).split()
    t_one = statistics.median(r["seconds"] for r in rows_one)
    t_many = statistics.median(r["seconds"] for r in rows_many)
    steps = -(-50_000 // args.batch_size)
    print(
        f"full MNIST training split, z=50, hidden 400 400, batch {args.batch_size}, "
        f"{args.epochs} epochs; {args.threads} threads in all"
    )
    print(
        f"one process ({args.threads} threads): median epoch {t_one:6.2f} s (wall {wall_one:.0f} s)"
    )
    print(
        f"{args.processes} processes ({per_process} thread each): median epoch {t_many:6.2f} s "
        f"(wall {wall_many:.0f} s); ratio {t_many / t_one:.2f}"
    )
    print(
        f"all-reduce of {int(size):,} gradient entries: {float(ms):.2f} ms median, "
        f"{float(ms) * steps / 1e3:.2f} s of the {steps} steps of an epoch"
    )
    print(
        f"last validation ELBO: {rows_one[-1]['val_elbo']:.4f} (one) and "
        f"{rows_many[-1]['val_elbo']:.4f} ({args.processes} processes); difference "
        f"{abs(rows_one[-1]['val_elbo'] - rows_many[-1]['val_elbo']):.2e} nats (target < 0.3)"
    )


if __name__ == "__main__":
    main()
