"""The report's tables, built from evaluations as plain data for the template: the sources,
ELBO surgery, training metrics, settings and the cross-run summaries."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyrovae.analysis.evaluation.compare import KHAT_FLAG_FRACTION
from pyrovae.analysis.likelihood.evidence import Z95, ais_difference, source_bdmc
from pyrovae.analysis.likelihood.psis import KHAT_THRESHOLD
from pyrovae.analysis.posterior.inference_quality import GAP_ROWS, gap_table
from pyrovae.analysis.report.conclusions import _heldout_label
from pyrovae.analysis.report.cross_run import (
    _best_source,
    _gain,
    _gain_text,
    _model_loglik,
)
from pyrovae.analysis.report.findings import _quality_leaders, _training_label
from pyrovae.analysis.report.numbers import (
    _QUALITY,
    DASH,
    ELLIPSIS,
    PRIOR,
    _best,
    _beyond,
    _finite,
    _flatten,
    _fmt,
    _khat_fraction,
    _leading,
    _mapping,
    _mi_outside,
    _mutual_information,
    _pct,
    _prior_difference,
    _signed,
    _sources,
    _unreliable,
    _z_dim,
    data_noun,
)
from pyrovae.analysis.report.run import RunReport
from pyrovae.analysis.sources.surgery import ACTIVITY_THRESHOLD
from pyrovae.models.discretized import bits_per_dim

__all__ = [
    "Cell",
    "Row",
    "Table",
    "anchor",
    "config_table",
    "gaps_summary_table",
    "metrics_tables",
    "sources_table",
    "summary_table",
    "surgery_table",
]


@dataclass
class Cell:
    """One table cell: text (escaped by the template) and how to show it."""

    text: str = ""
    numeric: bool = True
    best: bool = False
    badge: str | None = None
    link: str | None = None
    bars: list[tuple[float, str]] | None = None
    colspan: int = 1

    @property
    def classes(self) -> str:
        return " ".join(c for c, on in (("n", self.numeric), ("best", self.best)) if on)


@dataclass
class Row:
    cells: list[Cell]
    cls: str = ""


@dataclass
class Table:
    header: list[tuple[str, bool]]
    rows: list[Row]
    cls: str = ""
    note: str = ""


def _text(text: str, numeric: bool = True, best: bool = False) -> Cell:
    return Cell(str(text), numeric=numeric, best=best)


def _findings(sentences: Sequence[str]) -> list[tuple[str, bool]]:
    """(sentence, warn): warnings (a row called unreliable) are shown in the flag colour."""
    return [(s, "unreliable" in s.lower()) for s in sentences]


def anchor(index: int, name: str) -> str:
    return f"run-{index}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "run")


def _column_value(key: str, entry: Mapping[str, Any]) -> float | None:
    if key == "khat":
        return _khat_fraction(entry)
    if key == "ais":
        return _finite(_mapping(entry.get("ais")).get("loglik"))
    if key == "converged":
        return None
    if key == "near_copies":
        return _finite(_mapping(entry.get("memorization")).get("near_copy_fraction"))
    return _finite(entry.get(key))


def _ais_leaders(sources: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The highest AIS estimate and those whose (paired) AIS difference to it is not shown."""
    ais = {n: _mapping(e.get("ais")) for n, e in sources.items()}
    ais = {
        n: a
        for n, a in ais.items()
        if _finite(a.get("loglik")) is not None and _finite(a.get("stderr")) is not None
    }
    if len(ais) < 2:
        return set()
    top = max(ais, key=lambda n: ais[n]["loglik"])
    return {n for n in ais if n == top or not _beyond(*ais_difference(ais[top], ais[n]))}


_SOURCE_COLUMNS: tuple[tuple[str, str, bool, Any], ...] = (
    ("loglik", "log p(x) \u00b1 stderr [nats]", True, None),
    ("converged", "converged in K", False, None),
    ("ais", "AIS \u00b1 stderr [nats]", True, None),
    ("khat", f"k-hat > {KHAT_THRESHOLD}", False, _pct),
    ("entropy", "entropy [nats]", False, _fmt),
    ("ambiguous", "ambiguous", False, _pct),
    ("coverage_kl", "coverage KL [nats]", False, _fmt),
    ("frechet", "Frechet", False, _fmt),
    ("near_copies", "near-copies", False, _pct),
)


