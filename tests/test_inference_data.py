"""Guide draws as arviz.InferenceData: dims, coordinates, MC agreement and ArviZ plots."""

from __future__ import annotations

import warnings

import arviz as az
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib import MatplotlibDeprecationWarning

from pyrovae import build_model
from pyrovae.analysis.posterior.inference_data import to_inference_data
from pyrovae.train import one_hot

matplotlib.use("Agg")  # headless; the library itself never picks a backend


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def encoded(small_vae, mnist):
    x, labels = mnist.test.x[:20], mnist.test.y[:20]
    return x, labels, to_inference_data(small_vae, x, labels=labels, num_draws=400)


def test_dims_and_coords(encoded, small_vae):
    x, labels, idata = encoded
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "datum", "latent")
    assert z.shape == (1, 400, 20, 2)
    assert idata.posterior["datum"].values.tolist() == list(range(20))
    assert idata.posterior["latent"].values.tolist() == [0, 1]
    assert idata.posterior["label"].dims == ("datum",)
    assert idata.posterior["label"].values.tolist() == labels.tolist()
    assert idata.posterior.attrs["inference_library"] == "pyro"
    assert set(idata.constant_data.data_vars) == {"encoder_loc", "encoder_scale"}


def test_posterior_means_match_the_encoder(encoded, small_vae):
    x, _, idata = encoded
    loc, scale, _ = small_vae.encoder.encode(x)
    mean = idata.posterior["z"].mean(("chain", "draw")).values
    sd = idata.posterior["z"].std(("chain", "draw")).values
    loc, scale = loc.detach().double().numpy(), scale.detach().double().numpy()
    # 5 Monte Carlo standard errors of the mean of 400 draws.
    assert np.all(np.abs(mean - loc) < 5 * scale / np.sqrt(400))
    assert np.allclose(sd, scale, rtol=0.2)
    assert np.allclose(idata.constant_data["encoder_loc"].values, loc)


def test_select_a_class_by_label(encoded):
    _, labels, idata = encoded
    nines = idata.posterior.sel(datum=idata.posterior.label == 9)
    assert nines.sizes["datum"] == int((labels == 9).sum())


def test_arviz_summary(encoded):
    _, _, idata = encoded
    table = az.summary(idata, coords={"datum": [0, 1]}, kind="stats")
    assert len(table) == 2 * 2
    assert {"mean", "sd"} <= set(table.columns)


def test_arviz_summary_with_chains(small_vae, mnist):
    idata = to_inference_data(small_vae, mnist.test.x[:3], num_draws=100, num_chains=2)
    assert idata.posterior["z"].shape == (2, 100, 3, 2)
    table = az.summary(idata)
    assert len(table) == 3 * 2
    assert np.all(np.abs(table["r_hat"].to_numpy() - 1) < 0.1)


def test_arviz_plots(encoded, close_figures):
    _, _, idata = encoded
    ax = az.plot_pair(idata, coords={"datum": [0]})
    assert ax is not None
    az.plot_kde(idata.posterior["z"].sel(datum=0, latent=0).values.ravel())
    with warnings.catch_warnings():
        # ArviZ 0.23 calls a helper that Matplotlib 3.11 deprecates (2-D KDE contours).
        warnings.filterwarnings(
            "ignore",
            message="Passing a dict or None as alias_mapping",
            category=MatplotlibDeprecationWarning,
        )
        az.plot_pair(idata, coords={"datum": [1]}, kind="kde")


def test_seeded_and_leaves_global_rng(small_vae, mnist):
    x = mnist.test.x[:4]
    state = torch.get_rng_state()
    a = to_inference_data(small_vae, x, num_draws=10, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = to_inference_data(small_vae, x, num_draws=10, seed=5)
    c = to_inference_data(small_vae, x, num_draws=10, seed=6)
    assert np.array_equal(a.posterior["z"].values, b.posterior["z"].values)
    assert not np.array_equal(a.posterior["z"].values, c.posterior["z"].values)


def test_batches_agree_with_one_pass(small_vae, mnist):
    x = mnist.test.x[:7]
    a = to_inference_data(small_vae, x, num_draws=5, batch_size=3)
    assert a.posterior["z"].shape == (1, 5, 7, 2)


def test_cvae_and_flow_guide(small_cvae, mnist):
    x, labels = mnist.test.x[:6], mnist.test.y[:6]
    idata = to_inference_data(small_cvae, x, labels=labels, y=one_hot(labels, 10), num_draws=8)
    assert idata.posterior["z"].shape == (1, 8, 6, 2)
    with pytest.raises(ValueError, match=r"a CVAE needs y: one-hot labels of shape \(6, 10\)"):
        to_inference_data(small_cvae, x)
    flow = build_model(guide="flow", z_dim=3, hidden_dims=[32]).eval()
    assert to_inference_data(flow, x, num_draws=4).posterior["z"].shape == (1, 4, 6, 3)


def test_input_checks(small_vae, mnist):
    x = mnist.test.x[:4]
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(N, 784\)"):
        to_inference_data(small_vae, x.reshape(4, 28, 28))
    with pytest.raises(ValueError, match="unconditional VAE; drop y"):
        to_inference_data(small_vae, x, y=one_hot(torch.zeros(4, dtype=torch.long), 10))
    with pytest.raises(ValueError, match=r"labels must be integer classes of shape \(4,\)"):
        to_inference_data(small_vae, x, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_draws must be a positive integer"):
        to_inference_data(small_vae, x, num_draws=0)
