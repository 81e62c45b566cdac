"""A Pyro model/guide pair the user wrote, as the VAE every pyrovae analysis takes.

:func:`from_pyro` reads a pair written the way Pyro's VAE tutorial writes one: ``model(x)``
and ``guide(x)`` (``model(x, y)``, ``guide(x, y)`` for a CVAE, with one-hot labels y), one
latent sample site holding a vector per datum and one observed site, both inside a plate
over the rows of x. Nothing is re-implemented: the prior p(z), the likelihood p(x | z) and
the amortized guide q(z | x) are the distributions of those sites, read by tracing
(``poutine.trace``, ``poutine.condition``), and the returned
:class:`~pyrovae.models.VAE` runs the user's own functions as its ``model`` and ``guide``
with the sites renamed to pyrovae's ``"z"`` and ``"x"`` and the plate to ``"data"``. So
importance sampling, AIS and BDMC, the latent sources, ELBO surgery and the posterior
diagnostics, which all score traces of ``vae.model`` and ``vae.guide``, score the user's
pair.

The pair is checked once, on an example batch, and refused with one line naming the site
and what is wrong: no plate over the data, a latent site whose value is not one vector per
datum, several latent sites (stack them into one vector site, or name the one to study
with ``latent=``), a guide that is not amortized (its q(z | x_n) does not follow x_n when
the rows are permuted: an autoguide with one parameter per datum cannot give q(z | x) for
held-out data), a guide site without a reparameterized sample, a model that fails when z
has a leading dim of particles (K, B, z_dim), as the estimators draw it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.plate_messenger import PlateMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pyrovae.models import CVAE, VAE
from pyrovae.pyro_sites import (
    PairHolder,
    PyroDecoder,
    PyroEncoder,
    PyroPrior,
    hidden_trace,
    rng_kept,
)
from pyrovae.traces import PARTICLE_PLATE

__all__ = ["PyroPairError", "from_pyro"]

LATENT, OBSERVED, DATA_PLATE = "z", "x", "data"


class PyroPairError(ValueError):
    """The model/guide pair cannot be read as a VAE (one line: the site and the fix)."""


class _Rename(Messenger):
    """Rename the user's latent and observed sites to ``"z"`` and ``"x"`` and their data
    plate to ``"data"``, as the messages pass (innermost, so outer handlers see pyrovae's
    names)."""

    def __init__(self, sites: dict[str, str], plate: str) -> None:
        super().__init__()
        self.sites = sites
        self.plate = plate

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample":
            return
        msg["name"] = self.sites.get(msg["name"], msg["name"])
        if self.plate != DATA_PLATE:
            msg["cond_indep_stack"] = tuple(
                frame._replace(name=DATA_PLATE) if frame.name == self.plate else frame
                for frame in msg["cond_indep_stack"]
            )


class _ServeParams(Messenger):
    """Answer ``pyro.param`` statements without Pyro's param store: a ``pyro.module``
    parameter is the module's own tensor (its init argument), any other the value it had
    when the pair was read (:func:`from_pyro`), held by the VAE (so that it moves with
    ``.to(device)``). Inference that must not see or update the weights (NUTS, the
    per-datum guides q*, which run inside Pyro's module-local parameter scopes) then runs
    the user's model and guide unchanged."""

    def __init__(self, holder: PairHolder) -> None:
        super().__init__()
        self.holder = holder

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "param":
            return
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        if isinstance(init, nn.Parameter):
            msg["value"] = init
        elif msg["name"] in self.holder.param_names:
            msg["value"] = self.holder.param(msg["name"])
        else:
            return
        msg["done"] = True


class _PairMixin:
    """``model`` and ``guide`` are the user's, with the sites renamed to pyrovae's."""

    def _bind(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        rename: _Rename,
        holder: PairHolder,
    ) -> None:
        self._user_model = rename(model)
        self._user_guide = rename(guide)
        self._holder = holder

    def _run(
        self,
        fn: Callable[..., Any],
        x: torch.Tensor,
        y: torch.Tensor | None,
        labels_follow_z: bool = False,
    ) -> None:
        self._check_inputs(x, y)  # type: ignore[attr-defined]
        if y is not None and labels_follow_z:
            y = _broadcast_labels(y)
        if not self.register_params:  # type: ignore[attr-defined]
            # the weights frozen (NUTS, the q* fits): the user's pyro.module / pyro.param
            # statements are answered without Pyro's param store, as pyrovae's own model
            # skips its pyro.module call
            fn = _ServeParams(self._holder)(fn)
        fn(*((x,) if y is None else (x, y)))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self._run(self._user_model, x, y, labels_follow_z=self.decoder.labels_follow_z)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self._run(self._user_guide, x, y)


def _broadcast_labels(y: torch.Tensor) -> torch.Tensor:
    """The labels y (B, K) expanded over the vectorized plates outside the data plate (the
    K importance samples of an estimator, at dim -2 and beyond), so that a CVAE written for
    one z per datum, ``torch.cat([z, y], -1)``, also runs on a (particles, B, z_dim) z."""
    sizes: dict[int, int] = {}
    for frame in _PYRO_STACK:
        dim, size = getattr(frame, "dim", None), getattr(frame, "size", None)
        if isinstance(frame, PlateMessenger) and dim is not None and dim < -1 and size:
            sizes[dim] = int(size)
    if not sizes:
        return y
    depth = -min(sizes)
    shape = [sizes.get(-depth + i, 1) for i in range(depth - 1)]
    return y.reshape((1,) * (depth - 1) + tuple(y.shape)).expand(*shape, *y.shape)


class PyroVAE(_PairMixin, VAE):
    """A VAE read from a user's Pyro model/guide pair (see :func:`from_pyro`)."""


class PyroCVAE(_PairMixin, CVAE):
    """A CVAE read from a user's Pyro model/guide pair (see :func:`from_pyro`)."""


def _sample_sites(trace: poutine.Trace) -> dict[str, dict[str, Any]]:
    """The trace's sample sites, without the plates' subsample sites."""
    trace = prune_subsample_sites(trace)
    return {name: site for name, site in trace.nodes.items() if site["type"] == "sample"}


def _data_plate(site: dict[str, Any], rows: int) -> str:
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.size == rows]
    if not frames:
        raise PyroPairError(
            f"site {site['name']!r} is not inside a plate over the {rows} rows of the data; "
            f'wrap its sample statement in `with pyro.plate("data", x.shape[0]):`'
        )
    return frames[0].name


