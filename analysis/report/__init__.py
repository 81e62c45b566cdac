"""A self-contained HTML report of trained runs: tables, conclusions and embedded figures.

The report answers the library's question with numbers and pictures: should new data be
drawn from the prior N(0, I) or from the aggregated posterior q(z) (or a Gaussian, mixture
or flow fitted to it)? It takes plain data, so it does not care how the numbers and
figures were produced:

- ``evaluation``: the JSON of ``pyrovae evaluate``, ``{"sources": {name: {"loglik",
  "stderr", "khat_gt_0.7", "entropy", "ambiguous", "coverage_kl", "frechet"}}, "surgery":
  {"avg_kl", "marginal_kl", "mutual_information", "active_units", "kl_per_dim", ...},
  "elbo", "loglik", "num_samples", "split"}``. Any field may be missing or None; it is
  shown as "—" and left out of the conclusions.
- ``figures``: title -> PNG file, embedded as base64 ``data:`` URIs.
- ``metrics``: the rows of ``metrics.csv``.
- ``diagnostics``: the ``pyrovae diagnose`` JSON, shown as "Inference quality".

Modules: :mod:`.run` (:class:`RunReport`), :mod:`.numbers` (reading the numbers),
:mod:`.conclusions` and :mod:`.cross_run` (the sentences, no HTML), :mod:`.render` (view
data for ``templates/report.html``, a Jinja2 template with autoescaping, and
``report.css``). The page has no scripts and fetches nothing, so it can be mailed,
archived or opened offline.

Example:
    >>> run = RunReport("vae-z2", config={"z_dim": 2}, evaluation=evaluation,
    ...                 figures={"Latent space": "latent.png"})
    >>> write_report([run], "reports/")  # -> reports/report.html
"""

from pyrovae.analysis.report.conclusions import conclusions
from pyrovae.analysis.report.cross_run import cross_run_conclusions
from pyrovae.analysis.report.render import REPORT_FILENAME, render_report, write_report
from pyrovae.analysis.report.run import RunReport

__all__ = [
    "RunReport",
    "conclusions",
    "cross_run_conclusions",
    "render_report",
    "write_report",
    "REPORT_FILENAME",
]
