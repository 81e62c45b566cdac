"""Draw every figure of one trained run and bundle it with its evaluation for the report."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from pyrovae.analysis import figures as F
from pyrovae.analysis.figures._common import _class_word
from pyrovae.analysis.figures._vectors import VECTOR_SAMPLES
from pyrovae.analysis.progress import progress_iter
from pyrovae.analysis.report import RunReport
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.fits import fit_per_class
from pyrovae.analysis.sources.surgery import ACTIVITY_THRESHOLD
from pyrovae.data import Splits
from pyrovae.images import image_shape_of, value_kind_of
from pyrovae.train import one_hot

__all__ = [
    "run_figures",
    "build_run_report",
    "data_summary",
    "run_name",
    "describe_model",
    "not_shown",
    "figure_filename",
    "samples_title",
    "slug",
]

SLUG_LENGTH = 40
"""Most characters of the title part of a figure's file name."""
_TRAILING = frozenset("a an and as at by for from in of on per the to with".split())


def run_name(vae: nn.Module) -> str:
    """A short label such as ``vae-z2`` (``cvae-z10-vamp`` for a non-default prior,
    ``vae-z10-conv`` for convolutional nets)."""
    cfg = getattr(vae, "config", None)
    if cfg is None:  # a model pyrovae did not build (e.g. a Pyro pair read by from_pyro)
        return f"{'cvae' if vae.conditional else 'vae'}-z{vae.z_dim}"
    name = f"{cfg.model}-z{cfg.z_dim}"
    if cfg.prior != "normal":
        name = f"{name}-{cfg.prior}"
    return name if getattr(cfg, "net", "mlp") == "mlp" else f"{name}-{cfg.net}"


def slug(title: str, max_length: int = SLUG_LENGTH) -> str:
    """``title`` as lower-case ASCII words joined by single hyphens, cut at a word boundary.

    Accents are dropped (NFKD), every run of other characters becomes one hyphen, and
    words are kept while the slug fits in ``max_length`` (a cut slug does not end in a
    word such as "of" or "the"); a first word that is longer on its own is cut. An empty
    result is ``"figure"``.
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_title.lower())
    kept: list[str] = []
    for word in words:
        if len("-".join([*kept, word])) > max_length:
            while len(kept) > 1 and kept[-1] in _TRAILING:  # cut: drop a dangling "of the"
                kept.pop()
            break
        kept.append(word)
    if not kept and words:
        kept = [words[0][:max_length]]
    return "-".join(kept) or "figure"


def figure_filename(index: int, title: str, max_length: int = SLUG_LENGTH) -> str:
    """``NN-slug.png``: the figure's place in the report (unique) and :func:`slug` of its title."""
    return f"{index:02d}-{slug(title, max_length)}.png"