def _pick(kind: str, names: list[str], given: str | None, where: str) -> str:
    if given is not None:
        if given not in names:
            raise PyroPairError(
                f"{kind}={given!r} is not a {kind} sample site of the {where}; its {kind} "
                f"sites are {names}"
            )
        return given
    if len(names) != 1:
        what = "none" if not names else f"several: {names}"
        fix = (
            "stack the latents into one vector site (e.g. torch.cat and .to_event(1)) or "
            f"name the one to study with {kind}=NAME"
            if names
            else f"the model needs one {kind} sample site"
        )
        raise PyroPairError(f"from_pyro reads one {kind} site of the {where}, found {what}; {fix}")
    return names[0]


def from_pyro(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    latent: str | None = None,
    observed: str | None = None,
    modules: Sequence[nn.Module] | None = None,
) -> VAE:
    """The user's Pyro model/guide pair as a pyrovae VAE (a CVAE when ``y`` is given).

    Args:
        model, guide: ``model(x)`` / ``guide(x)`` (``(x, y)`` for a CVAE): one latent site
            of a vector per datum and one observed site ``obs=x``, inside a plate over the
            rows of x (the pair Pyro's VAE tutorial writes).
        x: an example batch of data, shape (B, D) with B >= 2, on which the pair is
            checked (e.g. the first rows of the training data, as the model sees them).
        y: one-hot labels (B, K) of ``x`` for a CVAE (the pair then takes ``(x, y)``).
        latent, observed: the sites' names, when the trace holds several of a kind.
        modules: the ``nn.Module``\\ s holding the pair's parameters (default: the module
            whose methods ``model`` and ``guide`` are, if any), so that moving, freezing
            and saving the returned VAE reaches them.

    Returns:
        A :class:`~pyrovae.models.VAE` (:class:`~pyrovae.models.CVAE` with ``y``) whose
        ``model``/``guide`` are the user's with pyrovae's site names, and whose ``prior``,
        ``decoder`` and ``encoder`` read the sites' distributions by tracing.

    Raises:
        PyroPairError: one line naming the site and what to change (see the module).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise PyroPairError(
            f"x must be an example batch of shape (B, D) with B >= 2 rows, got {shape}; "
            "flatten images with x.reshape(len(x), -1)"
        )
    args = (x,) if y is None else (x, y)
    rows = x.shape[0]
    try:
        guide_trace = hidden_trace(guide, *args)
        model_trace = hidden_trace(poutine.replay(model, trace=guide_trace), *args)
    except Exception as err:  # the user's code: say what it raised, on one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise PyroPairError(
            f"the model/guide pair failed on the example batch of shape {tuple(x.shape)}: "
            f"{type(err).__name__}: {first}"
        ) from None
    model_sites = _sample_sites(model_trace)
    observed_names = [n for n, s in model_sites.items() if s["is_observed"]]
    latent_names = [n for n, s in model_sites.items() if not s["is_observed"]]
    observed = _pick("observed", observed_names, observed, "model")
    latent = _pick("latent", latent_names, latent, "model")
    if latent not in guide_trace.nodes:
        raise PyroPairError(
            f"the guide has no sample site {latent!r}; it must sample the model's latent site"
        )
    others = [n for n in latent_names if n != latent]
    if others:
        raise PyroPairError(
            f"the model has latent sites {others} besides {latent!r}; from_pyro reads one "
            "latent site: stack them into one vector site"
        )
    plate = _data_plate(model_sites[latent], rows)
    if _data_plate(model_sites[observed], rows) != plate:
        raise PyroPairError(
            f"sites {latent!r} and {observed!r} are in different plates; put both in one "
            "plate over the data"
        )
    q = guide_trace.nodes[latent]["fn"]
    prior = model_sites[latent]["fn"]
    for name, d in (("guide", q), ("model", prior)):
        if len(d.event_shape) != 1 or tuple(d.batch_shape) != (rows,):
            raise PyroPairError(
                f"the {name}'s site {latent!r} has batch shape {tuple(d.batch_shape)} and event "
                f"shape {tuple(d.event_shape)}; from_pyro needs one vector per datum, batch "
                f"({rows},) and event (z_dim,): use .to_event(1) on its distribution"
            )
    if not q.has_rsample:
        raise PyroPairError(
            f"the guide's site {latent!r} ({type(q).__name__}) has no reparameterized sample "
            "(rsample), which the gaps and fitted sources need; use a reparameterizable "
            "distribution"
        )
    obs = model_sites[observed]["fn"]
    if tuple(obs.batch_shape) != (rows,) or tuple(obs.event_shape) != (x.shape[1],):
        raise PyroPairError(
            f"the model's site {observed!r} has batch shape {tuple(obs.batch_shape)} and event "
            f"shape {tuple(obs.event_shape)}; it must observe the rows of x: batch ({rows},), "
            f"event ({x.shape[1]},) (use .to_event(1))"
        )
    _check_amortized(guide, latent, x, y, q)
    if modules is None:
        owners = {getattr(fn, "__self__", None) for fn in (model, guide)}
        modules = [m for m in owners if isinstance(m, nn.Module)]
    params = {  # the pyro.param sites that are not a module's own parameters
        name: site["value"]
        for trace in (guide_trace, model_trace)
        for name, site in trace.nodes.items()
        if site["type"] == "param" and not isinstance(_param_init(site), nn.Parameter)
    }
    holder = PairHolder(modules, params).to(x.device)
    z_dim, x_dim = q.event_shape[0], x.shape[1]
    y_dim = 0 if y is None else y.shape[-1]
    base = obs.base_dist if isinstance(obs, dist.Independent) else obs
    binarize = isinstance(base, dist.Bernoulli)
    encoder = PyroEncoder(guide, latent, x_dim, z_dim, y_dim, holder)
    follow = _labels_follow_z(model, x, y)
    decoder = PyroDecoder(model, latent, observed, x_dim, z_dim, y_dim, binarize, holder, follow)
    p_z = PyroPrior(model, latent, x_dim, z_dim, y_dim, holder, _depends_on_rows(prior, x.device))
    cls = PyroVAE if y is None else PyroCVAE
    vae = cls(encoder, decoder, p_z)
    names = {latent: LATENT, observed: OBSERVED}
    if plate != DATA_PLATE:  # the plate's own subsample site too, so traces name it "data"
        names[plate] = DATA_PLATE
    vae._bind(model, guide, _Rename(names, plate), holder)
    vae.pair = {
        "model": _qualified_name(model),
        "guide": _qualified_name(guide),
        "latent_site": latent,
        "observed_site": observed,
        "prior": _family(prior),
        "guide_family": _family(q),
        "likelihood": _family(obs),
        "z_dim": int(z_dim),
        "x_dim": int(x_dim),
        "y_dim": int(y_dim),
    }
    return vae


def _labels_follow_z(model: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None) -> bool:
    """Whether the model, run inside a vectorized plate of particles (as the estimators run
    it, z then (K, B, z_dim)), needs its labels expanded to (K, B, y_dim): False when it
    runs as given (a VAE, or a CVAE that broadcasts), True when it runs only with them
    expanded (``torch.cat([z, y], -1)``). A model that runs neither way is refused."""

    def run(expand: bool) -> None:
        def particles() -> None:
            with pyro.plate(PARTICLE_PLATE, 2, dim=-2):
                labels = _broadcast_labels(y) if expand and y is not None else y
                model(*((x,) if labels is None else (x, labels)))

        with rng_kept(x.device):  # the prior's draws leave a GPU's generator alone too
            hidden_trace(particles)

    try:
        run(False)
        return False
    except Exception as err:
        error = err
    if y is not None:
        try:
            run(True)
            return True
        except Exception:
            pass
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    raise PyroPairError(
        "the model fails when z has a leading dim of particles, shape (K, B, z_dim), as the "
        f"estimators draw it ({type(error).__name__}: {first}); let it broadcast over z's "
        "leading dims (e.g. z.shape[-1], not z.shape[1])"
    )


def _depends_on_rows(prior: dist.Distribution, device: torch.device) -> bool:
    """True when the prior read on the example batch differs between rows: a prior p(z | y)
    that depends on the labels (p(z) is the same for every datum)."""
    with torch.no_grad(), rng_kept(device):
        z = prior.sample()[:1].expand(prior.batch_shape[0], -1)
        log_p = prior.log_prob(z)
    return not torch.allclose(log_p, log_p[:1].expand_as(log_p), rtol=1e-5, atol=1e-5)


def _param_init(site: dict[str, Any]) -> Any:
    args = site.get("args") or ()
    return args[1] if len(args) > 1 else None


def _qualified_name(fn: Callable[..., Any]) -> str:
    """``Class.method`` or ``function``, as the user wrote it."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


