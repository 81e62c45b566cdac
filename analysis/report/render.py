"""The report as HTML: the numbers as tables of cells, rendered by a Jinja2 template.

Functions here turn runs into plain view data (:class:`Table`, :class:`Row`,
:class:`Cell`, sentences, embedded images); ``templates/report.html`` lays them out, with
autoescaping on (no string is written into the page unescaped), and ``report.css`` is
inlined into it. The page is one self-contained file: no scripts, no fonts or images
fetched from anywhere, every figure a base64 ``data:`` URI.
"""

from __future__ import annotations

import base64
import datetime as _dt
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from pyrovae.analysis.posterior.inference_quality import gap_table, inference_conclusions
from pyrovae.analysis.report.conclusions import conclusions
from pyrovae.analysis.report.cross_run import (
    _check_runs,
    cross_run_conclusions,
)
from pyrovae.analysis.report.numbers import (
    IMAGE_NOUNS,
    VECTOR_NOUNS,
    _fmt,
    _mapping,
    data_noun,
    nouns_of,
    speaking_of,
)
from pyrovae.analysis.report.run import RunReport
from pyrovae.analysis.report.tables import (
    Cell,
    Row,
    Table,
    _findings,
    _text,
    anchor,
    config_table,
    gaps_summary_table,
    metrics_tables,
    sources_table,
    summary_table,
    surgery_table,
)
from pyrovae.checkpoint import atomic_write_text

__all__ = ["REPORT_FILENAME", "Cell", "Row", "Table", "render_report", "write_report"]

REPORT_FILENAME = "report.html"
"""Name of the file :func:`write_report` writes in ``out_dir``."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Image = tuple[str, str, int, int]
"""An embedded figure: (title, data URI, width, height)."""


@dataclass
class Section:
    """One run of the page."""

    anchor: str
    name: str
    description: str
    config: Table | None
    metrics: tuple[Table, Table, int] | None
    findings: list[tuple[str, bool]]
    sources: Table | None
    surgery: Table | None
    inference: dict[str, Any] | None
    figures: list[Image] = field(default_factory=list)
    notes: Sequence[str] = ()


# ---------------------------------------------------------------------------- figures


def _png(data: bytes, where: str) -> tuple[str, int, int]:
    """``data`` as a data URI with its pixel width and height (checked to be a PNG)."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError(
            f"{where} is not a PNG image; save figures as PNG, e.g. fig.savefig(path, format='png')"
        )
    width, height = struct.unpack(">II", data[16:24])
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height


def _read_figure(run: RunReport, title: str, source: Any) -> tuple[str, int, int]:
    where = f"figures[{title!r}] of run {run.name!r}"
    if isinstance(source, (bytes, bytearray)):
        return _png(bytes(source), where)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"{where} must be a path to a PNG file (or PNG bytes), got {type(source).__name__}"
        )
    path = Path(source)
    if not path.is_file():
        raise ValueError(
            f"{where}: file {str(path)!r} does not exist; write the figure first "
            "(e.g. pyrovae.analysis.figures.save_figure) or drop it from figures"
        )
    return _png(path.read_bytes(), f"{where} ({str(path)!r})")


def _images(run: RunReport, figures: Mapping[str, Any]) -> list[Image]:
    return [(str(t), *_read_figure(run, str(t), src)) for t, src in figures.items()]


# ----------------------------------------------------------------------------- tables


def inference_view(run: RunReport) -> dict[str, Any] | None:
    """The "Inference quality" section: sentences, the gap table and the figures."""
    diagnostics = run.diagnostics
    if not diagnostics:
        return None
    rows = [
        Row([_text(label, numeric=False), _text(f"{mean:.2f}"), _text(_fmt(se))])
        for label, mean, se in gap_table(diagnostics)
    ]
    table = (
        Table([(f"per {data_noun(plural=False)}, nats", False), ("mean", True), ("SE", True)], rows)
        if rows
        else None
    )
    paths = diagnostics.get("figure_paths")
    images = _images(run, paths) if isinstance(paths, Mapping) else []
    return {
        "findings": _findings(inference_conclusions(diagnostics)),
        "table": table,
        "figures": images,
    }


# ------------------------------------------------------------------------------- page


def _section(index: int, run: RunReport) -> Section:
    with speaking_of(nouns_of(run.data)):
        return Section(
            anchor=anchor(index, run.name),
            name=run.name,
            description=run.description,
            config=config_table(run.config),
            metrics=metrics_tables(run.metrics),
            findings=_findings(conclusions(run.evaluation)),
            sources=sources_table(run.evaluation, run.data),
            surgery=surgery_table(_mapping(run.evaluation.get("surgery"))),
            inference=inference_view(run),
            figures=_images(run, run.figures),
            notes=run.notes,
        )


def _common_nouns(runs: Sequence[RunReport]) -> tuple[str, str]:
    """Images when every run is of images, data points otherwise."""
    return IMAGE_NOUNS if all(nouns_of(r.data) == IMAGE_NOUNS for r in runs) else VECTOR_NOUNS


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pyrovae.analysis.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _css() -> str:
    return (
        resources.files("pyrovae.analysis.report").joinpath("report.css").read_text("utf-8").strip()
    )


def render_report(runs: Sequence[RunReport], title: str = "pyrovae report") -> str:
    """The report as one HTML string (what :func:`write_report` writes).

    Useful in a notebook: ``IPython.display.HTML(render_report(runs))``.

    Raises:
        ValueError: for an empty ``runs``, duplicate run names, or a figure that is missing
            or not a PNG.
    """
    from pyrovae import __version__

    runs = _check_runs(runs)
    sections = [_section(i, run) for i, run in enumerate(runs)]
    many = len(runs) > 1
    with speaking_of(_common_nouns(runs)):
        summary = summary_table(runs) if many else None
        summary_findings = _findings(cross_run_conclusions(runs)) if many else []
        gaps = gaps_summary_table(runs) if many else None
    bits = any(_mapping(r.data).get("kind") == "8-bit" for r in runs)
    return (
        _environment()
        .get_template("report.html")
        .render(
            title=title,
            css=_css(),
            generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            version=__version__,
            num_runs=len(runs),
            nav=[(s.anchor, s.name) for s in sections] if many else [],
            summary=summary,
            summary_findings=summary_findings,
            gaps=gaps,
            sections=sections,
            bits=bits,
        )
    )


def write_report(
    runs: Sequence[RunReport], out_dir: str | os.PathLike[str], title: str = "pyrovae report"
) -> Path:
    """Write ``out_dir/report.html`` (atomically) for ``runs``; return its path.

    Every figure is embedded, so the file is all that needs sharing. ``out_dir`` is created
    when missing. Raises ValueError as :func:`render_report` does, before writing anything.
    """
    if isinstance(out_dir, (bytes, bytearray)) or not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a directory path, got {type(out_dir).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} is a file; pass a directory for {REPORT_FILENAME}")
    text = render_report(runs, title)
    path = out / REPORT_FILENAME
    atomic_write_text(path, text)
    return path
