"""From which size on a user's array should stream from disk instead of being loaded whole.

Writes a float32 ``.npy`` of ``--rows`` x ``--dim`` standard normal values (default 80,000 x
3,072, 0.92 GiB) and measures, each in a fresh process on the CPU:

1. the peak resident memory of ``pyrovae train --data FILE`` for one epoch (the array read
   whole, checked, fingerprinted, split, standardized and trained on), above that of the
   imports alone, as a multiple of the array's float32 size: whole loading needs this much
   memory, so it is possible up to ``MemAvailable / multiple``;
2. the peak anonymous memory of one epoch of :func:`pyrovae.train_model` on splits whose
   ``x`` are views of the memory-mapped file (``np.load(mmap_mode="r")``, no copy, no
   standardization): what streaming would cost;
3. the time to gather one random batch of rows from the file with the page cache dropped
   for it (``posix_fadvise(DONTNEED)``), against the same gather from memory.

    python benchmarks/data_memory.py [--rows 80000] [--dim 3072] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WHOLE = """
import json, resource, sys
import torch, pyro, pyrovae.build, pyrovae.cli, pyrovae.train, pyrovae.trainer, pyrovae.user_data
from pyrovae.cli import main
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = main(["train", "--data", sys.argv[1], "--epochs", "1", "--z-dim", "8",
             "--hidden-dims", "64", "--device", "cpu", "--quiet", "--out", sys.argv[2]])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "base": base, "peak": peak}))
"""

MAPPED = """
import json, re, sys, threading, time, warnings
import numpy as np, torch
from pyrovae.build import ModelConfig
from pyrovae.data import Split, Splits
from pyrovae.train import train_model
from pyrovae.trainer import TrainConfig

def anon():
    with open("/proc/self/status") as f:
        return int(re.search(r"RssAnon:\\s+(\\d+)", f.read()).group(1))

peak = [0]
def watch():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.02)

threading.Thread(target=watch, daemon=True).start()
mm = np.load(sys.argv[1], mmap_mode="r")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a read-only view: training never writes the data
    x = torch.from_numpy(mm)
n = len(x)
y = torch.zeros(n, dtype=torch.long)
a, b = int(0.8 * n), int(0.9 * n)
splits = Splits(Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]), name="mapped",
                num_classes=1, kind="real")
time.sleep(0.1)
before = peak[0]
start = time.perf_counter()
config = ModelConfig(x_dim=x.shape[1], z_dim=8, hidden_dims=[64], likelihood="gaussian")
train_model(config, TrainConfig(epochs=1, device="cpu"), splits, sys.argv[2], progress=False)
print(json.dumps({"before": before, "peak": peak[0], "seconds": time.perf_counter() - start}))
"""


def run_child(code: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))


def gather_ms(path: Path, batch_size: int, steps: int, cold: bool, repeats: int = 3) -> float:
    """Milliseconds to gather one random batch of rows (sorted indices) from ``path``, the
    least of ``repeats`` passes (the machine is shared)."""
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
            idx = np.sort(order[step * batch_size : (step + 1) * batch_size])
            np.array(x[idx])
        best = min(best, (time.perf_counter() - start) / steps * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=80_000)
    p.add_argument("--dim", type=int, default=3072)
    p.add_argument("--batch-size", type=int, default=128)
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
        whole = run_child(WHOLE, str(path), str(Path(tmp) / "whole"))
        assert whole["code"] == 0, whole
        base, peak = whole["base"] / 2**20, whole["peak"] / 2**20
        multiple = (peak - base) / gib
        mapped = run_child(MAPPED, str(path), str(Path(tmp) / "mapped"))
        steps = min(200, args.rows // args.batch_size)
        cold = gather_ms(path, args.batch_size, steps, cold=True)
        warm = gather_ms(path, args.batch_size, steps, cold=False)
    available = mem_available_kib() / 2**20
    print(f"array: {args.rows} x {args.dim} float32 = {gib:.2f} GiB; free {available:.1f} GiB")
    print(
        f"whole (pyrovae train --data): peak {peak:.2f} GiB, after the imports "
        f"{base:.2f} GiB: {multiple:.2f} x the array -> loads whole up to about "
        f"{available / multiple:.1f} GiB of float32 data here"
    )
    print(
        f"memory-mapped splits (train_model, no standardization): anonymous memory "
        f"{mapped['before'] / 2**20:.2f} -> {mapped['peak'] / 2**20:.2f} GiB over an epoch "
        f"of {mapped['seconds']:.1f} s"
    )
    print(
        f"gather of {args.batch_size} random rows: {cold:.2f} ms from disk (page cache "
        f"dropped), {warm:.2f} ms from memory"
    )


if __name__ == "__main__":
    main()
