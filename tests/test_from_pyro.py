"""A user's own Pyro model/guide pair through from_pyro: exact answers of probabilistic PCA
written as plain Pyro functions, the same numbers as pyrovae's own class, and refusals."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from pyro_pairs import NOISE, D, Z, mc_stderr, ppca_pair, train_with_svi

import pyrovae.analysis as pa
from pyrovae.build import build_model
from pyrovae.pyro_pair import PyroPairError, from_pyro


def ppca(seed: int = 0, widen: float = 1.3):
    """PPCA as plain Pyro functions with their own names ("latent", "obs", plate "rows"):
    the model, a linear-Gaussian guide (the exact posterior, widened), W, b."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.linalg.qr(torch.randn(D, Z, generator=gen))[0] * torch.tensor([2.0, 1.0])
    b = torch.randn(D, generator=gen)
    precision = w.T @ w / NOISE**2 + torch.eye(Z)
    cov = torch.linalg.inv(precision)
    gain = cov @ w.T / NOISE**2

    def posterior(x):
        return dist.Normal((x - b) @ gain.T, widen * cov.diagonal().sqrt()).to_event(1)

    model, guide = ppca_pair(w, b, posterior)
    return model, guide, w, b


def marginal(w, b, loc, cov, log_weights):
    """log sum_k pi_k N(x; W m_k + b, W S_k W^T + s^2 I) as a torch mixture."""
    covs = w @ cov @ w.T + NOISE**2 * torch.eye(D)
    comps = dist.MultivariateNormal(loc @ w.T + b, covs)
    return dist.MixtureSameFamily(dist.Categorical(logits=log_weights), comps)


def data(w, b, n: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return dist.MultivariateNormal(b, w @ w.T + NOISE**2 * torch.eye(D)).sample((n,))


def test_estimators_through_a_plain_pyro_pair_agree_with_the_exact_marginal():
    model, guide, w, b = ppca()
    x = data(w, b, 16, seed=1)
    vae = from_pyro(model, guide, x)
    # the prior read off the model is N(0, I) of one datum; generation decodes its draws
    prior = vae.latent_prior()
    z = prior.sample((3,))
    assert z.shape == (3, Z) and prior.batch_shape == ()
    torch.testing.assert_close(prior.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1))
    torch.testing.assert_close(vae.decoder(z).mean, z @ w.T + b)
    assert vae.generate(4).shape == (4, D)
    exact = dist.MultivariateNormal(b, w @ w.T + NOISE**2 * torch.eye(D)).log_prob(x).double()
    result = pa.estimate_log_likelihood(
        vae, x, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )
    err = (result.per_datum - exact).abs()
    assert (err < 5 * mc_stderr(result.log_weights) + 1e-3).all(), err
    ais = pa.ais_log_likelihood(vae, x, num_steps=100, num_chains=16, seed=0)
    err = (ais.per_datum - exact).abs()
    assert (err < 5 * mc_stderr(ais.log_weights) + 1e-3).all(), err
    # a wrong estimator, the guide's ELBO, is below by KL(q || p(z | x)) > 5 standard errors
    assert ((exact - result.elbo) > 5 * mc_stderr(result.log_weights)).all()


@pytest.mark.parametrize("name", ["gaussian-z", "gmm"])
def test_sources_fitted_to_the_pairs_guide_against_their_closed_form(name):
    model, guide, w, b = ppca()
    train, x = data(w, b, 400, seed=2), data(w, b, 12, seed=3)
    vae = from_pyro(model, guide, train[:8])
    options = {"gmm": {"num_components": 3}} if name == "gmm" else None
    source = pa.fit_sources([name], vae, train, options=options, progress=False)[name]
    view = source.gaussian_mixture()
    exact = marginal(w, b, view.loc, view.covariance, view.log_weights).log_prob(x).double()
    result = pa.estimate_source_log_likelihoods(
        vae, x, {name: source}, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )[name]
    err = (result.per_datum - exact).abs()
    assert (err < 5 * mc_stderr(result.log_weights) + 1e-3).all(), err
    # the prior's marginal is another answer, far from this one for a wrong source
    prior = dist.MultivariateNormal(b, w @ w.T + NOISE**2 * torch.eye(D)).log_prob(x)
    assert (exact - prior).abs().max() > 5 * float(mc_stderr(result.log_weights).max())