def _family(d: dist.Distribution) -> str:
    """The distribution's family in words: ``Normal (diagonal)``, ``MultivariateNormal``,
    ``Bernoulli``, ``TransformedDistribution``; an ``Independent`` is seen through."""
    base = d.base_dist if isinstance(d, dist.Independent) else d
    name = type(base).__name__
    return f"{name} (diagonal)" if name == "Normal" and isinstance(d, dist.Independent) else name


def _check_amortized(
    guide: Callable[..., Any],
    latent: str,
    x: torch.Tensor,
    y: torch.Tensor | None,
    q: dist.Distribution,
) -> None:
    """q(z | x_n) must follow x_n: the guide runs on fewer rows, and with the rows reversed
    the density of each row's draw is the same (an autoguide's per-datum parameters would
    stay in place, or not fit another number of rows)."""
    order = torch.arange(x.shape[0] - 1, -1, -1, device=x.device)
    args = (x[order],) if y is None else (x[order], y[order])
    fewer = (x[:-1],) if y is None else (x[:-1], y[:-1])
    try:
        hidden_trace(guide, *fewer)
        reversed_q = hidden_trace(guide, *args).nodes[latent]["fn"]
    except Exception as err:  # a guide bound to its training rows
        raise PyroPairError(
            f"the guide is not amortized: it cannot run on other rows ({type(err).__name__}); "
            "from_pyro needs a guide q(z | x) of any rows, e.g. an encoder network"
        ) from None
    with torch.no_grad(), rng_kept(x.device):
        z = q.sample()
        same = torch.allclose(
            reversed_q.log_prob(z[order]), q.log_prob(z)[order], rtol=1e-4, atol=1e-4
        )
    if not same:
        raise PyroPairError(
            f"the guide's q(z | x) at site {latent!r} does not follow the data when its rows "
            "are permuted: it is not amortized (an autoguide with one parameter per datum "
            "cannot give q(z | x) for held-out data); write a guide with an encoder network"
        )
