"""The training objectives without host reads: the same loss and gradient as Pyro's ELBOs,
and training, AIS and the estimator's inner loops read nothing back per step."""

from __future__ import annotations

import math

import pyro
import pyro.infer
import pytest
import torch
from host_reads import HostReads

from pyrovae import ModelConfig, TrainConfig, build_model
from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods
from pyrovae.analysis.sources import fit_source
from pyrovae.objectives import Trace_ELBO, TraceMeanField_ELBO
from pyrovae.train import NONFINITE_CHECK_EVERY, Trainer, _LatentScale, one_hot

OURS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
PYROS = {"trace": pyro.infer.Trace_ELBO, "meanfield": pyro.infer.TraceMeanField_ELBO}
MODELS = {
    "diagonal": {},
    "flow guide": {"guide": "flow"},  # no closed-form KL: the mean field falls back
    "mog prior": {"prior": "mog"},
    "cvae": {"model": "cvae"},
}


def _loss_and_grads(objective, vae, args) -> tuple[torch.Tensor, list[torch.Tensor]]:
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(3)
    loss = objective.differentiable_loss(vae.model, vae.guide, *args)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in vae.parameters() if p.grad is not None]


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("elbo", list(OURS))
def test_same_loss_and_gradient_as_pyro(elbo, model, particles):
    vae = build_model(ModelConfig(z_dim=3, hidden_dims=[16], x_dim=20, **MODELS[model]))
    x = torch.bernoulli(torch.rand(12, 20, generator=torch.Generator().manual_seed(0)))
    args = (x,) if not vae.conditional else (x, one_hot(torch.arange(12) % 10, 10))
    kwargs = {"num_particles": particles, "vectorize_particles": particles > 1}
    if particles > 1:
        kwargs["max_plate_nesting"] = 1
    ours, theirs = OURS[elbo](**kwargs), PYROS[elbo](**kwargs)
    loss, grads = _loss_and_grads(ours, vae, args)
    loss_ref, grads_ref = _loss_and_grads(theirs, vae, args)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, loss_ref.to(loss.dtype), rtol=1e-6, atol=1e-4)
    assert len(grads) == len(grads_ref) > 0
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("elbo", list(OURS))
def test_latent_scale_reaches_the_kl(elbo):
    """A KL warm-up weight scales the latent terms as in Pyro (closed-form KL included)."""
    vae = build_model(ModelConfig(z_dim=3, hidden_dims=[16], x_dim=20))
    x = torch.bernoulli(torch.full((8, 20), 0.3))
    scale = _LatentScale(0.25)
    model, guide = scale(vae.model), scale(vae.guide)
    values = []
    for objective in (OURS[elbo](), PYROS[elbo]()):
        pyro.set_rng_seed(5)
        values.append(objective.differentiable_loss(model, guide, x).item())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    pyro.set_rng_seed(5)
    assert values[0] != pytest.approx(
        OURS[elbo]().differentiable_loss(vae.model, vae.guide, x).item()
    )


def test_non_reparameterized_guide_is_refused_under_validation():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Bernoulli(0.5))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Bernoulli(0.3))

    for cls in OURS.values():
        with pyro.validation_enabled(True), pytest.raises(NotImplementedError):
            cls().differentiable_loss(model, guide, torch.zeros(4))


@pytest.mark.parametrize("elbo", ["meanfield", "trace", "iwae"])
def test_a_training_epoch_reads_the_host_only_at_the_checks(mnist, tmp_path, elbo):
    """Per step nothing is read back: the non-finite flag every NONFINITE_CHECK_EVERY steps
    and at the end, the epoch's total once."""
    steps = 2 * NONFINITE_CHECK_EVERY + 10
    config = TrainConfig(
        epochs=2,
        subset=8 * steps,
        batch_size=8,
        device="cpu",
        elbo=elbo,
        num_particles=3 if elbo == "iwae" else 1,
    )
    model_config = ModelConfig(z_dim=2, hidden_dims=[16])
    trainer = Trainer(
        build_model(model_config), mnist, config, tmp_path, model_config, progress=False
    )
    trainer.run_epoch(1)  # the first step validates, which reads
    with HostReads() as reads:
        trainer.run_epoch(2)
    assert reads.count <= steps // NONFINITE_CHECK_EVERY + 2, reads.where()


