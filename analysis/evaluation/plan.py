"""The plan of :func:`~pyrovae.analysis.evaluation.evaluate.evaluate_run`, timed before it starts.

Each step's time is its work times a rate measured here, in a few seconds, on the real
model and data (:func:`~pyrovae.analysis.cost.measure_rate`):

- fits: the flow's Adam steps (a few real steps of :func:`fit_flow` on encodings of
  training images), EM of the mixture on up to 2,000 of them (scaled by N), the encoder
  on the N training images;
- log p(x): the real importance sampler (K draws per image, the adapted proposal) timed
  on one image and on one pass of its own size (draws_per_pass // K held-out images, at
  most 16), after a warm-up: a fixed cost per call (building each image's proposals from
  the sources) and a cost per image, with the real aggregate of the N encodings and stand-ins
  of the other sources (a density's cost does not depend on its fitted values), scaled to
  num_test; the same for the prior on its own draws;
- sample quality, ELBO surgery (num_marginal draws at the encodings scored by the
  aggregate, timed on a call of 1,024) and AIS (T x C x
  (L + 1) gradient passes per image and source, twice that with BDMC).

The estimate is for the machine as loaded now; the progress lines correct it as the work
runs. ``benchmarks/evaluate_cost.py`` compares it with the time taken.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyrovae.analysis.cost import Step, announce, measure_rate
from pyrovae.analysis.evaluation.compare import KSWEEP
from pyrovae.analysis.likelihood.loglik import (
    default_draws_per_pass,
    estimate_source_log_likelihoods,
)
from pyrovae.analysis.quality.memorization import nearest_distances
from pyrovae.analysis.sources.classes import FlowSource, GaussianSource, MixtureSource
from pyrovae.analysis.sources.encodings import Encodings, model_inputs
from pyrovae.analysis.sources.fits import fit_flow, fit_gaussian_mixture, fit_sources
from pyrovae.data import Splits

__all__ = ["BOUNDS", "announce_evaluation", "evaluation_steps"]

#: The flags (and Python arguments) that bound an evaluation's work.
BOUNDS = (
    "--num-test, --num-train, --sources and --num-samples bound it (Python: num_test, "
    "num_train, sources, num_samples); --full evaluates every held-out image against every "
    "training encoding"
)

#: Draws of the marginal KL in ELBO surgery (``elbo_surgery(num_marginal=...)``).
SURGERY_DRAWS = 10_000
#: Held-out images of the timed pilot pass at most (a pass holds draws_per_pass // K).
MAX_PILOT_IMAGES = 16
#: Draws at training encodings on which the surgery's aggregate is timed.
SURGERY_PILOT = 1024


def _per_call(run: Callable[[], Any], min_seconds: float = 0.3) -> float:
    """Seconds per call of ``run`` (after a warm-up call)."""
    return 1.0 / measure_rate(lambda: (run(), 1.0)[1], min_seconds=min_seconds)


def _call_and_image(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    sources: dict[str, Any],
    k: int,
    proposal: str,
) -> tuple[float, float]:
    """Seconds of a call of the importance sampler (its views of the sources, once per
    call) and seconds per image: a warm-up on one image, then one image, then all of
    ``x`` (one pass), so that per image = (t_all - t_one) / (n - 1)."""
    first = None if y is None else y[:1]
    _pilot_seconds(vae, x[:1], first, sources, k, proposal)
    one = _pilot_seconds(vae, x[:1], first, sources, k, proposal)
    if x.shape[0] == 1:
        return 0.0, one
    per_image = max(_pilot_seconds(vae, x, y, sources, k, proposal) - one, 0.0)
    per_image /= x.shape[0] - 1
    return max(one - per_image, 0.0), per_image


def _pilot_seconds(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    sources: dict[str, Any],
    k: int,
    proposal: str,
) -> float:
    """Seconds of one run of the importance sampler on ``x`` (its estimates are dropped)."""
    start = time.perf_counter()
    estimate_source_log_likelihoods(
        vae,
        x,
        sources,
        y,
        num_samples=k,
        proposal=proposal,
        iwae_particles=[j for j in KSWEEP if j < k],
        seed=0,
        progress=False,
    )
    return time.perf_counter() - start


def _standin(name: str, z_dim: int, options: Mapping[str, Any]) -> nn.Module | None:
    """A source of ``name``'s shape (its density costs what the fitted one's will)."""
    zeros, ones = torch.zeros(z_dim), torch.ones(z_dim)
    if name in ("gaussian-loc", "gaussian-z"):
        return GaussianSource(zeros, scale=ones)
    if name == "gaussian-full":
        return GaussianSource(zeros, scale_tril=torch.eye(z_dim))
    if name == "gmm":
        c = int(options.get("num_components", 10))
        return MixtureSource(
            torch.zeros(c), torch.randn(c, z_dim), torch.eye(z_dim).expand(c, -1, -1)
        )
    if name == "flow":
        return FlowSource(zeros, ones, num_flows=int(options.get("num_flows", 6)))
    return None


def evaluation_steps(
    vae: nn.Module,
    data: Splits,
    *,
    sources: Sequence[str],
    num_samples: int,
    split: str = "test",
    num_test: int | None = None,
    num_train: int | None = None,
    quality: bool = True,
    num_quality_samples: int = 1000,
    surgery: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    proposal: str = "adapted",
    ais: Any = None,
    seed: int = 0,
) -> list[Step]:
    """The steps of ``evaluate_run`` with these arguments and their estimated seconds
    (see the module docstring); leaves the global RNG as it was."""
    options = options or {}
    held_out = getattr(data, split)
    n_test = min(num_test, len(held_out)) if num_test else len(held_out)
    n_train = min(num_train, len(data.train)) if num_train else len(data.train)
    names = list(dict.fromkeys(["prior", *sources]))
    device = next(vae.parameters()).device
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return _steps(
            vae, data, held_out, names, device, n_test, n_train, num_samples, quality,
            num_quality_samples, surgery, options, proposal, ais,
        )  # fmt: skip
    finally:
        torch.random.set_rng_state(state)


def _steps(
    vae: nn.Module,
    data: Splits,
    held_out: Any,
    names: list[str],
    device: torch.device,
    n_test: int,
    n_train: int,
    k: int,
    quality: bool,
    num_quality: int,
    surgery: bool,
    options: Mapping[str, Mapping[str, Any]],
    proposal: str,
    ais: Any,
) -> list[Step]:
    steps: list[Step] = []
    z_dim = vae.z_dim
    # one full pass of the estimator (draws_per_pass // K images), as the real run makes
    pilot_images = max(1, min(n_test, default_draws_per_pass(device) // k, MAX_PILOT_IMAGES))
    x_test, y_test = model_inputs(vae, held_out, pilot_images, random_subset=True)
    train = data.train
    with torch.no_grad():
        # the encoder over the N training images, as every fit starts with it
        pilot_n = min(n_train, 2000)
        x_pilot, y_pilot = model_inputs(vae, train, pilot_n, random_subset=False)
        encode = _per_call(lambda: Encodings(vae, x_pilot, y_pilot)) * n_train / pilot_n
        enc = Encodings(vae, x_pilot, y_pilot)
        draws = enc.sample(1, seed=0)
    fits = encode
    fitted = [n for n in names if n not in ("prior",)]
    if "flow" in fitted:
        steps_flow = int(options.get("flow", {}).get("num_steps", 400))
        # per Adam step: the difference of 12 and 2 steps (building the flow is not a step)
        long = _per_call(lambda: fit_flow(draws, num_steps=12), min_seconds=0.5)
        short = _per_call(lambda: fit_flow(draws, num_steps=2), min_seconds=0.2)
        fits += short + max(long - short, 0.0) * steps_flow / 10
    if "gmm" in fitted:
        t = _per_call(lambda: fit_gaussian_mixture(draws), min_seconds=0.3)
        fits += t * n_train / pilot_n
    if fitted:
        steps.append(Step(f"fit {len(fitted)} sources to {n_train} training encodings", fits))
    # log p(x): the real estimator on a few held-out images, with the real aggregate and
    # stand-ins of the other sources (a density costs what the fitted one's will)
    with torch.no_grad():
        per_pass = min(default_draws_per_pass(device), 4096)
        z = torch.randn(per_pass, z_dim, device=device)
        x_rep = x_test[:1].expand(per_pass, -1)
        y_rep = None if y_test is None else y_test[:1].expand(per_pass, -1)
        decoder = _per_call(lambda: vae.decoder(z, y_rep).log_prob(x_rep)) / per_pass
        pilot: dict[str, Any] = {"prior": None}
        agg = None
        for name in names[1:]:
            if name == "aggregate":
                x_all, y_all = model_inputs(vae, train, n_train, random_subset=False)
                agg_opts = dict(options.get("aggregate", {}))
                with contextlib.redirect_stderr(io.StringIO()):  # the fit itself will say it
                    agg = fit_sources(
                        ["aggregate"], vae, x_all, y_all, options={"aggregate": agg_opts},
                        progress=False,
                    )["aggregate"]  # fmt: skip
                agg.log_prob(torch.zeros(4, z_dim, device=device))  # builds its tables
                pilot[name] = agg
            else:
                source = _standin(name, z_dim, options.get(name, {}))
                if source is not None:
                    pilot[name] = source.to(device)
        is_fixed, is_image = _call_and_image(vae, x_test, y_test, pilot, k, proposal)
        prior_fixed, prior_image = _call_and_image(vae, x_test, y_test, {"prior": None}, k, "guide")
    steps.append(
        Step(
            f"log p(x) of {n_test} images, K={k}, {len(names)} sources",
            is_fixed + n_test * is_image,
            n_test * k,
            "draws",
        )
    )
    if proposal == "adapted" and len(names) > 1:  # the prior again, on its own draws
        seconds = prior_fixed + n_test * prior_image
        steps.append(Step("log p(x) of the prior on its own draws", seconds))
    if quality:
        # per sample: decoding, the classifier (about a decoder pass) and the distance to
        # the nearest training image (timed on 200 images against the N real ones)
        images = train.x[:200].reshape(200, -1).float()
        reference = train.x[:n_train].reshape(n_train, -1).float()
        nearest = _per_call(lambda: nearest_distances(images, reference), min_seconds=0.1)
        per_sample = 2 * decoder + nearest / images.shape[0]
        steps.append(
            Step(
                f"sample quality of {len(names)} sources ({num_quality} samples each)",
                len(names) * num_quality * per_sample,
            )
        )
    if surgery:
        # num_marginal draws scored by the aggregate of all N encodings (pruned: draws at
        # the encodings are cheaper than held-out draws), then the same on a tenth of them
        draws_here = min(SURGERY_DRAWS, n_train) * 1.01
        if agg is None:
            x_all, y_all = model_inputs(vae, train, n_train, random_subset=False)
            agg = fit_sources(["aggregate"], vae, x_all, y_all, progress=False)["aggregate"]
        with torch.no_grad():  # draws at training encodings, a call of the surgery's size
            at = Encodings(vae, x_pilot[:SURGERY_PILOT], None if y_pilot is None else
                           y_pilot[:SURGERY_PILOT]).sample(1, seed=0)  # fmt: skip
            aggregate = _per_call(lambda: agg.log_prob(at), min_seconds=0.0) / at.shape[0]
        steps.append(Step(f"ELBO surgery on {n_train} training images", draws_here * aggregate))
    if ais is not None:
        ais_names = list(ais.sources) if ais.sources else names
        grads = ais.num_test * ais.chains * ais.steps * (ais.leapfrog_steps + 1)
        if getattr(vae, "semi_supervised", False):  # M2: AIS runs once per label
            grads *= vae.y_dim
        if ais.bdmc_num_data:
            grads += 2 * ais.bdmc_num_data * ais.chains * ais.steps * (ais.leapfrog_steps + 1)
        steps.append(
            Step(
                f"AIS of {len(ais_names)} sources on {ais.num_test} images",
                len(ais_names) * grads * decoder * 3,  # a gradient: about 3 passes
                len(ais_names) * grads,
                "gradients",
            )
        )
    return steps


def announce_evaluation(vae: nn.Module, data: Splits, **kwargs: Any) -> float:
    """Measure the rates, write the plan of an evaluation on stderr, return its seconds
    (``kwargs``: those of :func:`evaluation_steps`)."""
    start = time.perf_counter()
    steps = evaluation_steps(vae, data, **kwargs)
    title = f"evaluate (rates measured in {time.perf_counter() - start:.0f} s)"
    return announce(title, steps, BOUNDS)