@pytest.mark.parametrize("model_kind", ["vae", "cvae"])
def test_pyrovae_own_class_gives_the_same_numbers_both_ways(model_kind):
    pyro.set_rng_seed(1)
    own = build_model(
        model=model_kind, x_dim=D, z_dim=Z, y_dim=3, hidden_dims=[8], likelihood="gaussian"
    ).eval()
    x = torch.randn(10, D)
    y = (
        torch.nn.functional.one_hot(torch.arange(10) % 3, 3).float()
        if model_kind == "cvae"
        else None
    )
    wrapped = from_pyro(own.model, own.guide, x, y)
    assert wrapped.conditional == own.conditional
    # the user's module is held, so moving, freezing and saving the VAE reach it
    assert {id(p) for p in own.parameters()} <= {id(p) for p in wrapped.parameters()}
    direct = pa.estimate_log_likelihood(own, x, y, num_samples=300, seed=5, progress=False)
    through = pa.estimate_log_likelihood(wrapped, x, y, num_samples=300, seed=5, progress=False)
    assert torch.equal(direct.per_datum, through.per_datum)
    a = pa.ais_log_likelihood(own, x, y, num_steps=10, num_chains=2, seed=0)
    b = pa.ais_log_likelihood(wrapped, x, y, num_steps=10, num_chains=2, seed=0)
    torch.testing.assert_close(a.per_datum, b.per_datum)


def no_plate_model(x):
    z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], Z), 1.0).to_event(2))
    pyro.sample("x", dist.Normal(z @ torch.ones(Z, D), 1.0).to_event(2), obs=x)


def no_plate_guide(x):
    pyro.sample("z", dist.Normal(x[:, :Z], 1.0).to_event(2))


def two_latents_model(x):
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
        c = pyro.sample("c", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
        pyro.sample("x", dist.Normal((a + c) @ torch.ones(Z, D), 1.0).to_event(1), obs=x)


def two_latents_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("a", dist.Normal(x[:, :Z], 1.0).to_event(1))
        pyro.sample("c", dist.Normal(x[:, :Z], 1.0).to_event(1))


def scalar_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z[:, None].expand(-1, D), 1.0).to_event(1), obs=x)


def scalar_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x[:, 0], 1.0))


def vector_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ torch.ones(Z, D), 1.0).to_event(1), obs=x)


def unreparameterized_guide(x):
    with pyro.plate("data", x.shape[0]):
        probs = torch.sigmoid(x[:, :Z])
        pyro.sample("z", dist.Bernoulli(probs).to_event(1))


def rows_only_model(x):  # reads z as (B, z_dim): fails on (K, B, z_dim) particles
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
        loc = z.reshape(x.shape[0], Z) @ torch.ones(Z, D)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def vector_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x[:, :Z], 1.0).to_event(1))


def per_datum_guide(x):  # one free location per row of the training batch
    loc = pyro.param("loc", torch.randn(8, Z))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))


@pytest.mark.parametrize(
    "model,guide,expected",
    [
        (no_plate_model, no_plate_guide, "is not inside a plate over the 8 rows"),
        (two_latents_model, two_latents_guide, "found several: ['a', 'c']"),
        (scalar_model, scalar_guide, "needs one vector per datum"),
        (vector_model, unreparameterized_guide, "has no reparameterized sample"),
        (vector_model, per_datum_guide, "is not amortized"),
        (rows_only_model, vector_guide, "fails when z has a leading dim of particles"),
    ],
)
def test_pairs_it_cannot_read_are_refused_in_one_line(model, guide, expected):
    pyro.clear_param_store()
    x = torch.randn(8, D)
    with pytest.raises(PyroPairError) as info:
        from_pyro(model, guide, x)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_an_autoguide_with_one_parameter_per_datum_is_refused():
    pyro.clear_param_store()
    x = torch.randn(8, D)
    guide = AutoNormal(vector_model)
    guide(x)  # its parameters take the shape of this batch
    with pytest.raises(PyroPairError, match="not amortized"):
        from_pyro(vector_model, guide, x)


