"""Shared fixtures: a clean Pyro state and seeds for every test, MNIST when it is on disk."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pyro
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STRICT_SKIPS = "PYROVAE_STRICT_SKIPS"
"""With this variable set to 1 (as .ci/run does) a skip is a failure unless its reason
names CUDA: a test skipped for missing data (MNIST), a missing browser (Chromium) or a
missing package has not run, and CI must not pass without it."""
_ALLOWED_SKIP = re.compile(r"\bCUDA\b")


def _strict() -> bool:
    return os.environ.get(STRICT_SKIPS, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    # Keep caches (extracted MNIST, the classifier) out of the user's home during tests,
    # unless the caller points PYROVAE_CACHE somewhere on purpose.
    if "PYROVAE_CACHE" not in os.environ:
        os.environ["PYROVAE_CACHE"] = tempfile.mkdtemp(prefix="pyrovae-test-cache-")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under PYROVAE_STRICT_SKIPS=1, a skip whose reason does not name CUDA fails the test."""
    report = yield
    if _strict() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not _ALLOWED_SKIP.search(reason):
            report.outcome = "failed"
            report.longrepr = (
                f"{STRICT_SKIPS}=1 makes this skip a failure (only CUDA skips are allowed; "
                f"provide what is missing): {reason}"
            )
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Under PYROVAE_STRICT_SKIPS=1: how many tests were skipped, and why."""
    if not _strict():
        return
    reasons = collections.Counter(
        _skip_reason(report) for report in terminalreporter.stats.get("skipped", [])
    )
    terminalreporter.section(f"skips ({STRICT_SKIPS}=1)")
    terminalreporter.write_line(f"{sum(reasons.values())} tests skipped")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:5d}  {reason}")


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
    """The device of the device tests: ``$PYROVAE_TEST_DEVICE`` (default cpu), e.g.
    ``PYROVAE_TEST_DEVICE=cuda pytest tests/test_device.py``; skipped when it is absent."""
    name = os.environ.get("PYROVAE_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"PYROVAE_TEST_DEVICE={name} but CUDA is not available here")
    try:
        return torch.device(name)
    except RuntimeError:
        pytest.fail(f"PYROVAE_TEST_DEVICE={name!r} is not a torch device; use cpu or cuda")


def _train_small(mnist, tmp_path_factory, model: str, z_dim: int):
    from pyrovae import ModelConfig, TrainConfig, load_run, train_model

    out = tmp_path_factory.mktemp(f"{model}-z{z_dim}")
    train_model(
        ModelConfig(model=model, z_dim=z_dim, hidden_dims=[256]),
        TrainConfig(epochs=2, subset=10_000, device="cpu", seed=0),
        mnist,
        out,
        progress=False,
    )
    return load_run(out)


@pytest.fixture
def evaluate_and_diagnose(mnist, tmp_path):
    """A function that takes a model pyrovae did not build (a Pyro pair read by from_pyro)
    through ``evaluate_run`` and ``diagnose_run`` on MNIST at a small budget, checks what
    holds for any model (finite log-likelihoods, avg KL = I(x; z) + KL(q(z) || p(z)), a
    NUTS reference) and returns the evaluation and its comparison."""
    import math

    import pyrovae.analysis as pa

    def run(vae, figures: bool = False, **options):
        evaluation, comparison = pa.evaluate_run(
            vae, mnist, num_samples=10, num_test=8, num_train=100, progress=False, **options
        )
        assert all(math.isfinite(s["loglik"]) for s in evaluation["sources"].values())
        surgery = evaluation["surgery"]
        assert surgery["avg_kl"] == pytest.approx(
            surgery["mutual_information"] + surgery["marginal_kl"], abs=1e-6
        )
        budget = pa.DiagnoseBudget(
            num_data=2, nuts_data=1, chains=2, warmup=30, samples=30, gap_steps=10,
            elbo_draws=20, ais_steps=5, ais_chains=2,
        )  # fmt: skip
        out = tmp_path / "diagnostics"
        result = pa.diagnose_run(vae, mnist, out, budget, figures=figures, progress=False)
        assert result["num_data"] == 2 and result["num_reference"] == 1
        assert not figures or any(out.glob("*.png"))
        return evaluation, comparison

    return run


@pytest.fixture(scope="session")
def small_vae(mnist, tmp_path_factory):
    """A real VAE (z=2, one hidden layer of 256) trained 2 epochs on 10k MNIST images."""
    return _train_small(mnist, tmp_path_factory, "vae", 2)


@pytest.fixture(scope="session")
def small_cvae(mnist, tmp_path_factory):
    """A real CVAE (z=2, one hidden layer of 256) trained 2 epochs on 10k MNIST images."""
    return _train_small(mnist, tmp_path_factory, "cvae", 2)


class Chromium:
    """Headless Chromium for render tests (flags that suit a machine with no network)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    )
    # Counts, after the load event, the images that decoded and the non-data fetches.
    PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const fetched = performance.getEntriesByType("resource")
    .filter((entry) => !entry.name.startsWith("data:")).length;
  document.body.dataset.probe = `${loaded}/${images.length}/${fetched}`;
});
</script>"""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="pyrovae-chromium-") as profile:
            return subprocess.run(
                [self.binary, *self.FLAGS, f"--user-data-dir={profile}", *args],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )

    def count_images(self, page: Path) -> tuple[int, int, int]:
        """(images loaded, images in the page, non-data fetches) for an HTML file."""
        probe = page.with_name(f".probe-{page.name}")  # the page has no script; a copy does
        probe.write_text(page.read_text().replace("</body>", self.PROBE + "</body>"))
        try:
            dom = self.run("--dump-dom", probe.as_uri()).stdout
        finally:
            probe.unlink()
        match = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', dom)
        assert match, f"the load event did not run; DOM starts with {dom[:300]!r}"
        loaded, total, fetched = map(int, match.groups())
        return loaded, total, fetched


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Headless Chromium, or a skip that says how to install it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("Chromium not found: apt-get install chromium (Debian) to run render tests")
    return Chromium(binary)
