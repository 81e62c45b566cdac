"""The training objectives: Pyro's ELBOs without host reads, their compiled forms, IWAE.

Pyro's ``Trace_ELBO.differentiable_loss`` reads values back to the host at every step:
``torch_item`` of each site's log density (the float part of its return value) and a NaN
check of the loss, forward and in a backward hook. On a GPU each read waits for the device
to finish all queued work, so the host can never run ahead of the kernels, and a step that
reads cannot be captured in a CUDA graph. :class:`Trace_ELBO` and
:class:`TraceMeanField_ELBO` here are Pyro's classes (``ELBO()(model, guide)`` still gives an
``ELBOModule``) whose ``differentiable_loss`` returns the same value and gradient with no
host read; the trainer checks the loss for NaN on the device and reads the flag every
:data:`~pyrovae.train.NONFINITE_CHECK_EVERY` steps.

Both require a reparameterized guide (every guide in this library is one): for such a guide
Pyro's surrogate loss is the loss itself, -E_q[log p(x, z) - log q(z | x)], estimated by the
drawn particles, with log p(z) - log q(z | x) replaced by -KL(q || p) where a closed form is
registered (mean field; Hoffman & Johnson 2016 discuss the variance this removes).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyro.infer
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO
from pyro.infer.util import check_fully_reparametrized, is_validation_enabled
from pyro.poutine import Trace
from torch.distributions import kl_divergence

from pyrovae.traces import IWAE

if TYPE_CHECKING:
    from pyrovae.trainer import TrainConfig

__all__ = ["IWAE", "Trace_ELBO", "TraceMeanField_ELBO", "make_objective"]


def _check_reparameterized(guide_trace: Trace) -> None:
    if is_validation_enabled():
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                check_fully_reparametrized(site)


class _DeviceLoss:
    """``differentiable_loss`` = -(mean over particles of ``_elbo(model_trace, guide_trace)``),
    a tensor on the model's device, computed without reading anything back to the host."""

    def _elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        raise NotImplementedError

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        elbo: torch.Tensor | float = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _check_reparameterized(guide_trace)
            elbo = elbo + self._elbo(model_trace, guide_trace) / self.num_particles
        return -torch.as_tensor(elbo)


class Trace_ELBO(_DeviceLoss, pyro.infer.Trace_ELBO):  # noqa: N801 (Pyro's name)
    """Pyro's ``Trace_ELBO`` for reparameterized guides, without host reads:
    log p(x, z) - log q(z | x) at the drawn z."""

    def _elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        return model_trace.log_prob_sum() - guide_trace.log_prob_sum()


class TraceMeanField_ELBO(_DeviceLoss, pyro.infer.TraceMeanField_ELBO):  # noqa: N801
    """Pyro's ``TraceMeanField_ELBO`` without host reads: log p(x | z) at the drawn z, minus
    KL(q || p) per latent site where a closed form is registered (else log q - log p at the
    drawn z), minus log q of auxiliary guide sites."""

    def _elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        elbo: torch.Tensor | float = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:
                elbo = elbo + site["log_prob_sum"] - guide_site["log_prob_sum"]
                continue
            kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl):
                elbo = elbo - kl.sum()
            else:  # the same number for every element
                elbo = elbo - kl * guide_site["fn"].batch_shape.numel()
        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - guide_site["log_prob_sum"]  # auxiliary sites
        return torch.as_tensor(elbo)


def _rng_states() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def quiet_jit_trace() -> Iterator[None]:
    """Silence torch's notice that ``torch.jit.trace`` is deprecated while Pyro's JIT ELBOs
    compile: they trace with it, and the user, who asked for ``--jit``, cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`torch.jit.trace` is deprecated", category=FutureWarning
        )
        yield


class _CompileWithoutDraws:
    """A JIT ELBO whose compiling call consumes the random numbers of one step, no more.

    Compiling runs model and guide three times (Pyro's parameter capture, torch.jit.trace,
    then the compiled graph), so the step that compiles draws three steps' worth of random
    numbers. A resumed run compiles again at its first step, which an uninterrupted run
    does not, and the two would part ways. Here the compiling call's loss is discarded, the
    RNG state restored and the step run again on the compiled graph: every step draws the
    same numbers whether or not it compiled, and resume is exact.
    """

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        ids = (id(model), id(guide))
        if getattr(self, "_warm_for", None) != ids:
            states = _rng_states()
            with quiet_jit_trace():
                super().differentiable_loss(model, guide, *args, **kwargs)  # compiles
            _set_rng_states(states)
            self._warm_for = ids
        return super().differentiable_loss(model, guide, *args, **kwargs)


class _JitTraceELBO(_CompileWithoutDraws, JitTrace_ELBO):
    """``JitTrace_ELBO`` whose compilation draws no extra random numbers."""


class _JitTraceMeanFieldELBO(JitTraceMeanField_ELBO):
    """``JitTraceMeanField_ELBO`` that compiles once.

    Pyro 1.9's ``differentiable_loss`` tests for ``_loss_and_surrogate_loss`` but stores
    its compiled closure as ``_differentiable_loss``, so it builds and traces a new closure
    at every step (about 4x slower than no JIT). Here the closure is reused for as long as
    the same model and guide are passed; the closure itself is Pyro's.
    """

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        ids = (id(model), id(guide))
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None or getattr(self, "_compiled_for", None) != ids:
            self._compiled_for = ids
            with quiet_jit_trace():
                return super().differentiable_loss(model, guide, *args, **kwargs)
        return compiled(*args, _pyro_model_id=ids[0], _pyro_guide_id=ids[1], **kwargs)


class _ExactJitTraceMeanFieldELBO(_CompileWithoutDraws, _JitTraceMeanFieldELBO):
    """:class:`_JitTraceMeanFieldELBO` whose compilation draws no extra random numbers."""


def make_objective(config: TrainConfig) -> Any:
    """The ELBO object that ``config`` names: this module's ``Trace_ELBO`` or
    ``TraceMeanField_ELBO``, their compiled forms (Pyro's JIT ELBOs, ``--jit``) or
    :class:`~pyrovae.traces.IWAE`."""
    k = config.num_particles
    if config.elbo == "iwae":
        return IWAE(k)
    cls = {
        ("trace", False): Trace_ELBO,  # this module's: no host reads
        ("meanfield", False): TraceMeanField_ELBO,
        ("trace", True): _JitTraceELBO,
        ("meanfield", True): _ExactJitTraceMeanFieldELBO,
    }[config.elbo, config.jit]
    kwargs: dict[str, Any] = {"num_particles": k, "vectorize_particles": k > 1}
    if k > 1 or config.jit:
        kwargs["max_plate_nesting"] = 1
    if config.jit:
        kwargs["ignore_jit_warnings"] = True
    return cls(**kwargs)