def test_posterior_diagnostics_through_the_pair():
    """NUTS references and the inference gaps run on the user's pair: the amortized ELBO
    is the closed form log p(x) - KL(q || p(z | x)) within its Monte Carlo error, and the
    best diagonal q* (the exact posterior is diagonal here) closes the gap to log p(x)."""
    model, guide, w, b = ppca(widen=1.5)
    x = data(w, b, 3, seed=4)
    vae = from_pyro(model, guide, x)
    refs = pa.reference_posteriors(vae, x[:2], num_chains=2, warmup=50, num_samples=50, seed=0)
    assert len(refs) == 2
    exact = dist.MultivariateNormal(b, w @ w.T + NOISE**2 * torch.eye(D)).log_prob(x).double()
    precision = w.T @ w / NOISE**2 + torch.eye(Z)
    cov = torch.linalg.inv(precision).double()
    mean = ((x - b) @ (cov.float() @ w.T / NOISE**2).T).double()
    q = dist.Normal(mean, 1.5 * cov.diagonal().sqrt()).to_event(1)
    kl = torch.stack(
        [
            torch.distributions.kl_divergence(
                dist.MultivariateNormal(q.mean[i], torch.diag(q.variance[i])),
                dist.MultivariateNormal(mean[i], cov),
            )
            for i in range(3)
        ]
    )
    gaps = pa.inference_gaps(
        vae, x, steps=300, elbo_draws=2000, ais_options={"num_steps": 50, "num_chains": 8}
    )
    err = (gaps.elbo_amortized - (exact - kl)).abs()
    assert (err < 5 * gaps.elbo_amortized_stderr + 1e-3).all(), err
    assert ((exact - gaps.elbo_optimal).abs() < 0.05).all(), exact - gaps.elbo_optimal
    assert (kl > 0.05).all()  # the amortized guide is measurably worse: the test can fail