def test_a_data_parallel_step_reads_nothing_back(mnist, tmp_path):
    """The data-parallel trainer selects its rows of each global batch without a host read
    (it worked them out with ``nonzero`` on the device at every step), here in a job of one
    process."""
    import torch.distributed as dist

    from pyrovae.distributed import DistributedContext, DistributedTrainer

    steps = NONFINITE_CHECK_EVERY + 10
    config = TrainConfig(epochs=2, subset=8 * steps, batch_size=8, device="cpu")
    model_config = ModelConfig(z_dim=2, hidden_dims=[16])
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        context = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))
        trainer = DistributedTrainer(
            build_model(model_config),
            mnist,
            config,
            tmp_path,
            model_config,
            progress=False,
            context=context,
        )
        trainer.run_epoch(1)
        with HostReads() as reads:
            trainer.run_epoch(2)
    finally:
        dist.destroy_process_group()
    # the epoch's rows found once (one nonzero on the CPU copy of its order), the flag at
    # step 50 and at the end, the epoch's total (reduced over the processes)
    assert reads.count <= steps // NONFINITE_CHECK_EVERY + 4, reads.where()


def _tiny_vae():
    vae = build_model(ModelConfig(z_dim=2, hidden_dims=[16], x_dim=20))
    x = torch.bernoulli(torch.rand(6, 20, generator=torch.Generator().manual_seed(1)))
    return vae, x


def test_ais_reads_do_not_grow_with_the_transitions():
    vae, x = _tiny_vae()
    counts = []
    for steps in (4, 12):
        with HostReads() as reads:
            ais_log_likelihood(vae, x, num_steps=steps, num_chains=2, seed=0, progress=False)
        counts.append(reads.count)
    assert counts[0] == counts[1], f"{counts}"


def test_estimator_reads_do_not_grow_with_the_chunks():
    """Scalar reads happen per batch of data (building its proposals, checking its
    weights), never per chunk of particles. (On the CPU each adapted proposal also finds
    the draws that chose it with ``nonzero`` per chunk; a GPU draws every pair instead:
    tested below.)"""
    vae, x = _tiny_vae()
    gmm = fit_source("gmm", vae, torch.bernoulli(torch.full((200, 20), 0.4)), num_components=3)
    counts = []
    # one datum per batch both times: one chunk of 40 particles each, then four of 10
    for draws_per_pass in (40, 10):
        with HostReads(sizes=False) as reads:
            estimate_source_log_likelihoods(
                vae,
                x,
                {"prior": None, "gmm": gmm},
                num_samples=40,
                seed=0,
                draws_per_pass=draws_per_pass,
                khat=False,
                progress=False,
            )
        counts.append(reads.count)
    assert counts[0] == counts[1], f"{counts}"


def test_mixture_draws_for_every_pair_are_the_picked_ones_without_a_read():
    """The GPU way of drawing from the defensive mixture (every pair from every proposal,
    kept with torch.where) gives the draws of the CPU way (only the pairs that chose each
    proposal) and reads nothing back."""
    from pyrovae.analysis.likelihood.datum_noise import DatumNoise
    from pyrovae.analysis.likelihood.loglik import _mixture_draws
    from pyrovae.analysis.likelihood.proposals import (
        adapted_proposal,
        guide_gaussian,
        likelihood_message,
        prior_gaussian,
        source_view,
    )

    vae, x = _tiny_vae()
    train_x = torch.bernoulli(torch.full((200, 20), 0.4))
    sources = {
        name: fit_source(name, vae, train_x, **options)
        for name, options in (("gmm", {"num_components": 3}), ("gaussian-full", {}))
    }
    message = likelihood_message(guide_gaussian(vae, x, None), prior_gaussian(vae, x, None))
    proposals = {
        name: adapted_proposal(message, source_view(source, seed=0), 8)
        for name, source in sources.items()
    }
    out = []
    for every_pair in (False, True):
        noise = DatumNoise(3, torch.arange(x.shape[0]), total=30)
        # as the estimator calls it after its first chunk: distribution checks off
        with pyro.validation_enabled(False), HostReads() as reads:
            terms, log_g, from_guide = _mixture_draws(
                vae, x, None, 30, proposals, math.log(0.2), math.log(0.4), noise, every_pair
            )
        out.append((terms.latents["z"], log_g, from_guide, reads.count))
    (z_a, g_a, f_a, reads_a), (z_b, g_b, f_b, reads_b) = out
    assert torch.equal(f_a, f_b) and 0 < int(f_a.sum()) < f_a.numel()
    torch.testing.assert_close(z_a, z_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_a, g_b, rtol=0, atol=1e-5)
    assert reads_b == 0 < reads_a, (reads_a, reads_b)  # the CPU way finds its pairs
