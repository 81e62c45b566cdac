"""Reading the numbers of an evaluation: tolerant accessors, formats, leaders and ties."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from pyrovae.analysis.evaluation.compare import KHAT_FLAG_FRACTION
from pyrovae.analysis.likelihood.evidence import Z95
from pyrovae.analysis.likelihood.psis import KHAT_THRESHOLD
from pyrovae.analysis.report.run import RunReport

PRIOR = "prior"
"""Name of the prior among the latent sources (the reference for every difference)."""

DASH = "\u2014"
ELLIPSIS = " \u2026"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Sample-quality columns: key, superlative and comparative in sentences; lower is better.
_QUALITY = (
    ("ambiguous", "the least ambiguous samples", "fewer ambiguous samples"),
    ("entropy", "the lowest classifier entropy", "lower classifier entropy"),
    ("coverage_kl", "the most even class coverage", "more even class coverage"),
    ("frechet", "the lowest Frechet distance to test data", "lower Frechet distances"),
)
_ROUNDING = 0.005
"""Half the last digit shown (2 decimals): smaller differences are not claimed."""

ADVICE = (
    "raise K (--num-samples), train with the flow guide (--guide flow), or run AIS "
    "(pyrovae evaluate RUN_DIR --ais-num-test N)"
)
"""What to do when every log-likelihood estimate is flagged."""


# ------------------------------------------------------------------------------ nouns

IMAGE_NOUNS = ("image", "images")
VECTOR_NOUNS = ("data point", "data points")
_NOUNS: ContextVar[tuple[str, str]] = ContextVar("data_nouns", default=IMAGE_NOUNS)


def data_noun(plural: bool = True) -> str:
    """What one datum of the run being written is called: "images" (the default, and for
    image data) or "data points" (vectors); :func:`speaking_of` sets it."""
    return _NOUNS.get()[1 if plural else 0]


def nouns_of(data: Mapping[str, Any] | None) -> tuple[str, str]:
    """The nouns for a run's data (:attr:`RunReport.data`): images unless its
    ``image_shape`` is recorded as None (vectors); images where nothing is recorded."""
    if not isinstance(data, Mapping) or "image_shape" not in data:
        return IMAGE_NOUNS
    return IMAGE_NOUNS if data["image_shape"] else VECTOR_NOUNS


@contextlib.contextmanager
def speaking_of(nouns: tuple[str, str]) -> Iterator[None]:
    """Within the block, the report's sentences call a datum ``nouns`` (singular, plural)."""
    token = _NOUNS.set(nouns)
    try:
        yield
    finally:
        _NOUNS.reset(token)


# ----------------------------------------------------------------------------- numbers


