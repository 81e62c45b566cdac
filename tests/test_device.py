"""The main paths on one device, end to end: ``PYROVAE_TEST_DEVICE=cuda pytest
tests/test_device.py`` runs them on a GPU (skipped where there is none); by default on CPU.

Training, loading, fitting and sampling sources, importance-sampled and AIS
log-likelihoods and NUTS must keep every tensor on the device, and the model's densities
must agree with the same model on the CPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pyrovae import ModelConfig, TrainConfig, build_model, load_run, train_model
from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods
from pyrovae.analysis.posterior.nuts import reference_posterior
from pyrovae.analysis.sources import fit_sources
from pyrovae.data import fixed_binarization
from pyrovae.train import NONFINITE_CHECK_EVERY, Trainer, elbo_per_datum, one_hot


@pytest.fixture(params=["vae", "cvae"])
def trained(request, mnist, device, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"{request.param}-{device.type}")
    train_model(
        ModelConfig(model=request.param, z_dim=2, hidden_dims=[64]),
        TrainConfig(epochs=1, subset=1000, device=str(device), seed=0),
        mnist,
        out,
        progress=False,
    )
    vae = load_run(out, device=device)
    test = mnist.test.subset(16).to(device)
    x = fixed_binarization(test.x)
    y = one_hot(test.y, vae.y_dim) if vae.conditional else None
    return vae, x, y, mnist.train.subset(1000).to(device)


def _on(device: torch.device, tensor: torch.Tensor) -> bool:
    return tensor.device.type == device.type


def test_trained_weights_live_on_the_device(trained, device):
    vae, x, y, _ = trained
    assert all(_on(device, p) for p in vae.parameters())
    elbo = elbo_per_datum(vae, x, y)
    assert _on(device, elbo) and torch.isfinite(elbo).all()


def test_densities_agree_with_the_cpu(trained):
    vae, x, y, _ = trained
    z = torch.linspace(-2, 2, 2 * x.shape[0], device=x.device).reshape(x.shape[0], 2)
    here = vae.decoder(z, y).log_prob(x).sum(-1)
    cpu = vae.to("cpu")
    try:
        there = cpu.decoder(z.cpu(), None if y is None else y.cpu()).log_prob(x.cpu()).sum(-1)
    finally:
        vae.to(x.device)
    torch.testing.assert_close(here.cpu(), there, rtol=1e-5, atol=1e-3)


def test_sources_estimators_and_nuts_on_the_device(trained, device):
    vae, x, y, train_split = trained
    train_x = fixed_binarization(train_split.x)
    train_y = one_hot(train_split.y, vae.y_dim) if vae.conditional else None
    sources = fit_sources(["aggregate", "gmm"], vae, train_x, train_y, progress=False)
    for source in sources.values():
        draws = (
            source.sample(8, y[:8]) if getattr(source, "conditional", False) else (source.sample(8))
        )
        assert _on(device, draws) and torch.isfinite(draws).all()
    result = estimate_source_log_likelihoods(
        vae, x, {"prior": None, **sources}, y, num_samples=50, seed=0, khat=False
    )
    elbo = elbo_per_datum(vae, x, y).mean().item()
    for name, estimate in result.items():
        assert torch.isfinite(estimate.per_datum).all(), name
    assert result["prior"].mean > elbo - 5.0  # a bound above the ELBO, up to its noise
    ais = ais_log_likelihood(
        vae, x[:4], None if y is None else y[:4], num_steps=5, num_chains=2, seed=0, progress=False
    )
    assert torch.isfinite(ais.per_datum).all()
    ref = reference_posterior(
        vae, x[0], None if y is None else y[0], num_chains=2, warmup=10, num_samples=10, seed=0
    )
    assert torch.isfinite(ref.draws).all()


def test_training_steps_make_the_gpu_wait_only_at_the_checks(mnist, device, tmp_path):
    """On CUDA, a training epoch synchronizes only where it reads on purpose (the non-finite
    flag every NONFINITE_CHECK_EVERY steps, the epoch's total); the CPU counterpart, which
    counts the reads themselves, is in test_objectives."""
    if device.type != "cuda":
        pytest.skip("synchronizations are a CUDA notion; tests/test_objectives.py counts reads")
    steps = 2 * NONFINITE_CHECK_EVERY + 10
    config = TrainConfig(epochs=2, subset=8 * steps, batch_size=8, device=str(device))
    model_config = ModelConfig(z_dim=2, hidden_dims=[16])
    trainer = Trainer(
        build_model(model_config), mnist, config, tmp_path, model_config, progress=False
    )
    trainer.run_epoch(1)
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run_epoch(2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= steps // NONFINITE_CHECK_EVERY + 3, "\n".join(
        f"{w.filename}:{w.lineno} {w.message}" for w in syncs
    )