class TutorialVAE(torch.nn.Module):
    """A VAE written as Pyro's VAE tutorial writes one (softplus MLPs, sites "latent" and
    "obs" in plate "data", Bernoulli pixels), not built by pyrovae."""

    def __init__(self, z_dim: int = 5, hidden: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = torch.nn.Linear(784, hidden)
        self.enc_loc = torch.nn.Linear(hidden, z_dim)
        self.enc_scale = torch.nn.Linear(hidden, z_dim)
        self.dec = torch.nn.Sequential(
            torch.nn.Linear(z_dim, hidden), torch.nn.Softplus(), torch.nn.Linear(hidden, 784)
        )

    def model(self, x):
        pyro.module("decoder", self.dec)
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros((x.shape[0], self.z_dim))
            z = pyro.sample("latent", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            probs = torch.sigmoid(self.dec(z))
            pyro.sample("obs", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0]):
            h = torch.nn.functional.softplus(self.enc(x))
            scale = torch.exp(self.enc_scale(h))
            pyro.sample("latent", dist.Normal(self.enc_loc(h), scale).to_event(1))


def test_a_model_trained_by_pyros_own_svi_through_evaluate_and_diagnose(
    mnist, evaluate_and_diagnose
):
    from pyrovae.data import fixed_binarization

    pyro.set_rng_seed(0)
    net = TutorialVAE()
    x = fixed_binarization(mnist.train.x[:1000])
    train_with_svi(net, x)
    vae = from_pyro(net.model, net.guide, x[:8])
    assert vae.decoder.binarize  # a Bernoulli likelihood is evaluated on binarized data
    evaluation, _ = evaluate_and_diagnose(vae, options={"flow": {"num_steps": 5}})
    assert set(evaluation["sources"]) >= {"prior", "aggregate", "gmm", "flow"}


def test_a_conditional_pair_with_a_prior_per_label_against_its_exact_marginal():
    """PPCA per label, written as a user's CVAE would be: p(z | y) = N(M y, I), x | z, y =
    [W V] [z; y] + b + noise (``torch.cat([z, y])``, which must run on a (particles, B,
    z_dim) z), so p(x | y) = N(W M y + V y + b, W W^T + s^2 I)."""
    model0, guide0, w, b = ppca()
    gen = torch.Generator().manual_seed(7)
    k = 3
    means = 2.0 * torch.randn(k, Z, generator=gen)
    v = torch.randn(D, k, generator=gen)
    cov = torch.linalg.inv(w.T @ w / NOISE**2 + torch.eye(Z))
    gain = cov @ w.T / NOISE**2
    joint = torch.cat([w, v], 1)

    def model(x, y):
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(y @ means, 1.0).to_event(1))
            loc = torch.cat([z, y], -1) @ joint.T + b
            pyro.sample("obs", dist.Normal(loc, NOISE).to_event(1), obs=x)

    def guide(x, y):
        with pyro.plate("rows", x.shape[0]):
            prior_mean = y @ means
            loc = prior_mean + (x - y @ v.T - b - prior_mean @ w.T) @ gain.T
            pyro.sample("latent", dist.Normal(loc, 1.3 * cov.diagonal().sqrt()).to_event(1))

    labels = torch.arange(12) % k
    y = torch.nn.functional.one_hot(labels, k).float()
    torch.manual_seed(3)
    z = means[labels] + torch.randn(12, Z)
    x = z @ w.T + y @ v.T + b + NOISE * torch.randn(12, D)
    vae = from_pyro(model, guide, x, y)
    assert vae.prior.conditional  # the prior depends on the label, and says so
    torch.testing.assert_close(vae.latent_prior(y).mean, means[labels])
    exact = dist.MultivariateNormal(
        (y @ means) @ w.T + y @ v.T + b, w @ w.T + NOISE**2 * torch.eye(D)
    ).log_prob(x)
    result = pa.estimate_log_likelihood(
        vae, x, y, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )
    err = (result.per_datum - exact.double()).abs()
    assert (err < 5 * mc_stderr(result.log_weights) + 1e-3).all(), err
    ais = pa.ais_log_likelihood(vae, x, y, num_steps=100, num_chains=16, seed=0)
    assert ((ais.per_datum - exact.double()).abs() < 5 * mc_stderr(ais.log_weights) + 1e-3).all()
    # the wrong prior (label 0's for every datum) is far off: the test can fail
    wrong = dist.MultivariateNormal(
        means[0] @ w.T + y @ v.T + b, w @ w.T + NOISE**2 * torch.eye(D)
    ).log_prob(x)
    assert ((wrong - exact)[labels != 0].abs() > 1.0).all()
    # generation with a label decodes a draw of that label's prior
    draws = vae.generate(2000, y=torch.nn.functional.one_hot(torch.full((2000,), 2), k).float())
    expected = means[2] @ w.T + v[:, 2] + b
    assert ((draws.mean(0) - expected).abs() < 5 * draws.std(0) / math.sqrt(2000)).all()


def test_plain_pyro_params_are_held_by_the_vae_and_enter_its_fingerprint():
    """A pair whose weights are plain ``pyro.param`` statements (no module): their values
    when the pair was read are buffers of the VAE (moved by ``.to``, served while the
    weights are frozen) and part of the fingerprint saved evaluations are checked against."""
    from pyrovae.analysis.sources.saved import model_fingerprint

    _, _, w, b = ppca()

    def model(x):
        weight = pyro.param("W", w.clone())
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z @ weight.T + b, NOISE).to_event(1), obs=x)

    def guide(x):
        gain = pyro.param("gain", torch.zeros(Z, D))
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("latent", dist.Normal(x @ gain.T, 1.0).to_event(1))

    pyro.clear_param_store()
    x = data(w, b, 8, seed=5)
    first = from_pyro(model, guide, x)
    held = dict(first.named_buffers())
    assert any(torch.equal(t, w) for t in held.values())
    again = from_pyro(model, guide, x)
    assert model_fingerprint(again) == model_fingerprint(first)
    pyro.get_param_store()["W"] = 2 * w  # the user's weights change: another fingerprint
    changed = from_pyro(model, guide, x)
    assert model_fingerprint(changed) != model_fingerprint(first)
    # while the weights are frozen the held values answer, not the store's new ones
    first.register_params = False
    trace = pyro.poutine.trace(first.model).get_trace(x)
    torch.testing.assert_close(trace.nodes["x"]["fn"].mean, trace.nodes["z"]["value"] @ w.T + b)