def _num(value: Any) -> float | None:
    """``value`` as a float (infinities kept), or None when missing, NaN or not a number."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:  # also numpy and 0-d torch scalars
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _finite(value: Any) -> float | None:
    value = _num(value)
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: Any, digits: int = 2) -> str:
    value = _num(value)
    return DASH if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    value = _num(value)
    return DASH if value is None else f"{100 * value:.1f}%"


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sources(evaluation: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(k): _mapping(v) for k, v in _mapping(evaluation.get("sources")).items()}


def _khat_fraction(entry: Mapping[str, Any]) -> float | None:
    return _num(entry.get(f"khat_gt_{KHAT_THRESHOLD}", entry.get("khat_fraction")))


def _unreliable(entry: Mapping[str, Any]) -> bool:
    """Flagged by the evaluation, or more than KHAT_FLAG_FRACTION of k-hat above 0.7."""
    if isinstance(entry.get("khat_flag"), bool):
        return entry["khat_flag"]
    fraction = _khat_fraction(entry)
    return fraction is not None and fraction > KHAT_FLAG_FRACTION


def _mutual_information(surgery: Mapping[str, Any]) -> float | None:
    for key in ("mutual_information", "mutual_info"):
        if _finite(surgery.get(key)) is not None:
            return _finite(surgery.get(key))
    avg, marginal = _finite(surgery.get("avg_kl")), _finite(surgery.get("marginal_kl"))
    return None if avg is None or marginal is None else avg - marginal


def _mi_outside(value: float, bound: float | None) -> bool:
    """Whether an estimate of I(x; z) lies outside [0, log N] (``bound``, when known), where
    no true value can (Hoffman & Johnson, 2016): the estimate is then wrong."""
    return value < 0 or (bound is not None and value > bound)


def _z_dim(run: RunReport) -> int | None:
    for key in ("z_dim", "model.z_dim"):
        value = _flatten(run.config).get(key)
        if _finite(value) is not None:
            return int(value)
    surgery = _mapping(run.evaluation.get("surgery"))
    for key in ("kl_per_dim", "activity"):
        if isinstance(surgery.get(key), Sequence) and surgery[key]:
            return len(surgery[key])
    return None


def _best(values: Mapping[str, float | None], highest: bool) -> list[str]:
    """Names holding the best finite value (ties included), or [] for fewer than 2 values."""
    finite = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2:
        return []
    target = max(finite.values()) if highest else min(finite.values())
    return [k for k, v in finite.items() if v == target]


def _prior_difference(
    sources: Mapping[str, Mapping[str, Any]], name: str
) -> tuple[float, float | None, bool] | None:
    """log p_name(x) - log p_prior(x), its standard error, and whether that error is paired.

    A paired error (``vs_prior_stderr`` in the entry, from the shared guide draws) is used
    when present; otherwise the two standard errors are combined as if independent,
    which overstates the error of a paired comparison.
    """
    entry, prior = sources[name], sources.get(PRIOR, {})
    paired_mean, paired_se = _finite(entry.get("vs_prior")), _finite(entry.get("vs_prior_stderr"))
    if paired_mean is not None:
        return paired_mean, paired_se, paired_se is not None
    a, b = _finite(entry.get("loglik")), _finite(prior.get("loglik"))
    if a is None or b is None:
        return None
    sa, sb = _finite(entry.get("stderr")), _finite(prior.get("stderr"))
    se = None if sa is None or sb is None else math.hypot(sa, sb)
    return a - b, se, False


def _beyond(diff: float, se: float | None) -> bool:
    """Whether a difference is shown: |diff| > Z95 * se, and never below the rounding
    shown (which is also the only test when no standard error is known)."""
    return abs(diff) > max(_ROUNDING, 0.0 if se is None else Z95 * se)


def _pair(
    sources: Mapping[str, Mapping[str, Any]], a: str, b: str
) -> tuple[float, float | None, bool] | None:
    """log p_a(x) - log p_b(x), its standard error and whether that error is paired.

    Against the prior this is :func:`_prior_difference`. Between two other sources the
    covariance is not recorded: with paired differences d_a, d_b to the prior (errors
    s_a, s_b), a - b = d_a - d_b has an error of at most s_a + s_b (Cauchy-Schwarz, for
    any correlation), and sqrt(se_a^2 + se_b^2) is the error of independent estimates
    (an overstatement for estimates on the same data); the smaller of the two is used.
    """
    if b == PRIOR:
        return _prior_difference(sources, a)
    if a == PRIOR:
        out = _prior_difference(sources, b)
        return None if out is None else (-out[0], out[1], out[2])
    la, lb = _finite(sources[a].get("loglik")), _finite(sources[b].get("loglik"))
    if la is None or lb is None:
        return None
    sa, sb = _finite(sources[a].get("stderr")), _finite(sources[b].get("stderr"))
    combined = None if sa is None or sb is None else math.hypot(sa, sb)
    da, db = _prior_difference(sources, a), _prior_difference(sources, b)
    if da is not None and db is not None and da[2] and db[2]:
        bound = da[1] + db[1]
        if combined is None or bound < combined:
            return da[0] - db[0], bound, True
    return la - lb, combined, False


def _leading(sources: Mapping[str, Mapping[str, Any]]) -> tuple[list[tuple[float, str]], list[str]]:
    """Sources by held-out log-likelihood (highest first) and the leading group: the
    leader and every source whose difference to it is not shown (:func:`_beyond`)."""
    ranked = sorted(
        ((v, n) for n, e in sources.items() if (v := _finite(e.get("loglik"))) is not None),
        key=lambda t: -t[0],
    )
    if not ranked:
        return [], []
    leader = ranked[0][1]
    tied = [leader]
    for _, name in ranked[1:]:
        diff = _pair(sources, leader, name)
        if diff is None or not _beyond(diff[0], diff[1]):
            tied.append(name)
    return ranked, tied


def _listing(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _significance(diff: float, se: float | None, paired: bool, other: str = "the prior") -> str:
    if se is None:
        return "no standard error was recorded, so its significance is unknown"
    kind = "paired" if paired else "both errors combined"
    if not _beyond(diff, se):
        return (
            f"within {Z95} standard errors ({se:.2f}, {kind}), so not significant: "
            f"indistinguishable from {other}"
        )
    return f"more than {Z95} standard errors ({se:.2f}, {kind}), so significant"


def _flagged(entry: Mapping[str, Any]) -> bool:
    """Unreliable by k-hat, or still rising in K."""
    return _unreliable(entry) or entry.get("converged") is False


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
