"""From which size on a user's array streams from disk instead of being loaded whole, and what
streaming costs.

Writes a float32 ``.npy`` of ``--rows`` x ``--dim`` standard normal values (default 80,000 x
3,072, 0.92 GiB) and measures, each in a fresh process on the CPU:

1. ``pyrovae train --data FILE`` (standardization on, as for any real-valued data) for
   ``--epochs`` epochs, read whole (``PYROVAE_STREAM_ABOVE`` above the file's size) and
   streamed (``PYROVAE_STREAM_ABOVE=0``; :mod:`pyrovae.streamed_data`), the streamed run
   twice: once building its cached split files, once reusing them. For each: the peak
   anonymous memory (``RssAnon``: the memory the process needs; pages of a memory-mapped
   file are page cache the kernel can drop) and the peak resident size, above the imports
   alone, as multiples of the array's float32 size; the command's seconds; the median seconds
   per epoch (``metrics.csv``) and the streamed/whole ratio. Whole loading needs the first
   multiple of the data's size, so it stops being safe at about ``MemAvailable / multiple``:
   hence the threshold, a quarter of the available memory;
2. the time to gather one random batch of rows from the file with the page cache dropped
   for it (``posix_fadvise(DONTNEED)``), in ascending row order (as training reads a
   memory-mapped split) and in the batch's own order, against the same gather from memory.

    python benchmarks/data_memory.py [--rows 80000] [--dim 3072] [--batch-size 128] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN = """
import json, re, resource, sys, threading, time
import torch, pyro, pyrovae.build, pyrovae.cli, pyrovae.train, pyrovae.trainer, pyrovae.user_data
from pyrovae.cli import main

def anon():
    with open("/proc/self/status") as f:
        return int(re.search(r"RssAnon:\\s+(\\d+)", f.read()).group(1))

peak = [anon()]
def watch():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.01)

threading.Thread(target=watch, daemon=True).start()
base_anon, base = anon(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
code = main(["train", "--data", sys.argv[1], "--epochs", sys.argv[3], "--z-dim", "8",
             "--hidden-dims", "64", "--device", "cpu", "--quiet", "--out", sys.argv[2]])
seconds = time.perf_counter() - start
time.sleep(0.05)
print(json.dumps({"code": code, "base": base, "peak": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss, "base_anon": base_anon, "peak_anon": peak[0],
    "seconds": seconds}))
"""


def run_child(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))


def gather_ms(
    path: Path, batch_size: int, steps: int, cold: bool, ascending: bool = True, repeats: int = 3
) -> float:
    """Milliseconds to gather one random batch of rows from ``path`` (in ascending row order,
    or in the batch's own order), the least of ``repeats`` passes (the machine is shared)."""
    best = float("inf")
    for seed in range(repeats):
        if cold:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            x = np.load(path, mmap_mode="r")
        else:
            x = np.load(path)
        order = np.random.default_rng(seed).permutation(len(x))
        start = time.perf_counter()
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            if ascending:
                where = np.argsort(idx)
                rows = np.empty((len(idx), x.shape[1]), dtype=x.dtype)
                rows[where] = x[idx[where]]
            else:
                rows = np.array(x[idx])
        best = min(best, (time.perf_counter() - start) / steps * 1e3)
    return best


def train_run(path: Path, out: Path, epochs: int, stream: bool, cache: Path) -> dict:
    """``pyrovae train --data path`` in a fresh process, read whole or streamed."""
    above = "0" if stream else str(2**62)
    env = {"PYROVAE_STREAM_ABOVE": above, "PYROVAE_CACHE": str(cache)}
    run = run_child(TRAIN, str(path), str(out), str(epochs), env=env)
    assert run["code"] == 0, run
    with open(out / "metrics.csv") as f:
        run["epoch_seconds"] = statistics.median(float(r["seconds"]) for r in csv.DictReader(f))
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=80_000)
    p.add_argument("--dim", type=int, default=3072)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyrovae-data-memory-") as tmp:
        path = Path(tmp) / "x.npy"
        shape = (args.rows, args.dim)
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        rng = np.random.default_rng(0)
        for i in range(0, args.rows, 8192):
            x[i : i + 8192] = rng.standard_normal((min(8192, args.rows - i), args.dim), np.float32)
        x.flush()
        del x
        gib = args.rows * args.dim * 4 / 2**30
        cache = Path(tmp) / "cache"
        runs = {
            "whole": train_run(path, Path(tmp) / "whole", args.epochs, False, cache),
            "streamed, building its split files": train_run(
                path, Path(tmp) / "streamed", args.epochs, True, cache
            ),
            "streamed, reusing them": train_run(
                path, Path(tmp) / "again", args.epochs, True, cache
            ),
        }
        steps = min(200, args.rows // args.batch_size)
        cold = gather_ms(path, args.batch_size, steps, cold=True)
        cold_unsorted = gather_ms(path, args.batch_size, steps, cold=True, ascending=False)
        warm = gather_ms(path, args.batch_size, steps, cold=False)
    available = mem_available_kib() / 2**20
    print(f"array: {args.rows} x {args.dim} float32 = {gib:.2f} GiB; free {available:.1f} GiB")
    whole = runs["whole"]
    for name, run in runs.items():
        anon = (run["peak_anon"] - run["base_anon"]) / 2**20
        rss = (run["peak"] - run["base"]) / 2**20
        print(
            f"pyrovae train --data, {name}: peak anonymous memory +{anon:.2f} GiB "
            f"({anon / gib:.2f} x the array), peak resident +{rss:.2f} GiB ({rss / gib:.2f} x); "
            f"{run['seconds']:.1f} s in all; {run['epoch_seconds']:.2f} s per epoch (median of "
            f"{args.epochs}), {run['epoch_seconds'] / whole['epoch_seconds']:.2f} x whole"
        )
    multiple = (whole["peak_anon"] - whole["base_anon"]) / 2**20 / gib
    print(
        f"whole loading needs {multiple:.2f} x the array -> safe up to about "
        f"{available / multiple:.1f} GiB of float32 data here; streaming starts above a quarter "
        f"of the available memory, {available / 4:.1f} GiB"
    )
    print(
        f"gather of {args.batch_size} random rows: {cold:.2f} ms from disk in ascending order, "
        f"{cold_unsorted:.2f} ms in the batch's order (page cache dropped), {warm:.2f} ms "
        "from memory"
    )


if __name__ == "__main__":
    main()
