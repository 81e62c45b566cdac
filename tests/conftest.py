"""Shared fixtures: a clean Pyro state and seeds for every test, MNIST when it is on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyro
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    # Keep caches (extracted MNIST, the classifier) out of the user's home during tests,
    # unless the caller points PYROVAE_CACHE somewhere on purpose.
    if "PYROVAE_CACHE" not in os.environ:
        os.environ["PYROVAE_CACHE"] = tempfile.mkdtemp(prefix="pyrovae-test-cache-")


@pytest.fixture(autouse=True)
def _clean_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def _mnist_root() -> Path:
    root = Path(os.environ.get("PYROVAE_TEST_DATA", SHARED_DATA))
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(
            f"MNIST not found at {root / 'MNIST' / 'raw'}; put the four IDX files there "
            "or set PYROVAE_TEST_DATA to a directory holding MNIST/raw"
        )
    return root


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """A directory holding MNIST/raw (read-only is fine: the loader copies to the cache)."""
    return _mnist_root()


@pytest.fixture(scope="session")
def mnist(mnist_root: Path):
    """The real MNIST splits as CPU tensors (train 50k, val 10k, test 10k)."""
    from pyrovae.data import load_dataset

    return load_dataset("mnist", root=mnist_root, download=False)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")


def _train_small(mnist, tmp_path_factory, model: str, z_dim: int):
    from pyrovae import ModelConfig, TrainConfig, load_run, train

    out = tmp_path_factory.mktemp(f"{model}-z{z_dim}")
    train(
        ModelConfig(model=model, z_dim=z_dim, hidden_dims=[256]),
        TrainConfig(epochs=2, subset=10_000, device="cpu", seed=0),
        mnist,
        out,
        progress=False,
    )
    return load_run(out)


@pytest.fixture(scope="session")
def small_vae(mnist, tmp_path_factory):
    """A real VAE (z=2, one hidden layer of 256) trained 2 epochs on 10k MNIST images."""
    return _train_small(mnist, tmp_path_factory, "vae", 2)


@pytest.fixture(scope="session")
def small_cvae(mnist, tmp_path_factory):
    """A real CVAE (z=2, one hidden layer of 256) trained 2 epochs on 10k MNIST images."""
    return _train_small(mnist, tmp_path_factory, "cvae", 2)
