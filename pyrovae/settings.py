"""Names and budgets as plain data, importable without torch (the command line parses with them).

The registries themselves (``pyrovae.models.PRIORS``, ``pyrovae.analysis.sources.SOURCES``,
...) hold classes and functions; the tuples here are their keys, kept equal to them by the
tests, so that ``pyrovae --help`` and argument errors need no heavy import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

__all__ = [
    "DATASET_NAMES",
    "MODEL_NAMES",
    "TRAIN_MODEL_NAMES",
    "PRIOR_NAMES",
    "GUIDE_NAMES",
    "LIKELIHOOD_NAMES",
    "ELBO_NAMES",
    "ACTIVATION_NAMES",
    "NET_NAMES",
    "LR_SCHEDULE_NAMES",
    "SOURCE_NAMES",
    "SPLIT_NAMES",
    "PROPOSAL_NAMES",
    "CHECKPOINT_NAMES",
    "AGGREGATE_COMPONENTS",
    "EvaluationSettings",
    "StudyBudget",
    "FULL",
    "QUICK",
]

DATASET_NAMES = (
    "mnist",
    "fashion-mnist",
    "kmnist",
    "emnist-balanced",
    "emnist-letters",
    "emnist-digits",
    "cifar10",
    "svhn",
)
MODEL_NAMES = ("vae", "cvae")
"""The models of the study."""
TRAIN_MODEL_NAMES = (*MODEL_NAMES, "m2")
"""The models ``pyrovae train`` builds: the study's and the semi-supervised M2."""
PRIOR_NAMES = ("normal", "mog", "vamp", "flow")
GUIDE_NAMES = ("diagonal", "flow")
LIKELIHOOD_NAMES = ("bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic")
ELBO_NAMES = ("trace", "meanfield", "iwae")
ACTIVATION_NAMES = ("relu", "tanh", "softplus", "elu", "gelu")
NET_NAMES = ("mlp", "conv")
LR_SCHEDULE_NAMES = ("constant", "burda")
SOURCE_NAMES = (
    "prior",
    "aggregate",
    "gaussian-loc",
    "gaussian-z",
    "gaussian-full",
    "gmm",
    "flow",
)
SPLIT_NAMES = ("test", "val")
PROPOSAL_NAMES = ("adapted", "separate", "guide")
CHECKPOINT_NAMES = ("best", "last")
AGGREGATE_COMPONENTS = 20
"""Training encodings in the 'aggregate' source of a guide that is not a diagonal Normal (the
flow guide), by default: a seeded random subset, since every (draw, encoding) pair costs a
pass of the flow's networks (``"all"`` asks for the exact sum; a diagonal guide always
uses all of them)."""


