"""Progress bars of the long analyses: on stderr when asked, silent otherwise, same results."""

from __future__ import annotations

import json

import pytest
import torch

from pyrovae.analysis.evaluation.compare import compare_sources
from pyrovae.analysis.evaluation.evaluate import AISBudget, evaluate_run
from pyrovae.analysis.likelihood.ais import ais_log_likelihood, bdmc
from pyrovae.analysis.likelihood.exact import ppca_vae
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods
from pyrovae.analysis.sources import GaussianSource

X_DIM, Z_DIM, NOISE = 6, 2, 0.5


@pytest.fixture
def ppca() -> tuple:
    """A small PPCA model with an inexact guide and 24 data drawn from it."""
    q, _ = torch.linalg.qr(torch.randn(X_DIM, Z_DIM))
    vae = ppca_vae(q * torch.tensor([2.0, 1.0]), torch.randn(X_DIM), NOISE, widen=1.3)
    with torch.no_grad():
        x = vae.decoder(torch.randn(24, Z_DIM)).sample()
    return vae, x


def both(capsys, fn):
    """(result, stderr) of ``fn(progress=True)`` and of ``fn(progress=False)``."""
    capsys.readouterr()
    shown = fn(progress=True)
    shown_err = capsys.readouterr().err
    hidden = fn(progress=False)
    hidden_err = capsys.readouterr().err
    return shown, shown_err, hidden, hidden_err


def identical(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # NaN k-hat for K < 21


def assert_same_estimates(a, b) -> None:
    assert set(a) == set(b)
    for name in a:
        for key in ("per_datum", "elbo", "khat"):
            identical(getattr(a[name], key), getattr(b[name], key))
        assert set(a[name].iwae) == set(b[name].iwae)
        for k in a[name].iwae:
            identical(a[name].iwae[k], b[name].iwae[k])


@pytest.mark.parametrize("proposal", ["adapted", "separate"])
def test_loglik_progress(ppca, capsys, proposal):
    vae, x = ppca
    sources = {"prior": None, "wide": GaussianSource(torch.zeros(Z_DIM), torch.full((Z_DIM,), 2.0))}

    def run(progress: bool):
        return estimate_source_log_likelihoods(
            vae,
            x,
            sources,
            num_samples=32,
            draws_per_pass=160,  # 5 data per pass: several passes
            iwae_particles=[4],
            proposal=proposal,
            seed=3,
            progress=progress,
        )

    shown, err, hidden, quiet = both(capsys, run)
    assert_same_estimates(shown, hidden)
    assert quiet == ""
    assert "log p(x): 2 sources, 24 images" in err
    total = 48 if proposal == "separate" else 24
    assert f"{total}/{total}" in err


def test_ais_progress(ppca, capsys):
    vae, x = ppca

    def run(progress: bool):
        return ais_log_likelihood(
            vae,
            x,
            num_steps=5,
            num_chains=3,
            leapfrog_steps=2,
            batch_size=10,
            seed=1,
            progress=progress,
        )

    shown, err, hidden, quiet = both(capsys, run)
    assert torch.equal(shown.log_weights, hidden.log_weights)
    assert shown.acceptance == hidden.acceptance
    assert quiet == ""
    assert "AIS log p(x), prior: 24 images, 5 steps" in err
    assert "15/15" in err  # 3 batches of 5 steps


def test_bdmc_progress(ppca, capsys):
    vae, _ = ppca
    source = GaussianSource(torch.zeros(Z_DIM), torch.ones(Z_DIM), name="unit")

    def run(progress: bool):
        return bdmc(
            vae,
            source,
            num_data=6,
            num_steps=4,
            num_chains=2,
            leapfrog_steps=2,
            batch_size=4,
            progress=progress,
        )

    shown, err, hidden, quiet = both(capsys, run)
    assert torch.equal(shown.forward.log_weights, hidden.forward.log_weights)
    assert torch.equal(shown.reverse.log_weights, hidden.reverse.log_weights)
    assert torch.equal(shown.x, hidden.x)
    assert quiet == ""
    assert "BDMC, unit: 6 simulated data, 4 steps forward + reverse" in err
    assert "16/16" in err  # forward and reverse, 2 batches of 4 steps each


def test_compare_sources_progress(small_vae, mnist, capsys):
    def run(progress: bool):
        return compare_sources(
            small_vae,
            mnist.train,
            mnist.test,
            ["prior", "gaussian-z"],
            num_samples=8,
            num_train=500,
            num_test=20,
            progress=progress,
        )

    shown, err, hidden, quiet = both(capsys, run)
    assert_same_estimates(shown.results, hidden.results)
    assert quiet == ""
    assert "fitting sources to 500 encodings" in err and "2/2" in err
    assert "log p(x): 2 sources, 20 images" in err


def test_evaluate_run_progress(small_vae, mnist, capsys):
    budget = AISBudget(num_test=4, steps=3, chains=2, leapfrog_steps=2, bdmc_num_data=4)

    def run(progress: bool):
        result, _ = evaluate_run(
            small_vae,
            mnist,
            sources=["gaussian-z"],
            num_samples=8,
            num_test=20,
            num_train=500,
            surgery=False,
            ais=budget,
            progress=progress,
        )
        return json.dumps(result, sort_keys=True)

    shown, err, hidden, quiet = both(capsys, run)
    assert shown == hidden
    assert quiet == ""
    for part in ("fitting sources to", "log p(x): 2 sources, 20 images", "AIS log p(x), prior: 4"):
        assert part in err
    assert "AIS log p(x), gaussian-z: 4 images" in err and "BDMC, prior: 4 simulated data" in err


def test_off_a_terminal_each_step_is_one_line(capsys, monkeypatch):
    import sys

    from pyrovae.analysis.progress import LineProgress, progress_bar, progress_iter

    with progress_bar(3, "scoring", "image", True) as bar:
        assert isinstance(bar, LineProgress)
        bar.update(2)
        bar.update()
    assert list(progress_iter(["a", "b"], "fitting", "source", True)) == ["a", "b"]
    with progress_iter(["a", "b"], "fitting", "source", True) as items:
        assert list(items) == ["a", "b"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("scoring: 3/3 images, ") and err[0].endswith(" s")
    assert err[1].startswith("fitting: 2/2 sources, ")
    with progress_bar(3, "scoring", "image", False) as bar:  # off: silent either way
        bar.update(3)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not isinstance(progress_bar(1, "x", "y", True), LineProgress)  # a tqdm bar
