"""BDMC per latent source in `pyrovae evaluate`, the paired AIS differences, the prior's
headline estimate, checked on probabilistic PCA where p_r(x) is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae import build_model
from pyrovae.analysis.evaluation.compare import compare_sources
from pyrovae.analysis.evaluation.evaluate import AISBudget, evaluate_run, format_evaluation, run_ais
from pyrovae.analysis.likelihood.ais import bdmc
from pyrovae.analysis.likelihood.exact import ppca_vae
from pyrovae.analysis.likelihood.proposals import initial_distribution
from pyrovae.analysis.sources import GaussianSource
from pyrovae.data import Split, Splits

X_DIM, Z_DIM, NOISE = 8, 4, 0.5
SHIFT = 1.5
"""The source sits 1.5 prior standard deviations off-centre in every latent dim."""


@pytest.fixture
def setup() -> tuple:
    """(PPCA with a widened, shifted guide, data splits drawn from it, an off-centre source)."""
    q, _ = torch.linalg.qr(torch.randn(X_DIM, Z_DIM))
    w = q * torch.tensor([2.0, 1.5, 1.0, 0.7])
    vae = ppca_vae(w, torch.randn(X_DIM), NOISE, widen=1.5, shift=0.3)
    with torch.no_grad():
        x = vae.decoder(torch.randn(200, Z_DIM)).sample()
    split = Split(x, torch.zeros(200, dtype=torch.long))
    data = Splits(train=split, val=split, test=split, name="ppca")
    source = GaussianSource(torch.full((Z_DIM,), SHIFT), scale=torch.full((Z_DIM,), 0.5))
    return vae, data, source


def marginal_of(vae, loc: torch.Tensor, cov: torch.Tensor):
    """p_r(x) of PPCA for r = N(loc, cov): N(W loc + b, W cov W^T + s^2 I) (float64)."""
    linear = vae.decoder.net[0]
    w, b = linear.weight.detach().double(), linear.bias.detach().double()
    s2 = float(vae.decoder.scale.detach()) ** 2
    return torch.distributions.MultivariateNormal(
        w @ loc.double() + b, w @ cov.double() @ w.T + s2 * torch.eye(X_DIM, dtype=torch.double)
    )


def _compare(vae, data, source, num_samples: int, num_test: int):
    """The prior and the shifted source scored by importance sampling on the test split."""
    return compare_sources(
        vae,
        data.train,
        data.test,
        ["prior"],
        sources={"shifted": source},
        num_samples=num_samples,
        num_test=num_test,
        progress=False,
    )


def test_each_source_gets_the_bdmc_of_its_own_data_and_start(setup):
    vae, data, source = setup
    comparison = _compare(vae, data, source, num_samples=64, num_test=40)
    budget = AISBudget(num_test=40, steps=30, chains=8, leapfrog_steps=5, bdmc_num_data=64)
    out = run_ais(vae, data, comparison, budget, seed=3, progress=False)["ais"]
    kwargs = dict(num_data=64, num_steps=30, num_chains=8, leapfrog_steps=5, seed=3)
    n = 64
    for name, r, loc, cov in (
        ("prior", None, torch.zeros(Z_DIM), torch.eye(Z_DIM)),
        ("shifted", source, source.loc, torch.diag(source.scale**2)),
    ):
        run = out[name]["bdmc"]
        assert run["source"] == name and run["num_data"] == n
        assert (run["steps"], run["chains"]) == (30, 8)
        # the data are simulated from that source: E_{x ~ p_r}[log p_r(x)] = -H(p_r), and
        # log p_r(x) of a Gaussian in 8 dims spreads by sqrt(8 / 2) over the data
        truth = -float(marginal_of(vae, loc, cov).entropy())
        se = math.sqrt(X_DIM / 2 / n)
        assert run["lower"] < truth + 4 * se and run["upper"] > truth - 4 * se, (name, run)
        assert abs(run["lower"] - truth) < 4 * se + run["gap"], (name, run, truth)
        assert 0 <= run["gap"] < 0.5, (name, run)
        # ... so data simulated from the prior instead would be far off for the source
        if r is not None:
            prior_x = marginal_of(vae, torch.zeros(Z_DIM), torch.eye(Z_DIM))
            wrong = float(marginal_of(vae, loc, cov).log_prob(prior_x.sample((20000,))).mean())
            assert abs(wrong - truth) > 12 * se
    # the same start as the source's AIS: the adapted proposal, not the guide
    assert out["prior"]["bdmc"]["initial"] == "guide"
    assert out["shifted"]["bdmc"]["initial"] == "adapted proposal of shifted"
    own = bdmc(vae, source, initial=initial_distribution(vae, source, seed=3), **kwargs)
    from_guide = bdmc(vae, source, **kwargs)
    summary = {k: v for k, v in out["shifted"]["bdmc"].items() if k not in ("source", "initial")}
    assert summary == pytest.approx(own.to_dict())
    assert summary["lower"] != pytest.approx(from_guide.lower)


def test_paired_differences_over_the_same_images(setup):
    vae, data, source = setup
    comparison = _compare(vae, data, source, num_samples=32, num_test=30)
    budget = AISBudget(num_test=30, steps=10, chains=4, leapfrog_steps=3, bdmc_num_data=0)
    out = run_ais(vae, data, comparison, budget, seed=0, progress=False)["ais"]
    prior = torch.tensor(out["prior"]["per_datum"], dtype=torch.double)
    assert "bdmc" not in out["prior"] and "minus_prior" not in out["prior"]
    for name, entry in out.items():
        ais = torch.tensor(entry["per_datum"], dtype=torch.double)
        is_part = comparison.results[name].per_datum[:30].double()
        pairs = {"minus_is": ais - is_part}
        if name != "prior":
            pairs["minus_prior"] = ais - prior
        for key, d in pairs.items():
            assert entry[key]["mean"] == pytest.approx(float(d.mean()), abs=1e-9)
            assert entry[key]["stderr"] == pytest.approx(float(d.std() / math.sqrt(30)), rel=1e-9)
        # paired, the spread of log p(x) between images cancels: far below the errors combined
        combined = math.hypot(entry["stderr"], entry["is_stderr"])
        assert entry["minus_is"]["stderr"] < 0.5 * combined


def test_prior_headline_does_not_depend_on_the_other_sources(setup):
    vae, data, _ = setup
    kwargs = dict(num_samples=50, num_test=30, surgery=False, progress=False)
    alone, _ = evaluate_run(vae, data, sources=["prior"], **kwargs)
    many, _ = evaluate_run(vae, data, sources=["prior", "gaussian-loc", "gmm"], **kwargs)
    assert many["loglik"] == alone["loglik"] and many["elbo"] == alone["elbo"]
    assert many["sources"]["prior"]["ksweep"] == alone["sources"]["prior"]["ksweep"]
    assert many["loglik"] == many["sources"]["prior"]["loglik"] and many["prior_draws"] == "own"
    assert "prior, on draws of its own proposal" in format_evaluation(many)
    assert set(many["sources"]) == {"prior", "gaussian-loc", "gmm"}


def test_format_evaluation_names_each_gap_with_its_source_and_reads_old_files():
    ais = {"loglik": -90.0, "stderr": 2.0, "is_loglik": -90.3, "num_test": 4, "steps": 5}
    ais.update(chains=2, minus_is={"mean": 0.3, "stderr": 0.05})
    bdmc_run = {"source": "gmm", "initial": "adapted proposal of gmm", "lower": -91.0}
    bdmc_run.update(upper=-90.9, gap=0.1, gap_stderr=0.02, num_data=8, steps=5, chains=2)
    entry = {"loglik": -90.5, "stderr": 2.0, "khat_gt_0.7": 0.0, "ksweep": {}}
    evaluation = {
        "sources": {
            "prior": {**entry, "ais": ais},
            "gmm": {**entry, "ais": {**ais, "bdmc": bdmc_run}},
        },
        "elbo": -95.0,
        "loglik": -90.5,
        "loglik_stderr": 2.0,
    }
    text = format_evaluation(evaluation)
    assert "BDMC for gmm on 8 data simulated from it" in text
    assert "from the adapted proposal of gmm" in text and "BDMC for prior" not in text
    assert "prior AIS - IS +0.30 +- 0.05" in text
    # an old file: one top-level BDMC, which was the prior's (simulated from it, from the guide)
    evaluation["bdmc"] = {k: v for k, v in bdmc_run.items() if k not in ("source", "initial")}
    text = format_evaluation(evaluation)
    assert "BDMC for prior on 8 data simulated from it, T=5, from the guide" in text


def test_cvae_bdmc_per_source_uses_labels():
    vae = build_model(
        model="cvae", x_dim=X_DIM, z_dim=2, y_dim=3, hidden_dims=[8], likelihood="gaussian"
    ).eval()
    x = torch.randn(60, X_DIM)
    split = Split(x, torch.arange(60) % 3)
    data = Splits(train=split, val=split, test=split, name="toy", num_classes=3)
    comparison = compare_sources(
        vae,
        data.train,
        data.test,
        ["prior", "gaussian-z"],
        num_samples=16,
        num_test=10,
        progress=False,
    )
    budget = AISBudget(num_test=4, steps=4, chains=2, leapfrog_steps=2, bdmc_num_data=6)
    out = run_ais(vae, data, comparison, budget, seed=0, progress=False)["ais"]
    for name in ("prior", "gaussian-z"):
        run = out[name]["bdmc"]
        assert run["source"] == name and math.isfinite(run["gap"]) and run["num_data"] == 6
    # the fitted source is pooled over classes: its AIS and BDMC start from its adapted
    # proposal given (x, y); the prior's start is the guide q(z | x, y)
    assert out["gaussian-z"]["bdmc"]["initial"] == "adapted proposal of gaussian-z"
    assert out["prior"]["bdmc"]["initial"] == "guide"