_UNRANKED = frozenset({"converged", "near_copies"})
"""Columns with no best value: convergence is yes/no, and a near-copy share is judged
against the prior's and the 5% of new real data, not by being low."""


def _source_best(sources: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    value = {
        key: {n: _column_value(key, e) for n, e in sources.items()} for key, *_ in _SOURCE_COLUMNS
    }
    best = {key: set(_best(value[key], highest)) for key, _, highest, _ in _SOURCE_COLUMNS}
    ranked, tied = _leading(sources)
    best["loglik"] = set(tied) if len(ranked) >= 2 else set()
    best["ais"] = _ais_leaders(sources)
    for key, *_ in _QUALITY:
        found = _quality_leaders(sources, key)
        best[key] = set() if found is None else set(found[0])
    # the lowest share of k-hat > 0.7, unless it is flagged (a flagged row is never best)
    best["khat"] = {n for n in best["khat"] if not _unreliable(sources[n])}
    for key, *_ in _SOURCE_COLUMNS:
        shown = {n for n, v in value[key].items() if v is not None}
        if key in _UNRANKED or shown <= best[key]:  # every value tied: none is best
            best[key] = set()
    return best


def _source_cells(
    sources: Mapping[str, Mapping[str, Any]], name: str, best: Mapping[str, set[str]]
) -> list[Cell]:
    entry = sources[name]
    cells = [Cell(name, numeric=False, badge="unreliable" if _unreliable(entry) else None)]
    for key, _, _, fmt in _SOURCE_COLUMNS:
        if key == "loglik":
            loglik, se = _finite(entry.get("loglik")), _finite(entry.get("stderr"))
            text = _fmt(loglik)
            if loglik is not None and se is not None:
                text += f" \u00b1 {se:.2f}"
            cells.append(_text(text, best=name in best[key]))
            if PRIOR in sources:
                diff = _prior_difference(sources, name) if name != PRIOR else None
                cells.append(_text(DASH if diff is None else _signed(diff[0])))
        elif key == "converged":
            converged = entry.get("converged")
            cells.append(_text({True: "yes", False: "still rising"}.get(converged, DASH)))
        elif key == "ais":
            ais = _mapping(entry.get("ais"))
            text = _fmt(_finite(ais.get("loglik")))
            if _finite(ais.get("stderr")) is not None:
                text += f" \u00b1 {ais['stderr']:.2f}"
            if _finite(ais.get("is_loglik")) is not None:
                text += f" (IS {ais['is_loglik']:.2f})"
            gap = _finite(_mapping(ais.get("bdmc")).get("gap"))
            if gap is not None:  # this source's own sandwich; backs this row only
                text += f" [BDMC gap {gap:.2f}]"
            cells.append(_text(text if ais else DASH, best=name in best[key]))
        else:
            cells.append(_text(fmt(_column_value(key, entry)), best=name in best[key]))
    return cells


def _sources_note(evaluation: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    k = _finite(evaluation.get("num_samples"))
    context = []
    if evaluation.get("split") or _finite(evaluation.get("num_test")) is not None:
        context.append(f"On {_heldout_label(evaluation)}")
    if k is not None:
        proposal = evaluation.get("proposal", "guide")
        context.append(
            f"K = {int(k)} importance samples per datum from the "
            + ("guide" if proposal == "guide" else f"{proposal} defensive mixture")
        )
    ais_entry = next((_mapping(e.get("ais")) for e in sources.values() if e.get("ais")), {})
    if ais_entry:
        gaps = any(_mapping(_mapping(e.get("ais")).get("bdmc")) for e in sources.values())
        context.append(
            f"AIS on {ais_entry.get('num_test')} of those {data_noun()} with "
            f"{ais_entry.get('steps')} steps and {ais_entry.get('chains')} chains (IS on the "
            f"same {data_noun()} in brackets"
            + (
                "; in square brackets the BDMC gap measured on data simulated from that "
                "source, from the start its AIS used: it backs that row only, and a row "
                "without one has no BDMC check)"
                if gaps
                else "; no BDMC gap was measured for any row)"
            )
        )
    return (
        f"{'; '.join(context) + '. ' if context else ''}Best value per column in bold "
        "(highest log-likelihood, lowest otherwise), with every value indistinguishable "
        f"from it (within {Z95} standard errors, overlapping 95% intervals, or equal as "
        "shown); none where every value is tied, and a flagged k-hat share is never best. "
        f"Near-copies: samples nearer to the training set than 5% of test {data_noun()} are "
        "(about 5% for new real data; judge it against the prior's). "
        "Converged in K: L_K rose by at most "
        "0.1 nats over the last 5x or more of draws. Rows marked unreliable have PSIS "
        f"k-hat > {KHAT_THRESHOLD} on more than {100 * KHAT_FLAG_FRACTION:.0f}% of the data. "
        + _quality_note(evaluation, sources)
    )


def _quality_note(evaluation: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    """Who reads the samples: the shipped MNIST classifier, or the data's own classifier
    (with its test accuracy) and the classifier-free scores (C2ST, precision and recall)."""
    quality = _mapping(evaluation.get("sample_quality"))
    scored = any(_column_value(k, e) is not None for k in _LABEL_SCORES for e in sources.values())
    parts = []
    if quality.get("scorer") != "data":
        if scored:
            parts.append(
                "Sample quality is read by an MNIST classifier: entropy and ambiguous "
                "(max probability < 0.5) measure legibility, coverage KL the evenness of "
                "classes."
            )
    else:
        net = _mapping(quality.get("classifier"))
        accuracy = _finite(net.get("test_accuracy"))
        if accuracy is None:
            accuracy = _finite(evaluation.get("classifier_accuracy"))
        if scored and (net or accuracy is not None):
            parts.append(
                "Entropy, ambiguous and coverage KL are read by a classifier trained on the "
                "data's training split"
                + ("" if accuracy is None else f" (test accuracy {_pct(accuracy)})")
                + "."
            )
    if any(_mapping(e.get("c2st")) for e in sources.values()):
        parts.append(
            "C2ST: the held-out accuracy (95% interval) of a classifier trained to tell "
            "samples from held-out real data; 0.5 means indistinguishable (Lopez-Paz and "
            "Oquab, 2017)."
        )
    if any(_mapping(e.get("precision_recall")) for e in sources.values()):
        space = quality.get("feature_space")
        parts.append(
            "Precision: the share of samples inside the k-NN balls of real data; recall: the "
            "share of real data inside those of samples (Kynkaanniemi et al., 2019)"
            + (f", in {space}" if isinstance(space, str) and space else "")
            + "."
        )
    return " ".join(parts)


_LABEL_SCORES = ("entropy", "ambiguous", "coverage_kl", "frechet")
"""The sample-quality columns a classifier of the data's labels fills."""


def _unmeasured_columns(
    sources: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any]
) -> set[str]:
    """Classifier columns no source has, for a run of other data than MNIST (whose table
    keeps every column): unlabelled data, or an evaluation without sample quality."""
    if not data or data.get("name") in ("mnist", "fashion-mnist"):
        return set()
    return {
        key
        for key in _LABEL_SCORES
        if all(_column_value(key, entry) is None for entry in sources.values())
    }


def _extra_columns(sources: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any]) -> list[str]:
    """Columns shown only where they apply: bits per dimension (8-bit data), C2ST and
    precision/recall (where the evaluation holds them)."""
    extra = []
    if data.get("kind") == "8-bit" and _finite(data.get("x_dim")):
        extra.append("bits")
    if any(_mapping(e.get("c2st")) for e in sources.values()):
        extra.append("c2st")
    if any(_mapping(e.get("precision_recall")) for e in sources.values()):
        extra.append("precision_recall")
    return extra


_EXTRA_HEADERS = {
    "bits": "log p(x) [bits/dim]",
    "c2st": "C2ST accuracy (95% interval)",
    "precision_recall": "precision / recall",
}


def _extra_cell(key: str, entry: Mapping[str, Any], data: Mapping[str, Any], best: bool) -> Cell:
    if key == "bits":
        loglik = _finite(entry.get("loglik"))
        if loglik is None:
            return _text(DASH)
        return _text(f"{bits_per_dim(loglik, int(data['x_dim'])):.3f}", best=best)
    if key == "c2st":
        c2st = _mapping(entry.get("c2st"))
        acc = _finite(c2st.get("accuracy"))
        if acc is None:
            return _text(DASH)
        low, high = _finite(c2st.get("low")), _finite(c2st.get("high"))
        interval = "" if low is None or high is None else f" ({low:.2f}, {high:.2f})"
        return _text(f"{acc:.2f}{interval}")
    pr = _mapping(entry.get("precision_recall"))
    precision, recall = _finite(pr.get("precision")), _finite(pr.get("recall"))
    if precision is None and recall is None:
        return _text(DASH)
    return _text(f"{_fmt(precision)} / {_fmt(recall)}")


def sources_table(
    evaluation: Mapping[str, Any], data: Mapping[str, Any] | None = None
) -> Table | None:
    """The latent sources of one evaluation, one row each (None when there are none).

    ``data`` (:attr:`RunReport.data`) adds log p(x) in bits per dimension for 8-bit data;
    C2ST and precision/recall columns appear where the evaluation holds them."""
    sources = _sources(evaluation)
    if not sources:
        return None
    prior_ais = _mapping(_mapping(sources.get(PRIOR)).get("ais"))
    legacy = source_bdmc(evaluation, PRIOR)  # an old file's top-level gap was the prior's
    if prior_ais and legacy is not None and "bdmc" not in prior_ais:
        sources = {**sources, PRIOR: {**sources[PRIOR], "ais": {**prior_ais, "bdmc": legacy}}}
    header = [("source", False)] + [(label, True) for _, label, _, _ in _SOURCE_COLUMNS]
    if PRIOR in sources:
        header.insert(2, ("vs prior [nats]", True))
    best = _source_best(sources)
    data = _mapping(data)
    extra = _extra_columns(sources, data)
    header += [(_EXTRA_HEADERS[key], True) for key in extra]
    keys = ["source", "loglik"] + (["vs_prior"] if PRIOR in sources else [])
    keys += [key for key, *_ in _SOURCE_COLUMNS[1:]] + extra
    hidden = _unmeasured_columns(sources, data)
    shown = [i for i, key in enumerate(keys) if key not in hidden]

    def cells(name: str, entry: Mapping[str, Any]) -> list[Cell]:
        row = _source_cells(sources, name, best)
        row += [_extra_cell(k, entry, data, name in best["loglik"]) for k in extra]
        return [row[i] for i in shown]

    rows = [
        Row(cells(name, entry), "unreliable" if _unreliable(entry) else "")
        for name, entry in sources.items()
    ]
    header = [header[i] for i in shown]
    note = _sources_note(evaluation, sources)
    if "bits" in extra:
        note += (
            f" Bits per dimension: -log p(x) / (D ln 2) with D = {int(data['x_dim'])} values "
            "(lower is better), the unit of likelihoods of 8-bit images."
        )
    return Table(header, rows, "sources", note)


def _bars(values: Sequence[Any]) -> Cell:
    numbers = [_finite(v) for v in values]
    top = max((v for v in numbers if v is not None), default=0.0)
    bars = [
        (
            0.0 if v is None or top <= 0 else max(v, 0.0) / top * 100,
            f"z{d}: {_fmt(v)} nats",
        )
        for d, v in enumerate(numbers)
    ]
    return Cell(", ".join(_fmt(v) for v in numbers), numeric=False, bars=bars, colspan=2)


def surgery_table(surgery: Mapping[str, Any]) -> Table | None:
    """ELBO surgery: the average KL split into I(x; z) and the marginal KL."""
    if not surgery:
        return None
    conditional = bool(surgery.get("conditional_prior"))
    avg = _finite(surgery.get("avg_kl"))

    def pm(key: str, stderr_key: str) -> str:
        value, se = _finite(surgery.get(key)), _finite(surgery.get(stderr_key))
        if value is None and key == "mutual_information":
            value = _mutual_information(surgery)
        if value is None:
            return DASH
        return f"{value:.2f}" + (f" \u00b1 {se:.2f}" if se else "")

    def share(value: float | None) -> str:
        return DASH if value is None or avg is None or avg <= 0 else _pct(value / avg)

    kl_per_dim = surgery.get("kl_per_dim")
    kl_dims = kl_per_dim if isinstance(kl_per_dim, Sequence) and kl_per_dim else None
    z_dim = len(kl_dims) if kl_dims else None
    if z_dim is None and isinstance(surgery.get("activity"), Sequence):
        z_dim = len(surgery["activity"]) or None
    active = _finite(surgery.get("active_units"))
    active_text = DASH if active is None else str(int(active))
    if active is not None and z_dim is not None:
        active_text += f" of {z_dim}"
    marginal = "KL(q(z|y) || p(z|y)), per class" if conditional else "KL(q(z) || p(z))"
    rows_data = [
        (
            f"ELBO {_training_label(surgery)} (surgery)",
            _fmt(surgery.get("elbo")),
            "",
            "reconstruction \u2212 average KL",
        ),
        ("reconstruction", _fmt(surgery.get("reconstruction")), "", "E_q[log p(x | z)]"),
        (
            "average KL",
            pm("avg_kl", "avg_kl_stderr"),
            "100.0%" if avg and avg > 0 else DASH,
            "1/N \u2211 KL(q(z | x_n) || p(z))",
        ),
        (
            "marginal KL",
            pm("marginal_kl", "marginal_kl_stderr"),
            share(_finite(surgery.get("marginal_kl"))),
            marginal,
        ),
        (
            "mutual information",
            pm("mutual_information", "mutual_information_stderr"),
            share(_mutual_information(surgery)),
            "I(x; z | y)" if conditional else "I(x; z)",
        ),
        ("upper bound on I", _fmt(surgery.get("mi_upper_bound")), "", "log N"),
        ("active units", active_text, "", f"dims with Cov_n E[z_d | x_n] > {ACTIVITY_THRESHOLD:g}"),
    ]
    mi, bound = _mutual_information(surgery), _finite(surgery.get("mi_upper_bound"))
    outside = mi is not None and _mi_outside(mi, bound)
    rows = []
    for q, v, s, m in rows_data:
        flagged = outside and q == "mutual information"
        cells = [_text(q, numeric=False), _text(v), _text(s), _text(m, numeric=False)]
        if flagged:  # no true value lies outside [0, log N]: the estimate is wrong
            cells[0].badge = "outside [0, log N]"
        rows.append(Row(cells, "unreliable" if flagged else ""))
    if kl_dims:
        listed = ", ".join(_fmt(v) for v in kl_dims[:16]) + (ELLIPSIS if len(kl_dims) > 16 else "")
        rows.append(
            Row([_text("KL per dimension", numeric=False), _bars(kl_dims), _text(listed, False)])
        )
    header = [("quantity", False), ("nats", True), ("share of KL", True), ("meaning", False)]
    n = _finite(surgery.get("num_data"))
    note = "" if n is None else f"On N = {int(n):,} training {data_noun()}."
    return Table(header, rows, "surgery", note)


def metrics_tables(metrics: Sequence[Mapping[str, Any]] | None) -> tuple[Table, Table, int] | None:
    """The training summary, every epoch's row, and the number of epochs (None: no rows)."""
    rows = [m for m in metrics or [] if isinstance(m, Mapping)]
    if not rows:
        return None
    last = rows[-1]
    val = [(_finite(r.get("val_elbo")), r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    val = [(v, e) for v, e in val if v is not None]
    seconds = [_finite(r.get("seconds")) for r in rows]
    known = [s for s in seconds if s is not None]
    total = sum(known) if known else None
    summary = [
        ("epochs", str(last.get("epoch", len(rows)))),
        ("training ELBO (last epoch, running average)", _fmt(last.get("train_elbo"))),
        ("validation ELBO (last epoch, validation split)", _fmt(last.get("val_elbo"))),
        (
            "best validation ELBO (validation split)",
            DASH if not val else f"{max(val)[0]:.2f} (epoch {max(val, key=lambda t: t[0])[1]})",
        ),
        ("training time", DASH if total is None else f"{total:.1f} s"),
    ]
    accuracy = [(_finite(r.get("val_accuracy")), r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    accuracy = [(a, e) for a, e in accuracy if a is not None]
    if accuracy:  # a semi-supervised M2: its best checkpoint is the most accurate q(y | x)
        best, epoch = max(accuracy, key=lambda t: t[0])
        summary.insert(
            4, ("best validation accuracy of q(y | x)", f"{100 * best:.2f}% (epoch {epoch})")
        )
    columns = ("epoch", "train_elbo", "val_elbo", "labelled_elbo", "unlabelled_elbo")
    columns += ("val_accuracy", "kl_weight", "seconds")
    keys = [k for k in columns if k in last]
    digits = {"epoch": 0, "seconds": 1, "val_accuracy": 4}
    detail = Table(
        [(k, True) for k in keys],
        [Row([_text(_fmt(r.get(k), digits.get(k, 2))) for k in keys]) for r in rows],
    )
    head = Table(
        [("training", False), ("", True)],
        [Row([_text(k, numeric=False), _text(v)]) for k, v in summary],
        "metrics",
    )
    return head, detail, len(rows)


def _config_value(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, (list, tuple)):
        return ", ".join(_config_value(v) for v in value) or DASH
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_table(config: Mapping[str, Any]) -> Table | None:
    flat = _flatten(config)
    if not flat:
        return None
    rows = [Row([_text(k, False), _text(_config_value(v), False)]) for k, v in flat.items()]
    return Table([("setting", False), ("value", False)], rows, "config")


def summary_table(runs: Sequence[RunReport]) -> Table:
    """One row per run: its ELBO, log p(x), leading source and active units."""
    held_out = {_heldout_label(run.evaluation) for run in runs}
    elbo = f"ELBO, {held_out.pop()}" if len(held_out) == 1 else f"ELBO, held-out {data_noun()}"
    header = [
        ("run", False),
        ("z_dim", True),
        (elbo, True),
        ("log p(x)", True),
        ("leading source", False),
        ("its log p(x)", True),
        ("vs prior", True),
        ("active units", True),
    ]
    model = {run.name: _model_loglik(run.evaluation) for run in runs}
    best_model = set(_best(model, highest=True))
    rows = []
    for index, run in enumerate(runs):
        evaluation = run.evaluation
        best, gain = _best_source(evaluation), _gain(evaluation)
        leader = DASH
        if best is not None:
            leader = best[0] if len(best[2]) == 1 else f"{', '.join(best[2])} (tied)"
        z_dim = _z_dim(run)
        active = _finite(_mapping(evaluation.get("surgery")).get("active_units"))
        cells = [
            Cell(run.name, numeric=False, link=f"#{anchor(index, run.name)}"),
            _text(DASH if z_dim is None else str(z_dim)),
            _text(_fmt(evaluation.get("elbo"))),
            _text(_fmt(model[run.name]), best=run.name in best_model),
            _text(leader, numeric=False),
            _text(DASH if best is None else f"{best[1]:.2f}"),
            _text(DASH if gain is None else _gain_text(gain[1], gain[2])),
            _text(DASH if active is None else str(int(active))),
        ]
        rows.append(Row(cells))
    note = (
        f"ELBO and log p(x): on the evaluated held-out {data_noun()}, with the model's own prior; "
        "leading source: the latent source with the highest held-out log-likelihood, with "
        f"those within {Z95} standard errors of it as tied; vs prior: its difference to the "
        "prior \u00b1 1.96 standard errors."
    )
    return Table(header, rows, "summary", note)


def gaps_summary_table(runs: Sequence[RunReport]) -> Table | None:
    """Inference gaps of every run with (current) diagnostics, one row each."""
    rows = []
    for index, run in enumerate(runs):
        diag = run.diagnostics
        if not diag or diag.get("stale"):
            continue
        cells = {label: (mean, se) for label, mean, se in gap_table(diag)}
        values = [cells.get(label) for _, label in GAP_ROWS[3:]]
        row = [
            Cell(run.name, numeric=False, link=f"#{anchor(index, run.name)}"),
            _text(str(diag.get("num_data", DASH))),
            _text(f"{diag.get('flagged', 0)} of {diag.get('num_reference', DASH)}"),
            _text(_pct(_finite(diag.get("coverage_90_mean")))),
        ]
        row += [_text(DASH if v is None else f"{v[0]:.2f} \u00b1 {_fmt(v[1])}") for v in values]
        rows.append(Row(row))
    if not rows:
        return None
    header = [("run", False), (data_noun(), True), ("NUTS flagged", True), ("90% coverage", True)]
    header += [("total gap", True), ("approximation gap", True), ("amortization gap", True)]
    note = (
        f"From pyrovae diagnose: per {data_noun(plural=False)}, nats, mean \u00b1 standard error "
        f"over {data_noun()}; 90% "
        "coverage: the share of NUTS posterior draws inside the guide's central 90% "
        "intervals (0.9 for a guide whose marginals match)."
    )
    return Table(header, rows, "summary", note)
