"""Data-parallel training under torchrun: two processes (gloo, CPU) give the parameters of
one process, resume exactly, and a refused setting stops every rank with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pyrovae.cli import main
from pyrovae.distributed import global_batch_draws, member_rows

TINY = [
    *["--z-dim", "2", "--hidden-dims", "32", "--subset", "600", "--batch-size", "100"],
    *["--device", "cpu", "--quiet"],
]


def torchrun(*argv: str, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(processes), "-m", "pyrovae", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_member_rows():
    idx = torch.tensor([7, 2, 4, 9, 0])
    assert member_rows(idx, 0, 2).tolist() == [1, 2, 4]
    assert member_rows(idx, 1, 2).tolist() == [0, 3]


def test_each_row_gets_the_draws_of_the_global_batch():
    """Under the context, a process holding rows 1 and 3 of a batch of 4 draws what one
    process draws for those rows, and its generator ends in the same state."""
    loc, scale = torch.zeros(2, 3), torch.ones(2, 3)
    torch.manual_seed(0)
    whole = torch.distributions.Normal(torch.zeros(4, 3), 1.0).rsample((5,))  # (5, 4, 3)
    after_whole = torch.get_rng_state()
    torch.manual_seed(0)
    with global_batch_draws(torch.tensor([1, 3]), 4):
        part = torch.distributions.Normal(loc, scale).rsample((5,))
    assert torch.equal(part, whole[:, [1, 3]])
    assert torch.equal(torch.get_rng_state(), after_whole)
    torch.manual_seed(0)
    with global_batch_draws(torch.tensor([1, 3]), 4):  # other shapes pass through
        other = torch.distributions.Normal(torch.zeros(5), 1.0).rsample()
    torch.manual_seed(0)
    assert torch.equal(other, torch.randn(5))


@pytest.mark.parametrize(
    "extra",
    [[], ["--model", "cvae", "--guide", "flow", "--prior", "mog", "--elbo", "trace"]],
    ids=["vae", "cvae-flow-mog"],
)
def test_two_processes_train_as_one(mnist_root, tmp_path, extra):
    args = ["--data-root", str(mnist_root), *TINY, *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--out", str(one), "--epochs", "2", *args]) == 0
    done = torchrun("train", "--out", str(two), "--epochs", "2", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert max_difference(weights(one), weights(two)) < 1e-5
    rows = [line.split(",") for line in (one / "metrics.csv").read_text().splitlines()[1:]]
    rows2 = [line.split(",") for line in (two / "metrics.csv").read_text().splitlines()[1:]]
    for r1, r2 in zip(rows, rows2, strict=True):  # train and validation ELBO per epoch
        assert float(r1[1]) == pytest.approx(float(r2[1]), abs=1e-3)
        assert float(r1[2]) == pytest.approx(float(r2[2]), abs=1e-3)
    state1 = torch.load(one / "checkpoint.pt", weights_only=False)
    state2 = torch.load(two / "checkpoint.pt", weights_only=False)
    assert torch.equal(state1["rng_cpu"], state2["rng_cpu"])  # the same draws, all along


def test_two_processes_resume_exactly(mnist_root, tmp_path):
    args = ["--data-root", str(mnist_root), *TINY]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert torchrun("train", "--out", str(straight), "--epochs", "2", *args).returncode == 0
    assert torchrun("train", "--out", str(resumed), "--epochs", "1", *args).returncode == 0
    done = torchrun("train", "--out", str(resumed), "--resume", "--epochs", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert max_difference(weights(straight), weights(resumed)) == 0.0


def test_a_refused_setting_stops_every_rank_with_one_line(mnist_root, tmp_path):
    out = tmp_path / "jit"
    done = torchrun(
        "train", "--out", str(out), "--epochs", "1", "--jit", "--data-root", str(mnist_root), *TINY
    )
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"pyrovae train (rank {rank} of 2): error: --jit cannot be used under torchrun" in (
            done.stderr
        )
    assert not out.exists()  # nothing written