def run_figures(
    vae: nn.Module,
    data: Splits,
    evaluation: Mapping[str, Any] | None = None,
    sources: Mapping[str, LatentSource] | None = None,
    metrics: list[dict[str, float]] | None = None,
    classifier: nn.Module | None = None,
    digit: int | None = None,
    max_points: int = 2000,
    progress: bool = False,
) -> dict[str, Figure]:
    """Every figure of the latent-space study for one model, in display order.

    The figures follow the data: images of any shape and kind (``data.image_shape`` and
    ``data.kind``), or, for vectors, marginals and pair plots of features (see
    :mod:`pyrovae.analysis.figures`); classes are those of the model (a CVAE's ``y_dim``)
    or the data (``data.num_classes``, named by ``data.class_names`` where it has them).

    Args:
        vae: a trained VAE or CVAE.
        data: the splits (train and test encodings are drawn).
        evaluation: the dict of :func:`~pyrovae.analysis.evaluation.evaluate.evaluate_run` (for the
            log-likelihood and KL-per-dimension charts and the sample-grid captions).
        sources: fitted latent sources (sample grids); ``comparison.sources``.
        metrics: rows of ``metrics.csv`` (training curves).
        classifier: reads the class-conditional samples, when given.
        digit: the class of the traversal pictures (default: 9 for ten classes, as for
            MNIST's digit 9, else the last class present in the test labels).
        progress: show progress over the figures on stderr.
    """
    if classifier is not None and not isinstance(classifier, nn.Module):
        classifier = getattr(classifier, "classifier", None)  # a DataQuality's network, if any
    plan: list[tuple[str, Callable[[], Figure]]] = []
    test = data.test
    device = next(vae.parameters()).device
    x_test, labels_test = test.x[:max_points].to(device), test.y[:max_points].to(device)
    y_test = one_hot(labels_test, vae.y_dim) if vae.conditional else None
    images = image_shape_of(vae) is not None
    kind = getattr(data, "kind", None)
    names = _class_names(vae, data)
    columns = _feature_names(vae)
    word = _class_word(vae, getattr(data, "name", None))
    digit = _default_class(vae, labels_test) if digit is None else digit
    labelled = vae.conditional or int(getattr(data, "num_classes", 10) or 1) >= 2
    if metrics:
        plan.append(("Training curves", lambda: F.plot_training_curves(metrics)))
    plan.append(
        (
            "Reconstructions (test inputs above, reconstructions below)"
            if images
            else "Reconstructions (each feature of test data against its reconstruction)",
            lambda: F.plot_reconstructions(vae, x_test, y_test, kind=kind, feature_names=columns),
        )
    )
    scores = evaluation.get("sources") if evaluation else None
    if sources:
        n = 64 if images else None
        num = 64 if images else VECTOR_SAMPLES
        plan.append(
            (
                samples_title(scores, images),
                lambda: F.plot_samples(
                    vae,
                    dict(sources),
                    n=n,
                    y=_cycle(vae, num, device),
                    scores=scores,
                    x=None if images else x_test,
                    kind=kind,
                    feature_names=columns,
                ),
            )
        )
    plan.append(
        (
            "Latent space per class (train and test)",
            lambda: F.plot_latent_space(vae, data, max_points=max_points, class_names=names),
        )
    )
    if vae.conditional:
        model = "M2" if getattr(vae, "semi_supervised", False) else "CVAE"
        plan.append(
            (
                f"{model}: style of {word} {digit} around z = 0",
                lambda: F.plot_cvae_style(vae, digit, kind=kind, feature_names=columns),
            )
        )
        plan.append(
            (
                f"{model}: class-conditional samples",
                lambda: F.plot_class_samples(
                    vae, classifier=classifier, kind=kind, class_names=names, feature_names=columns
                ),
            )
        )
    else:
        plan.append(
            (
                f"Traversal around the mean of {word} {digit}",
                lambda: F.plot_traversal(
                    vae, x_test, labels_test, digit=digit, kind=kind, feature_names=columns
                ),
            )
        )
        if labelled:
            plan.append(
                (
                    f"Neighbourhood of {word} {digit}",
                    lambda: F.plot_neighbourhood(
                        vae,
                        x_test,
                        labels_test,
                        digit=digit,
                        classifier=classifier,
                        class_names=names,
                    ),
                )
            )

            def class_samples() -> Figure:
                train = data.train.subset(min(len(data.train), 10_000)).to(device)
                per_class = fit_per_class("gaussian-z", vae, train.x, train.y)
                return F.plot_class_samples(
                    vae,
                    per_class,
                    classifier=classifier,
                    kind=kind,
                    class_names=names,
                    feature_names=columns,
                )

            title = "Class-conditional samples from per-class Gaussians (unconditional VAE)"
            plan.append((title, class_samples))
    if scores:
        title = "Held-out log-likelihood relative to the prior"
        plan.append((title, lambda: F.plot_loglik(scores)))
        if any(isinstance(e, Mapping) and e.get("ksweep") for e in scores.values()):
            plan.append(
                ("L_K against K per latent source (AIS as diamonds)", lambda: F.plot_ksweep(scores))
            )
    surgery = (evaluation or {}).get("surgery") or {}
    if surgery.get("kl_per_dim"):
        plan.append(("KL per latent dimension", lambda: F.plot_kl_per_dim(surgery["kl_per_dim"])))
    elif surgery.get("activity"):
        plan.append(
            (
                "Activity per latent dimension, Cov_x E_q[z_d]",
                lambda: F.plot_kl_per_dim(surgery["activity"], threshold=ACTIVITY_THRESHOLD),
            )
        )
    figs: dict[str, Figure] = {}
    with progress_iter(plan, "figures", "figure", progress) as bar:
        for title, draw in bar:
            figs[title] = draw()
    return figs


