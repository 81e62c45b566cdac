"""Every model x prior x guide x likelihood combination: loss, gradients, shapes, sites."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrovae import build_model
from pyrovae.guides import GUIDES, DiagonalNormalEncoder
from pyrovae.models import CVAE, LIKELIHOODS, PRIORS, VAE, GaussianDecoder, StandardNormalPrior

X_DIM, Z_DIM, BATCH = 12, 3, 5
COMBOS = list(itertools.product(["vae", "cvae"], PRIORS, GUIDES, LIKELIHOODS))


def make_batch(model: str, likelihood: str):
    x = torch.rand(BATCH, X_DIM)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    if likelihood == "discretized-logistic":  # a mass function of the integers 0..255
        x = torch.floor(256 * x).clamp(max=255)
    y = torch.nn.functional.one_hot(torch.arange(BATCH) % 4, 4).float() if model == "cvae" else None
    return x, y


def small(model: str, prior: str, guide: str, likelihood: str):
    return build_model(
        model=model,
        prior=prior,
        guide=guide,
        likelihood=likelihood,
        x_dim=X_DIM,
        z_dim=Z_DIM,
        y_dim=4,
        hidden_dims=[16],
        num_components=3,
    )


@pytest.mark.parametrize("model,prior,guide,likelihood", COMBOS)
def test_sweep(model, prior, guide, likelihood):
    vae = small(model, prior, guide, likelihood)
    assert isinstance(vae, CVAE if model == "cvae" else VAE)
    x, y = make_batch(model, likelihood)

    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, y)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []

    guide_trace = poutine.trace(vae.guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, y)
    assert not guide_trace.nodes["z"]["is_observed"]
    assert guide_trace.nodes["z"]["value"].shape == (BATCH, Z_DIM)
    assert not model_trace.nodes["z"]["is_observed"]
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["x"]["fn"].event_shape == (X_DIM,)
    assert [f.name for f in model_trace.nodes["x"]["cond_indep_stack"]] == ["data"]

    samples = vae.generate(7, y=None if y is None else y[:1].expand(7, -1))
    assert samples.shape == (7, X_DIM)
    assert torch.isfinite(samples).all()
    high = {"gaussian": math.inf, "discretized-logistic": 255}.get(likelihood, 1)
    assert samples.min() >= (-math.inf if likelihood == "gaussian" else 0)
    assert samples.max() <= high


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_meanfield_and_trace_elbo_agree_in_expectation(model):
    vae = small(model, "normal", "diagonal", "bernoulli")
    x, y = make_batch(model, "bernoulli")
    with torch.no_grad():
        reference = TraceMeanField_ELBO().loss(vae.model, vae.guide, x, y)
        estimates = torch.tensor(
            [
                Trace_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1).loss(
                    vae.model, vae.guide, x, y
                )
                for _ in range(20)
            ]
        )
    # The meanfield ELBO is itself stochastic in the likelihood term; compare with a
    # many-particle Trace_ELBO and the spread of its estimates.
    mf = torch.tensor(
        [
            TraceMeanField_ELBO(
                num_particles=200, vectorize_particles=True, max_plate_nesting=1
            ).loss(vae.model, vae.guide, x, y)
            for _ in range(20)
        ]
    )
    stderr = (estimates.var() / 20 + mf.var() / 20).sqrt()
    assert abs(estimates.mean() - mf.mean()) < 4 * stderr + 1e-3 * abs(reference)


def test_latent_plate_broadcasts_particles():
    """Leading particle dims on z broadcast through decoder and prior."""
    vae = small("cvae", "vamp", "flow", "bernoulli")
    x, y = make_batch("cvae", "bernoulli")
    with pyro.plate("particles", 4, dim=-2):
        trace = poutine.trace(vae.guide).get_trace(x, y)
    z = trace.nodes["z"]["value"]
    assert z.shape == (4, BATCH, Z_DIM)
    assert vae.decoder(z, y).batch_shape == (4, BATCH)
    assert vae.prior(y).log_prob(z).shape == (4, BATCH)


def test_linear_gaussian_decoder_is_ppca():
    decoder = GaussianDecoder(2, 6, hidden_dims=(), scale="isotropic")
    assert [type(m).__name__ for m in decoder.net] == ["Linear"]
    vae = VAE(DiagonalNormalEncoder(6, 2, [8]), decoder, StandardNormalPrior(2))
    assert decoder.scale.shape == (1,)
    z, x = torch.randn(3, 2), torch.randn(3, 6)
    layer = decoder.net[0]
    expected = torch.distributions.Normal(z @ layer.weight.T + layer.bias, decoder.scale)
    torch.testing.assert_close(vae.decoder(z).log_prob(x), expected.log_prob(x).sum(-1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prior": "gauss"}, r"unknown prior 'gauss'; valid names are \['flow', 'mog'"),
        ({"guide": "iaf"}, r"unknown guide 'iaf'; valid names are \['diagonal', 'flow'\]"),
        ({"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
        ({"model": "gan"}, r"unknown model 'gan'; valid names are \['cvae', 'm2', 'vae'\]"),
        ({"z_dim": 0}, "z_dim must be a positive integer, got 0"),
        ({"hidden_dims": []}, "hidden_dims must hold at least one width"),
        ({"hidden_dims": [32, -1]}, "each entry of hidden_dims must be a positive integer"),
        ({"prior": "flow", "z_dim": 1}, "flow prior needs z_dim >= 2"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_bad_inputs_raise():
    vae = small("vae", "normal", "diagonal", "bernoulli")
    cvae = small("cvae", "normal", "diagonal", "bernoulli")
    x, y = make_batch("cvae", "bernoulli")
    with pytest.raises(
        ValueError, match=r"x must be a tensor of shape \(batch, 12\), got \(5, 3\)"
    ):
        vae.model(x[:, :3])
    with pytest.raises(ValueError, match="y was given to an unconditional VAE"):
        vae.guide(x, y)
    with pytest.raises(ValueError, match=r"a CVAE needs y: one-hot labels of shape \(batch, 4\)"):
        cvae.model(x)
    with pytest.raises(ValueError, match=r"y must be one-hot labels of shape \(5, 4\)"):
        cvae.guide(x, y[:, :2])
    with pytest.raises(ValueError, match="conditional prior p\\(z \\| y\\) needs a CVAE"):
        enc = DiagonalNormalEncoder(X_DIM, Z_DIM, [8])
        prior = PRIORS["vamp"](DiagonalNormalEncoder(X_DIM, Z_DIM, [8], y_dim=4), 3)
        VAE(enc, LIKELIHOODS["bernoulli"](Z_DIM, X_DIM, [8]), prior)
