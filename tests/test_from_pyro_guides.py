"""Guides that are not a diagonal Normal through from_pyro: a full-covariance Normal guide
of probabilistic PCA against closed forms (the exact aggregate, a Gaussian fitted to sampled
z, the amortized ELBO), and a flow guide through the whole analysis."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro_pairs import NOISE, D, Z, mc_stderr, ppca_pair, train_with_svi

import pyrovae.analysis as pa
from pyrovae.pyro_pair import from_pyro
from pyrovae.pyro_sites import MOMENT_DRAWS


def ppca_full(widen: float = 1.3, seed: int = 0):
    """PPCA whose posterior has a full covariance (W's columns are not orthogonal), with a
    MultivariateNormal guide: the exact posterior, its covariance scaled by widen^2."""
    gen = torch.Generator().manual_seed(seed)
    u, v = torch.randn(2, D, generator=gen)
    w = torch.stack([u, 0.9 * u + 0.4 * v], 1)  # nearly parallel columns: correlated z
    b = torch.randn(D, generator=gen)
    cov = torch.linalg.inv(w.T @ w / NOISE**2 + torch.eye(Z))
    gain = cov @ w.T / NOISE**2
    tril = widen * torch.linalg.cholesky(cov)

    def posterior(x):
        return dist.MultivariateNormal((x - b) @ gain.T, scale_tril=tril)

    model, guide = ppca_pair(w, b, posterior)
    return model, guide, w, b, gain, cov, tril


def marginal_cov(w: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return w @ cov @ w.T + NOISE**2 * torch.eye(D)


def data(w, b, n: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return dist.MultivariateNormal(b, marginal_cov(w, torch.eye(Z))).sample((n,))


def test_a_full_covariance_guide_encodes_its_own_moments():
    model, guide, w, b, gain, cov, tril = ppca_full()
    x = data(w, b, 6, seed=1)
    vae = from_pyro(model, guide, x)
    loc, scale, _ = vae.encoder.encode(x)
    torch.testing.assert_close(loc, (x - b) @ gain.T)
    torch.testing.assert_close(scale, (tril @ tril.T).diagonal().sqrt().expand(6, Z))
    # not the diagonal of the Cholesky factor, which a reader of `scale_tril` might take
    assert not torch.allclose(scale[0], tril.diagonal(), atol=1e-3)


def test_importance_sampling_ais_and_the_exact_aggregate_with_a_full_covariance_guide():
    model, guide, w, b, gain, cov, tril = ppca_full()
    train, x = data(w, b, 300, seed=2), data(w, b, 10, seed=3)
    vae = from_pyro(model, guide, train[:8])
    exact = dist.MultivariateNormal(b, marginal_cov(w, torch.eye(Z))).log_prob(x).double()
    result = pa.estimate_log_likelihood(
        vae, x, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )
    err = (result.per_datum - exact).abs()
    assert (err < 5 * mc_stderr(result.log_weights) + 1e-3).all(), err
    ais = pa.ais_log_likelihood(vae, x, num_steps=100, num_chains=16, seed=0)
    assert ((ais.per_datum - exact).abs() < 5 * mc_stderr(ais.log_weights) + 1e-3).all()
    # the exact aggregate of full-covariance posteriors: a mixture of the 300 q(z | x_n)
    options = {
        "aggregate": {"flow_components": None},  # every component, not a subset
        "gaussian-full": {"draws_per_datum": 20},  # moments from 6,000 sampled z
    }
    sources = pa.fit_sources(
        ["aggregate", "gaussian-full"], vae, train, options=options, progress=False
    )
    means = (train - b) @ gain.T
    shared = tril @ tril.T
    z = torch.randn(7, Z)
    components = dist.MultivariateNormal(means, shared.expand(300, Z, Z))
    expected = torch.logsumexp(components.log_prob(z[:, None]), 1) - math.log(300)
    torch.testing.assert_close(
        sources["aggregate"].log_prob(z).double(), expected.double(), atol=1e-4, rtol=1e-4
    )
    # its p_r(x) = 1/N sum_n N(x; W m_n + b, W S W^T + s^2 I), against importance sampling
    agg = dist.MixtureSameFamily(
        dist.Categorical(logits=torch.zeros(300)),
        dist.MultivariateNormal(means @ w.T + b, marginal_cov(w, shared)),
    )
    # the Gaussian fitted to sampled z has the aggregate's moments, within their noise
    view = sources["gaussian-full"].gaussian_mixture()
    total = torch.cov(means.T, correction=0) + shared  # Cov_n[m_n] + S
    torch.testing.assert_close(view.covariance[0], total, atol=0.05, rtol=0.05)
    fitted = dist.MultivariateNormal(view.loc[0] @ w.T + b, marginal_cov(w, view.covariance[0]))
    estimates = pa.estimate_source_log_likelihoods(
        vae, x, sources, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )
    for name, closed in (("aggregate", agg), ("gaussian-full", fitted)):
        est = estimates[name]
        err = (est.per_datum - closed.log_prob(x).double()).abs()
        assert (err < 5 * mc_stderr(est.log_weights) + 1e-3).all(), (name, err)
    # a wrong answer (the prior's marginal) is many standard errors away for the aggregate
    wrong = (agg.log_prob(x) - exact).abs().max()
    assert wrong > 5 * float(mc_stderr(estimates["aggregate"].log_weights).max())


def test_the_amortized_elbo_of_a_full_covariance_guide_against_its_closed_form():
    model, guide, w, b, gain, cov, tril = ppca_full(widen=1.5)
    x = data(w, b, 3, seed=4)
    vae = from_pyro(model, guide, x)
    exact = dist.MultivariateNormal(b, marginal_cov(w, torch.eye(Z))).log_prob(x).double()
    mean = (x - b) @ gain.T
    q = dist.MultivariateNormal(mean, scale_tril=tril)
    kl = torch.distributions.kl_divergence(q, dist.MultivariateNormal(mean, cov)).double()
    gaps = pa.inference_gaps(
        vae, x, steps=300, elbo_draws=2000, ais_options={"num_steps": 50, "num_chains": 8}
    )
    err = (gaps.elbo_amortized - (exact - kl)).abs()
    assert (err < 5 * gaps.elbo_amortized_stderr + 1e-3).all(), err
    assert (kl > 0.1).all()  # the widened guide is measurably worse: the test can fail


class FlowGuideVAE(torch.nn.Module):
    """A VAE whose guide is a Normal pushed through an affine autoregressive flow (an IAF
    step): no closed-form mean or variance, not a diagonal Normal."""

    def __init__(self, x_dim: int = 784, z_dim: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = torch.nn.Linear(x_dim, 2 * z_dim)
        self.dec = torch.nn.Linear(z_dim, x_dim)
        self.iaf = T.affine_autoregressive(z_dim, hidden_dims=[hidden])

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            logits = self.dec(z)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        pyro.module("iaf", self.iaf)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(x).chunk(2, -1)
            base = dist.Normal(loc, log_scale.exp()).to_event(1)
            pyro.sample("z", dist.TransformedDistribution(base, [self.iaf]))


def test_a_flow_guide_encodes_monte_carlo_moments_without_moving_the_random_numbers():
    torch.manual_seed(0)
    net = FlowGuideVAE(x_dim=6)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    vae = from_pyro(net.model, net.guide, x)
    state = torch.get_rng_state()
    loc, scale, _ = vae.encoder.encode(x)
    assert torch.equal(torch.get_rng_state(), state)
    q = vae.encoder(x)
    draws = q.sample((20_000,))
    # within 5 standard errors of the MOMENT_DRAWS-draw estimate of the mean
    assert ((loc - draws.mean(0)).abs() < 5 * draws.std(0) / math.sqrt(MOMENT_DRAWS)).all()
    assert ((scale / draws.std(0)).log().abs() < 0.3).all()
    torch.testing.assert_close(vae.encoder.encode(x)[0], loc)  # the same seed each call


def test_a_flow_guide_through_evaluate_and_diagnose(mnist, evaluate_and_diagnose):
    from pyrovae.data import fixed_binarization

    pyro.set_rng_seed(0)
    net = FlowGuideVAE()
    x = fixed_binarization(mnist.train.x[:500])
    train_with_svi(net, x)
    vae = from_pyro(net.model, net.guide, x[:8])
    sources = ["prior", "aggregate", "gaussian-z", "gmm"]
    _, comparison = evaluate_and_diagnose(vae, figures=True, sources=sources)
    assert not comparison.sources["aggregate"].diagonal  # the guide's own q(z | x_n) summed


def test_the_report_of_a_pair_on_unlabelled_data_says_what_it_leaves_out(tmp_path):
    import numpy as np

    import pyrovae

    model, guide, w, b, *_ = ppca_full()
    rows = data(w, b, 200, seed=6).numpy().astype(np.float32)
    splits = pyrovae.load_dataset(rows)
    vae = from_pyro(model, guide, splits.train.x[:8])
    evaluation, comparison = pa.evaluate_run(
        vae, splits, sources=["prior", "gaussian-z"], num_samples=20, num_test=10, progress=False
    )
    run = pa.build_run_report(
        vae, splits, evaluation, tmp_path / "figures", comparison.sources, name="mine"
    )
    assert run.description.startswith("A Pyro model/guide pair written outside pyrovae")
    assert "MultivariateNormal guide" in run.description and "vectors of 5" in run.description
    assert run.config["pair"]["latent_site"] == "latent" and run.config["pair"]["z_dim"] == Z
    notes = " ".join(run.notes)
    assert "trained outside pyrovae" in notes and "no diagnostics" in notes
    assert "the data have no labels" in notes
    assert all(p.is_file() for p in run.figures.values()) and len(run.figures) >= 3
    page = pa.write_report([run], tmp_path).read_text()
    assert "Not shown" in page and "the data have no labels" in page