#: Held-out images and training encodings of an evaluation, unless asked otherwise.
DEFAULT_NUM_TEST, DEFAULT_NUM_TRAIN = 1000, 10_000


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything that decides an evaluation's numbers; stored as ``evaluation["settings"]``.

    Two evaluations with equal settings of the same weights give the same numbers, so a
    saved ``evaluation.json`` can be reused when the settings asked for match its own
    (:meth:`differences`). Field meanings are those of ``pyrovae evaluate``.

    The defaults (1,000 held-out images, sources fitted to 10,000 training encodings,
    K=1000) finish in minutes on two CPU cores for a z = 50 MNIST VAE; ``num_test=None`` and
    ``num_train=None`` ask for every held-out image and every training encoding (the
    command line's ``--full``), whose cost the evaluation prints before it starts.
    """

    sources: tuple[str, ...] = SOURCE_NAMES
    split: str = "test"
    num_samples: int = 1000
    num_test: int | None = DEFAULT_NUM_TEST
    num_train: int | None = DEFAULT_NUM_TRAIN
    proposal: str = "adapted"
    quality: bool = True
    num_quality_samples: int = 1000
    flow_steps: int = 400
    seed: int = 0
    checkpoint: str = "best"
    ais_num_test: int | None = None
    ais_steps: int = 500
    ais_chains: int = 16
    ais_leapfrog: int = 10
    ais_sources: tuple[str, ...] | None = None
    bdmc_num_data: int = 100
    aggregate_components: int | str = AGGREGATE_COMPONENTS

    ADDED_LATER: ClassVar[tuple[str, ...]] = ("aggregate_components",)
    """Settings that older pyrovae versions did not store: a saved dict that lacks one was
    made with its default (what that version did), so it matches the default."""

    def __post_init__(self) -> None:
        n = self.aggregate_components
        if n != "all" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(
                f"aggregate_components must be a positive integer or 'all' (the exact sum), "
                f"got {n!r}"
            )
        unknown = sorted(set(self.sources) - set(SOURCE_NAMES))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; valid names are {list(SOURCE_NAMES)}")
        # 'prior' is always evaluated (it is the model's own log-likelihood)
        ordered = tuple(n for n in SOURCE_NAMES if n in {"prior", *self.sources})
        object.__setattr__(self, "sources", ordered)
        if self.ais_sources is not None:
            object.__setattr__(self, "ais_sources", tuple(sorted(set(self.ais_sources))))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists). The AIS fields are None when AIS is off, the
        quality sample count when quality is off, ``aggregate_components`` (an integer or
        ``"all"``) when the 'aggregate' source is not evaluated, so that unused settings
        never differ."""
        out = asdict(self)
        if "aggregate" not in self.sources:
            out["aggregate_components"] = None
        for key in ("sources", "ais_sources"):
            if out[key] is not None:
                out[key] = list(out[key])
        if self.ais_num_test is None:
            for key in ("ais_steps", "ais_chains", "ais_leapfrog", "ais_sources", "bdmc_num_data"):
                out[key] = None
        if not self.quality:
            out["num_quality_samples"] = None
        return out

    def differences(
        self, saved: Mapping[str, Any] | None, keys: set[str] | None = None
    ) -> list[str]:
        """``"name: saved A, asked B"`` for each setting (of ``keys``, default all) in which
        a stored settings dict differs from these; a key the dict lacks differs, unless it is
        one of :attr:`ADDED_LATER` and these settings store what its default would."""
        if not isinstance(saved, Mapping):
            return ["settings: none stored (written by an older pyrovae)"]
        mine = self.to_dict()
        defaults = {f.name: f.default for f in fields(self) if f.name in self.ADDED_LATER}
        out = []
        for key, value in mine.items():
            if keys is not None and key not in keys:
                continue
            if key not in saved and key in defaults:
                if value == replace(self, **{key: defaults[key]}).to_dict()[key]:
                    continue
                out.append(f"{key}: not stored (read as {defaults[key]!r}), asked {value!r}")
            elif key not in saved:
                out.append(f"{key}: not stored, asked {value!r}")
            elif saved[key] != value:
                out.append(f"{key}: saved {saved[key]!r}, asked {value!r}")
        return out


@dataclass(frozen=True)
class StudyBudget:
    """How much training and evaluation each model of the study gets.

    Attributes:
        epochs: training epochs of every model.
        subset: training examples used (None: all 50,000).
        hidden_dims: encoder widths (the decoder mirrors them).
        num_samples: K, importance samples per held-out datum.
        num_test: held-out test images evaluated (None: all 10,000). The exact aggregated
            posterior costs num_samples x num_test x (training images) Gaussian densities,
            about 6.5 ns each on two CPU cores when all are summed (11 minutes a model for
            the defaults); on the CPU the pruned sum skips the negligible ones, 10 to 20
            times faster at z <= 10 (about a minute).
        num_train: training images the latent sources are fitted to (None: all).
        num_quality_samples: decoded samples per source scored by the classifier.
        quick_classifier: train a small throw-away classifier on 5,000 images instead of
            the cached full one (for smoke tests only; its accuracy is reported).
        flow_steps: optimizer steps of the flow fitted to the latent codes.
        z_dims: latent dimensions of the study.
        models: ``"vae"`` and/or ``"cvae"``.
        priors: priors trained with each model (keys of ``pyrovae.models.PRIORS``), so that
            priors learned in training and sources fitted afterwards meet on the same
            test images.
        seeds: training seeds of each configuration (None: the ``seed`` of
            :func:`~pyrovae.study.run_study`); with several, the report states the spread.
        ais_num_test: also run AIS (and BDMC) on this many of the test images (None: no AIS).
        ais_steps, ais_chains: the AIS budget (see
            :class:`~pyrovae.analysis.evaluation.evaluate.AISBudget`).
    """

    epochs: int = 30
    subset: int | None = None
    hidden_dims: tuple[int, ...] = (400, 400)
    num_samples: int = 1000
    num_test: int | None = 2000
    num_train: int | None = None
    num_quality_samples: int = 1000
    quick_classifier: bool = False
    flow_steps: int = 400
    z_dims: tuple[int, ...] = (2, 5, 10)
    models: tuple[str, ...] = MODEL_NAMES
    priors: tuple[str, ...] = ("normal",)
    seeds: tuple[int, ...] | None = None
    ais_num_test: int | None = None
    ais_steps: int = 500
    ais_chains: int = 16

    def evaluation_settings(self) -> EvaluationSettings:
        """What each run of the study is evaluated with."""
        return EvaluationSettings(
            num_samples=self.num_samples,
            num_test=self.num_test,
            num_train=self.num_train,
            num_quality_samples=self.num_quality_samples,
            flow_steps=self.flow_steps,
            ais_num_test=self.ais_num_test,
            ais_steps=self.ais_steps,
            ais_chains=self.ais_chains,
        )


FULL = StudyBudget()
QUICK = StudyBudget(
    epochs=1,
    subset=2000,
    hidden_dims=(128,),
    num_samples=20,
    num_test=200,
    num_train=2000,
    num_quality_samples=100,
    quick_classifier=True,
)