_LETTERS = [chr(ord("a") + i) for i in range(26)]
KNOWN_CLASS_NAMES: dict[str, list[str]] = {
    "fashion-mnist": [
        "T-shirt/top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
    "emnist-letters": _LETTERS,
    "emnist-balanced": [str(d) for d in range(10)]
    + [c.upper() for c in _LETTERS]
    + list("abdefghnqrt"),
}
"""Names of the classes of :func:`pyrovae.load_dataset`'s data sets whose labels are not
the digits themselves (EMNIST balanced: 0-9, A-Z and the 11 lower-case letters it keeps)."""


def _class_names(vae: nn.Module, data: Splits) -> list[str] | None:
    """Names of classes 0, 1, ...: the data's, else those the run recorded, else those of a
    known data set (:data:`KNOWN_CLASS_NAMES`), else None."""
    names = getattr(data, "class_names", None) or KNOWN_CLASS_NAMES.get(
        str(getattr(data, "name", ""))
    )
    if not names:
        names = getattr(
            getattr(getattr(vae, "run_config", None), "train", None), "class_names", None
        )
    return [str(n) for n in names] if names else None


def _feature_names(vae: nn.Module) -> list[str] | None:
    """A CSV's column names that the run recorded, one per value of x (else None)."""
    train = getattr(getattr(vae, "run_config", None), "train", None)
    names = getattr(train, "column_names", None)
    return [str(n) for n in names] if names and len(names) == vae.x_dim else None


def _default_class(vae: nn.Module, labels: torch.Tensor) -> int:
    """MNIST's 9 where there are ten classes, else the last class of the test labels (a
    CVAE: its last class)."""
    if vae.conditional:
        return 9 if vae.y_dim == 10 else int(vae.y_dim) - 1
    present = set(labels.unique().tolist())
    return 9 if 9 in present and max(present) == 9 else int(max(present))


def samples_title(scores: Mapping[str, Any] | None, images: bool = True) -> str:
    """The caption of the sample grids, with each source's share of near-copies of training
    images (data points, for vectors) where the evaluation measured it (shown wherever
    sample quality is)."""
    title = (
        "Samples from each latent source"
        if images
        else "Samples from each latent source (marginals and pairs of features, real data grey)"
    )
    copies = {}
    for name, entry in (scores or {}).items():
        memo = entry.get("memorization") if isinstance(entry, Mapping) else None
        share = memo.get("near_copy_fraction") if isinstance(memo, Mapping) else None
        if isinstance(share, (int, float)) and 0 <= share <= 1:
            copies[name] = share
    if not copies:
        return title
    listed = ", ".join(f"{name} {100 * share:.1f}%" for name, share in copies.items())
    what = "images" if images else "data points"
    return f"{title} (near-copies of training {what}: {listed})"


def _cycle(vae: nn.Module, n: int, device: torch.device) -> torch.Tensor | None:
    if not vae.conditional:
        return None
    return one_hot(torch.arange(n, device=device) % vae.y_dim, vae.y_dim)


def build_run_report(
    vae: nn.Module,
    data: Splits,
    evaluation: Mapping[str, Any],
    out_dir: str | Path,
    sources: Mapping[str, LatentSource] | None = None,
    classifier: nn.Module | None = None,
    name: str | None = None,
    diagnostics: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> RunReport:
    """Draw the figures of one run as PNGs under ``out_dir/<name>/`` and return its report.

    ``diagnostics`` (``pyrovae diagnose``'s dict) adds an "Inference quality" section; by
    default the run's own ``RUN/diagnostics/diagnostics.json`` is used when it exists.
    ``progress`` shows progress over the figures on stderr.

    A non-empty ``evaluation`` must record the fingerprint of ``vae``'s weights (as
    :func:`~pyrovae.analysis.evaluation.evaluate.evaluate_run` does): an evaluation of other
    weights,
    or of unknown ones, raises
    :class:`~pyrovae.analysis.evaluation.reuse.StaleEvaluationError` rather than being shown
    beside the figures and training curves of these.
    """
    from pyrovae.analysis.evaluation.reuse import check_weights
    from pyrovae.analysis.posterior.diagnose import load_diagnostics
    from pyrovae.runs import read_metrics

    name = name or run_name(vae)
    run_dir = getattr(vae, "run_dir", None)
    if evaluation:
        where = "the evaluation" if run_dir is None else f"the evaluation of {run_dir}"
        check_weights(evaluation, vae, where)
    metrics = read_metrics(run_dir) if run_dir is not None else None
    figures = run_figures(vae, data, evaluation, sources, metrics, classifier, progress=progress)
    folder = Path(out_dir) / name
    paths: dict[str, Path] = {}
    for i, (title, fig) in enumerate(figures.items()):
        paths[title] = F.save_figure(fig, folder / figure_filename(i, title))
    description, config = describe_model(vae, data)
    run_config = getattr(vae, "run_config", None)
    if run_config is not None:
        train = run_config.train
        config["train"] = {
            k: getattr(train, k)
            for k in (
                "epochs",
                "batch_size",
                "lr",
                "elbo",
                "num_particles",
                "kl_warmup",
                "subset",
                "seed",
            )
        }
    if diagnostics is None and run_dir is not None:
        diagnostics = load_diagnostics(run_dir, vae)
    return RunReport(
        name=name,
        description=description,
        config=config,
        evaluation=dict(evaluation),
        figures=paths,
        metrics=metrics,
        diagnostics=dict(diagnostics or {}),
        data=data_summary(vae, data),
        notes=not_shown(vae, data, metrics, diagnostics),
    )


def describe_model(vae: nn.Module, data: Splits) -> tuple[str, dict[str, Any]]:
    """The report's sentence about a model and its configuration table: pyrovae's
    :class:`~pyrovae.build.ModelConfig`, or, for a Pyro pair read by
    :func:`~pyrovae.pyro_pair.from_pyro`, its functions, sites and distribution families."""
    shape = image_shape_of(vae)
    described = (
        f"{shape[0]} x {shape[1]} x {shape[2]} images" if shape else f"vectors of {vae.x_dim}"
    )
    kind = getattr(data, "kind", None)
    on = f"data: {getattr(data, 'name', 'data')}, {described}" + (
        f" ({kind} values)" if kind else ""
    )
    cfg = getattr(vae, "config", None)
    if cfg is not None:
        return (
            f"{cfg.model.upper()} with a {cfg.prior} prior, {cfg.guide} guide and "
            f"{cfg.likelihood} likelihood, z = {cfg.z_dim}; {on}",
            {"model": cfg.to_dict()},
        )
    pair = getattr(vae, "pair", None)
    if isinstance(pair, Mapping):
        what = "CVAE" if vae.conditional else "VAE"
        return (
            f"A Pyro model/guide pair written outside pyrovae, read as a {what}: "
            f"{pair['model']} and {pair['guide']}, latent site {pair['latent_site']!r} with "
            f"a {pair['prior']} prior and a {pair['guide_family']} guide, observed site "
            f"{pair['observed_site']!r} with a {pair['likelihood']} likelihood, "
            f"z = {vae.z_dim}; {on}",
            {"pair": dict(pair)},
        )
    what = "CVAE" if vae.conditional else "VAE"
    return f"A {what} ({type(vae).__name__}), z = {vae.z_dim}; {on}", {}


def not_shown(
    vae: nn.Module,
    data: Splits,
    metrics: list[dict[str, float]] | None,
    diagnostics: Mapping[str, Any] | None,
) -> list[str]:
    """What the report leaves out for this model and why, one sentence each: the parts that
    need something the model or its data do not have."""
    notes = []
    if getattr(vae, "config", None) is None:
        if not metrics:
            notes.append(
                "Training curves: the model was trained outside pyrovae, which has no "
                "record of its epochs."
            )
        if not diagnostics:
            notes.append(
                "Inference quality: no diagnostics were given (run pyrovae diagnose, then "
                "pass its output directory to pyrovae report with --diagnostics)."
            )
    if not vae.conditional and int(getattr(data, "num_classes", 10) or 1) < 2:
        notes.append(
            "The neighbourhood and the class-conditional samples: the data have no labels."
        )
    return notes


def data_summary(vae: nn.Module, data: Splits) -> dict[str, Any]:
    """What the report needs to know about a run's data (:attr:`RunReport.data`)."""
    shape = image_shape_of(vae)
    names = _class_names(vae, data)
    return {
        "name": getattr(data, "name", None),
        "kind": getattr(data, "kind", None) or value_kind_of(vae),
        "image_shape": None if shape is None else list(shape),
        "x_dim": int(vae.x_dim),
        "num_classes": int(vae.y_dim) if vae.conditional else getattr(data, "num_classes", None),
        "class_names": None if names is None else [str(n) for n in names],
    }
