"""Tests of pyrovae.analysis.report: computed conclusions, the HTML, and that it renders."""

from __future__ import annotations

import base64
import copy
import math
import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from pyrovae.analysis.report import (
    REPORT_FILENAME,
    RunReport,
    conclusions,
    cross_run_conclusions,
    render_report,
    write_report,
)


def _source(loglik, stderr=0.4, khat=0.01, entropy=0.5, ambiguous=0.2, coverage=0.05, frechet=10.0):
    return {
        "converged": True,  # L_K stopped rising in K: importance sampling may decide
        "loglik": loglik,
        "stderr": stderr,
        "khat_gt_0.7": khat,
        "entropy": entropy,
        "ambiguous": ambiguous,
        "coverage_kl": coverage,
        "frechet": frechet,
    }


SIG = "significant: importance sampling puts it beyond"
"""The verdict on a difference that converged importance sampling shows."""


def _evaluation() -> dict:
    return {
        "sources": {
            "prior": _source(-100.0, entropy=0.6, ambiguous=0.25, coverage=0.08, frechet=20.0),
            "aggregate": _source(-98.5, entropy=0.3, ambiguous=0.10, coverage=0.02, frechet=9.0),
            "gmm": _source(-97.5, entropy=0.4, ambiguous=0.15, coverage=0.04, frechet=7.0),
        },
        "surgery": {
            "reconstruction": -92.0,
            "avg_kl": 8.0,
            "avg_kl_stderr": 0.0,
            "marginal_kl": 2.0,
            "marginal_kl_stderr": 0.05,
            "mutual_information": 6.0,
            "mi_upper_bound": 10.82,
            "active_units": 3,
            "kl_per_dim": [4.0, 3.0, 1.0, 0.0],
            "elbo": -100.0,
            "num_data": 50000,
        },
        "elbo": -104.0,
        "loglik": -100.0,
        "num_samples": 1000,
        "split": "test",
    }


def _first(sentences: list[str], word: str) -> str:
    return next(s for s in sentences if word in s)


def _png(path: Path, color: str = "C0") -> Path:
    fig = Figure(figsize=(1.6, 1.2), dpi=50)
    fig.add_subplot().plot([0, 1, 2], [0, 2, 1], color=color)
    fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------ conclusions


def test_conclusions_names_best_source_and_significance():
    sentences = conclusions(_evaluation())
    best = _first(sentences, "highest held-out log-likelihood")
    # gmm leads aggregate by 1.00 nats, within 1.96 x 0.57: tied, no best is named
    assert "from gmm gives" not in best and "The leading sources are tied" in best
    assert "gmm (-97.50 \u00b1 0.40) and aggregate (-98.50 \u00b1 0.40)" in best
    assert "+2.50 nats over the prior" in best
    assert SIG in best and "not significant" not in best
    # both standard errors combined: sqrt(0.4^2 + 0.4^2)
    assert f"{math.hypot(0.4, 0.4):.2f}" in best

    evaluation = _evaluation()
    evaluation["sources"]["aggregate"]["loglik"] = -99.0  # now 1.50 behind gmm: beaten
    best = _first(conclusions(evaluation), "highest held-out log-likelihood")
    assert "from gmm gives" in best and "+2.50 nats over the prior" in best
    assert SIG in best and "1.50 nats above the runner-up aggregate" in best


def test_conclusions_follow_the_numbers():
    evaluation = _evaluation()
    evaluation["sources"]["aggregate"]["loglik"] = -96.0
    assert "from aggregate gives" in _first(conclusions(evaluation), "highest held-out")

    evaluation = _evaluation()
    evaluation["sources"]["gmm"]["loglik"] = -99.5  # 0.5 over the prior, SE 0.57
    evaluation["sources"]["aggregate"]["loglik"] = -99.6
    best = _first(conclusions(evaluation), "highest held-out")
    assert "from gmm gives" not in best and "tied" in best  # all three within error
    assert "+0.50 nats" in best and "not significant" in best
    assert "gmm +0.50 nats over the prior" in best and "indistinguishable from the prior" in best

    evaluation["sources"]["gmm"]["vs_prior"] = 0.5  # a paired difference is more precise
    evaluation["sources"]["gmm"]["vs_prior_stderr"] = 0.1
    best = _first(conclusions(evaluation), "highest held-out")
    assert "paired" in best and SIG in best

    evaluation = _evaluation()
    evaluation["sources"]["prior"]["loglik"] = -90.0
    best = _first(conclusions(evaluation), "highest held-out")
    assert "the prior itself" in best and "gmm, is 7.50 nats lower" in best


def test_conclusions_sample_quality_winners():
    sentences = conclusions(_evaluation())
    aggregate = _first(sentences, "least ambiguous")
    assert aggregate.startswith("Drawing z from aggregate")
    assert "10.0%" in aggregate and "prior 25.0%" in aggregate
    assert "lowest classifier entropy" in aggregate
    assert "lowest Frechet distance" in _first(sentences, "from gmm gives the lowest")

    evaluation = _evaluation()
    evaluation["sources"]["prior"]["frechet"] = 1.0
    assert "from prior gives the lowest Frechet" in " ".join(conclusions(evaluation))


@pytest.mark.parametrize(
    "fraction, warned", [(0.0, False), (0.1, False), (0.11, True), (0.6, True)]
)
def test_unreliable_warning_only_for_large_khat_fraction(fraction, warned):
    evaluation = _evaluation()
    evaluation["sources"]["aggregate"]["khat_gt_0.7"] = fraction
    warnings = [s for s in conclusions(evaluation) if "unreliable" in s]
    assert bool(warnings) == warned
    if warned:
        assert warnings == [w for w in warnings if "estimate for aggregate is unreliable" in w]
        assert f"{100 * fraction:.0f}%" in warnings[0]


def test_khat_flag_from_the_evaluation_wins():
    evaluation = _evaluation()
    evaluation["sources"]["gmm"]["khat_flag"] = True
    assert any("estimate for gmm is unreliable" in s for s in conclusions(evaluation))
    evaluation["sources"]["prior"]["khat_gt_0.7"] = 0.52
    warnings = [s for s in conclusions(evaluation) if "unreliable" in s]
    assert len(warnings) == 1 and "estimates for prior (52%) and gmm" in warnings[0]
    best = _first(conclusions(evaluation), "highest held-out")
    assert "k-hat warning" in best


def test_conclusions_surgery_and_active_units():
    sentences = conclusions(_evaluation())
    surgery = _first(sentences, "ELBO surgery")
    assert "25% of the KL term (8.00 nats)" in surgery
    assert "marginal KL(q(z) || p(z)) = 2.00 nats" in surgery
    assert "6.00 nats, is the mutual information I(x; z)" in surgery
    assert "3 of 4 latent dimensions are active" in _first(sentences, "active")
    assert "4.00 nats above the ELBO" in _first(sentences, "ELBO (")

    evaluation = _evaluation()
    del evaluation["surgery"]["mutual_information"]  # computed as avg_kl - marginal_kl
    evaluation["surgery"]["avg_kl"] = 10.0
    evaluation["surgery"]["conditional_prior"] = True
    surgery = _first(conclusions(evaluation), "ELBO surgery")
    assert "20% of the KL term" in surgery and "8.00 nats" in surgery
    assert "KL(q(z|y) || p(z|y))" in surgery and "I(x; z | y)" in surgery


def _damaged() -> list[dict]:
    full = _evaluation()
    none_everywhere = copy.deepcopy(full)
    for entry in none_everywhere["sources"].values():
        for key in entry:
            entry[key] = None
    none_everywhere["surgery"] = {k: None for k in full["surgery"]}
    nan = copy.deepcopy(full)
    nan["sources"]["gmm"].update(loglik=float("nan"), frechet=float("inf"))
    return [
        {},
        {"sources": None, "surgery": None, "elbo": None},
        {"sources": {"prior": {}}},
        {"sources": {"prior": None, "gmm": {"loglik": -1.0}}},
        {"sources": {"gmm": {"loglik": -1.0, "stderr": None}, "flow": {"loglik": -2.0}}},
        {"surgery": {"avg_kl": None, "marginal_kl": 1.0, "kl_per_dim": []}},
        {"surgery": {"avg_kl": 0.0, "marginal_kl": 0.0, "active_units": 0}},
        {"surgery": {"active_units": 2}},
        none_everywhere,
        nan,
    ]


@pytest.mark.parametrize("evaluation", _damaged())
def test_missing_fields_do_not_crash(evaluation, tmp_path):
    sentences = conclusions(evaluation)
    assert all(isinstance(s, str) and s for s in sentences)
    run = RunReport("partial", evaluation=evaluation, metrics=[{"epoch": 1, "val_elbo": None}])
    text = write_report([run, RunReport("other")], tmp_path).read_text(encoding="utf-8")
    assert "partial" in text and "nan" not in text.lower().replace("nats", "")


def test_none_sources_is_dash_in_table():
    text = render_report([RunReport("r", evaluation={"sources": {"gmm": {"loglik": None}}})])
    row = re.search(r"<tr><td>gmm</td>(.*?)</tr>", text).group(1)
    assert row.count("\u2014") == 9  # every value column (no prior: no "vs prior" column)


def test_conclusions_reject_non_dict():
    with pytest.raises(ValueError, match="evaluation must be a dict"):
        conclusions([1, 2])
    assert conclusions(None) == []


# ------------------------------------------------------------------- cross-run summary


def test_cross_run_conclusions():
    small, large = _evaluation(), _evaluation()
    large["loglik"] = -95.0
    large["sources"]["prior"]["loglik"] = -95.0
    large["sources"]["gmm"]["loglik"] = -94.0
    runs = [
        RunReport("vae-a", config={"model": {"z_dim": 2}}, evaluation=small),
        RunReport("vae-b", config={"z_dim": 10}, evaluation=large),
    ]
    sentences = cross_run_conclusions(runs)
    assert sentences[0].startswith("vae-b has the best held-out log-likelihood")
    assert "5.00 nats above vae-a" in sentences[0]
    assert "from gmm in vae-b" in _first(sentences, "Over all runs")
    consistent = _first(sentences, "best source")
    assert "gmm in every run" in consistent and "(z_dim 2)" in consistent
    assert "vae-a (z_dim 2) +2.50" in _first(sentences, "Gain")

    large["sources"]["aggregate"]["loglik"] = -90.0
    assert "differs between runs" in " ".join(cross_run_conclusions(runs))

    assert not any("Unreliable" in s for s in cross_run_conclusions(runs))
    small["sources"]["gmm"]["khat_gt_0.7"] = 0.5
    for entry in large["sources"].values():
        entry["khat_gt_0.7"] = 0.9
    unreliable = _first(cross_run_conclusions(runs), "Unreliable")
    assert unreliable.endswith("vae-a (gmm), vae-b (every source).")
    with pytest.raises(ValueError, match="non-empty list of RunReport"):
        cross_run_conclusions([])


# ------------------------------------------------------------------------ write_report


def test_write_report_embeds_figures_and_tables(tmp_path):
    figures = {
        "Latent space <by class>": _png(tmp_path / "latent.png"),
        "Samples & prior": str(_png(tmp_path / "samples.png", "C3")),
    }
    evaluation = _evaluation()
    evaluation["sources"]["aggregate"]["khat_gt_0.7"] = 0.4
    metrics = [
        {"epoch": e, "train_elbo": -110.0 + e, "val_elbo": -109.0 + e, "seconds": 2.5}
        for e in (1, 2, 3)
    ]
    runs = [
        RunReport(
            "vae-z2 <b>",
            "VAE & friends",
            {"model": {"z_dim": 2, "hidden_dims": [256, 128]}, "train": {"lr": 1e-3}},
            evaluation,
            figures,
            metrics,
        ),
        RunReport("vae-z10", evaluation=_evaluation(), figures={"z10": figures["Samples & prior"]}),
    ]
    out = tmp_path / "new" / "dir"
    path = write_report(runs, out, title="My <report>")
    assert path == out / REPORT_FILENAME
    assert sorted(p.name for p in out.iterdir()) == [REPORT_FILENAME]  # no temp file left
    text = path.read_text(encoding="utf-8")

    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == 3 == text.count("<img")
    assert base64.b64decode(uris[0]) == (tmp_path / "latent.png").read_bytes()
    assert base64.b64decode(uris[1]) == (tmp_path / "samples.png").read_bytes()
    for bad in ('src="http', 'href="http', "<script", "<link", "url(", str(tmp_path), "file:"):
        assert bad not in text
    # text is escaped
    assert "vae-z2 &lt;b&gt;" in text and "<b>" not in text
    assert "My &lt;report&gt;" in text and "Latent space &lt;by class&gt;" in text
    assert "<figcaption>Samples &amp; prior</figcaption>" in text
    # the sources table: best values in bold, the unreliable row flagged
    assert '<td class="n best">-97.50 \u00b1 0.40</td>' in text
    assert '<tr class="unreliable"><td>aggregate<span class="badge">unreliable</span>' in text
    assert '<td class="n best">10.0%</td>' in text  # least ambiguous, aggregate
    assert "<td>model.hidden_dims</td><td>256, 128</td>" in text
    # surgery, training summary and the cross-run summary
    assert "25.0%" in text and "3 of 4" in text
    assert "-106.00 (epoch 3)" in text and "7.5 s" in text
    assert "Summary across runs" in text and 'href="#run-1-vae-z10"' in text
    assert text.count("<section") == 3


def test_write_report_one_run_has_no_summary(tmp_path):
    text = write_report([RunReport("solo", evaluation=_evaluation())], tmp_path).read_text()
    assert "Summary across runs" not in text and "Drawing z from gmm" in text


def test_write_report_bad_input(tmp_path):
    with pytest.raises(ValueError, match="non-empty list of RunReport"):
        write_report([], tmp_path)
    with pytest.raises(ValueError, match=r"runs\[0\] must be a RunReport"):
        write_report([{"name": "x"}], tmp_path)
    missing = tmp_path / "nope.png"
    with pytest.raises(ValueError, match=r"figures\['f'\] of run 'r'.*nope\.png.*does not exist"):
        write_report([RunReport("r", figures={"f": missing})], tmp_path)
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(ValueError, match="is not a PNG image"):
        write_report([RunReport("r", figures={"f": tmp_path / "fake.png"})], tmp_path)
    with pytest.raises(ValueError, match="unique"):
        write_report([RunReport("r"), RunReport("r")], tmp_path)
    with pytest.raises(ValueError, match="non-empty string"):
        RunReport("")
    with pytest.raises(ValueError, match="evaluation of run 'r' must be a dict"):
        RunReport("r", evaluation=[1])
    with pytest.raises(ValueError, match="is a file"):
        write_report([RunReport("r")], tmp_path / "fake.png")
    assert not (tmp_path / REPORT_FILENAME).exists()


# ----------------------------------------------------------------------- the render test


def test_report_renders_in_chromium(tmp_path, chromium):
    figures = {f"figure {i}": _png(tmp_path / f"f{i}.png", f"C{i}") for i in range(3)}
    runs = [
        RunReport("vae-z2", config={"z_dim": 2}, evaluation=_evaluation(), figures=figures),
        RunReport("vae-z4", evaluation=_evaluation(), figures={"again": figures["figure 0"]}),
    ]
    page = write_report(runs, tmp_path / "out")
    loaded, total, fetched = chromium.count_images(page)
    assert total == 4 and loaded == total, f"{loaded} of {total} images loaded"
    assert fetched == 0, "the report fetched something that is not a data URI"

    shot = tmp_path / "shot.png"
    chromium.run("--window-size=1000,1400", f"--screenshot={shot}", page.as_uri())
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"


def test_ambiguous_winner_needs_to_be_outside_binomial_error():
    evaluation = _evaluation()
    sentences = conclusions(evaluation)
    assert any("the least ambiguous samples" in s for s in sentences)  # no intervals: as is
    for name, share in [("prior", 0.25), ("aggregate", 0.10), ("gmm", 0.12)]:
        entry = evaluation["sources"][name]
        entry["ambiguous"] = share
        entry["ambiguous_low"], entry["ambiguous_high"] = share - 0.03, share + 0.03
    sentences = conclusions(evaluation)
    assert not any("the least ambiguous samples" in s for s in sentences)
    tie = _first(sentences, "No source gives clearly fewer ambiguous samples")
    assert "aggregate (10.0%)" in tie
    evaluation["sources"]["gmm"].update(ambiguous=0.2, ambiguous_low=0.17, ambiguous_high=0.23)
    assert any("the least ambiguous samples" in s for s in conclusions(evaluation))


def test_surgery_at_two_data_set_sizes():
    evaluation = _evaluation()
    assert not any("On N =" in s for s in conclusions(evaluation))
    evaluation["surgery_subset"] = {
        "num_data": 5000,
        "avg_kl": 8.0,
        "marginal_kl": 0.5,
        "mutual_information": 7.5,
        "mi_upper_bound": math.log(5000),
    }
    sentence = _first(conclusions(evaluation), "On N =")
    assert "N = 50000" in sentence and "on N = 5000, 0.50 and 7.50" in sentence
    assert "depends on N" in sentence  # I = 7.5 of log 5000 = 8.5: near the bound
    evaluation["surgery_subset"]["mutual_information"] = 2.0
    evaluation["surgery"]["mutual_information"] = 2.0
    assert "hardly depends on N" in _first(conclusions(evaluation), "On N =")


def test_spread_between_seeds_is_stated():
    a, b = _evaluation(), _evaluation()
    b["sources"]["prior"]["loglik"] = -101.0
    b["loglik"] = -101.0
    runs = [RunReport("vae-z2-s0", evaluation=a), RunReport("vae-z2-s1", evaluation=b)]
    sentence = _first(cross_run_conclusions(runs), "Across 2 seeds")
    assert "of vae-z2" in sentence and "-101.00 to -100.00 nats (a spread of 1.00)" in sentence
    assert "gmm +2.50, gmm +3.50" in sentence
    single = [RunReport("vae-z2", evaluation=a), RunReport("vae-z5", evaluation=b)]
    assert not any("seeds" in s for s in cross_run_conclusions(single))


# ------------------------------------------------------------ never overstate a finding


def test_equal_coverage_is_a_tie_not_a_most_even_claim():
    evaluation = _evaluation()
    evaluation["sources"]["prior"]["coverage_kl"] = 0.012  # "0.01" as shown, like flow's
    evaluation["sources"]["aggregate"]["coverage_kl"] = 0.011
    sentences = conclusions(evaluation)
    assert not any("the most even class coverage" in s for s in sentences)
    tie = _first(sentences, "more even class coverage")
    assert tie.startswith("No source gives clearly more even class coverage than the prior")
    assert "aggregate (0.01 nats) and prior (0.01 nats) are tied" in tie
    assert "equal at the precision shown" in tie

    evaluation["sources"]["prior"]["coverage_kl"] = 0.08
    evaluation["sources"]["gmm"]["coverage_kl"] = 0.014  # tied with aggregate, not the prior
    tie = _first(conclusions(evaluation), "more even class coverage")
    assert "the leading sources aggregate (0.01 nats) and gmm (0.01 nats) are tied" in tie
    assert tie.endswith("prior 0.08 nats.")


def test_ambiguous_intervals_from_the_number_of_samples():
    evaluation = _evaluation()
    for name, share in [("prior", 0.25), ("aggregate", 0.10), ("gmm", 0.11)]:
        evaluation["sources"][name].update(ambiguous=share, num_quality_samples=100)
    sentences = conclusions(evaluation)
    assert not any("the least ambiguous samples" in s for s in sentences)
    assert "their 95% intervals overlap" in _first(sentences, "fewer ambiguous samples")
    for entry in evaluation["sources"].values():
        entry["num_quality_samples"] = 100_000  # intervals of +-0.2%: 10% beats 11%
    assert any("the least ambiguous samples (10.0%" in s for s in conclusions(evaluation))


def test_difference_within_error_is_no_difference():
    evaluation = _evaluation()
    evaluation["sources"]["aggregate"]["loglik"] = -110.0
    evaluation["sources"]["gmm"].update(loglik=-99.7, vs_prior=0.3, vs_prior_stderr=0.2)
    best = _first(conclusions(evaluation), "highest held-out")
    assert "from gmm gives" not in best and "The leading sources are tied" in best
    assert "gmm +0.30 nats over the prior" in best
    assert "not significant: importance sampling puts it within 1.96 standard errors" in best
    assert "so it is indistinguishable from the prior" in best and SIG not in best

    runs = [RunReport("a", evaluation=evaluation), RunReport("b", evaluation=_evaluation())]
    gain = _first(cross_run_conclusions(runs), "Gain")
    assert f"a (z_dim 4) +0.30 \u00b1 {1.96 * 0.2:.2f} (no difference)" in gain
    assert gain.endswith(f"b (z_dim 4) +2.50 \u00b1 {1.96 * math.hypot(0.4, 0.4):.2f}.")


def test_clear_difference_is_still_a_finding():
    evaluation = _evaluation()
    for entry in evaluation["sources"].values():
        entry["stderr"] = 0.1
    evaluation["sources"]["gmm"].update(vs_prior=2.5, vs_prior_stderr=0.1)
    sentences = conclusions(evaluation)
    best = _first(sentences, "highest held-out")
    assert best.startswith("Drawing z from gmm gives the highest held-out log-likelihood")
    assert "+2.50 nats over the prior" in best and SIG in best
    assert "1.00 nats above the runner-up aggregate" in best and "tied" not in best
    assert "the most even class coverage (0.02 nats; prior 0.08 nats)" in " ".join(sentences)
    assert not any("No source gives clearly" in s for s in sentences)


def test_every_estimate_flagged_gives_advice():
    evaluation = _evaluation()
    assert not any("--num-samples" in s for s in conclusions(evaluation))
    evaluation["sources"]["prior"]["khat_flag"] = True
    evaluation["sources"]["gmm"]["khat_flag"] = True
    evaluation["sources"]["aggregate"]["converged"] = False
    advice = _first(conclusions(evaluation), "--num-samples")
    assert "no comparison between these sources can be trusted" in advice
    assert "--guide flow" in advice and "--ais-num-test N" in advice
    text = render_report([RunReport("r", evaluation=evaluation)])
    assert '<li class="warn">Every held-out log-likelihood estimate here is unreliable' in text

    runs = [RunReport("r", evaluation=evaluation), RunReport("s", evaluation=_evaluation())]
    advice = _first(cross_run_conclusions(runs), "--num-samples")
    assert advice.startswith("In r every source is flagged")

    evaluation["sources"]["aggregate"]["converged"] = True  # one trustworthy row: no advice
    assert not any("--num-samples" in s for s in conclusions(evaluation))


def test_cross_run_ties_are_not_a_best_run():
    a, b = _evaluation(), _evaluation()
    b["loglik"] = b["sources"]["prior"]["loglik"] = -99.5  # 0.5 above, within 1.96 x 0.57
    runs = [RunReport("vae-a", evaluation=a), RunReport("vae-b", evaluation=b)]
    first = cross_run_conclusions(runs)[0]
    assert first.startswith("No run has clearly the best held-out log-likelihood")
    assert "vae-b (-99.50) and vae-a (-100.00) are tied" in first
    consistent = _first(cross_run_conclusions(runs), "best source")
    assert "not a clear best source in vae-a (z_dim 4) and vae-b (z_dim 4)" in consistent
    assert "tied within 1.96 standard errors with aggregate in vae-a (z_dim 4)" in consistent


def test_table_bolds_every_value_tied_with_the_best():
    text = render_report([RunReport("r", evaluation=_evaluation())])
    assert '<td class="n best">-97.50 \u00b1 0.40</td>' in text
    assert '<td class="n best">-98.50 \u00b1 0.40</td>' in text  # tied with gmm
    assert '<td class="n">-100.00 \u00b1 0.40</td>' in text  # beaten by gmm


# ------------------------------------------------------- every ELBO says on what data


def test_every_elbo_names_its_data():
    evaluation = _evaluation()
    evaluation["num_test"] = 500
    gap = _first(conclusions(evaluation), "above the ELBO")
    assert "log p(x) on 500 test images with K = 1000 draws" in gap
    assert "ELBO (-104.00, on the same images)" in gap
    surgery = _first(conclusions(evaluation), "ELBO surgery")
    assert surgery.startswith("ELBO surgery on 50,000 training images:")

    metrics = [{"epoch": 1, "train_elbo": -110.0, "val_elbo": -109.0}]
    text = render_report(
        [
            RunReport("a", evaluation=evaluation, metrics=metrics),
            RunReport("b", evaluation=evaluation),
        ]
    )
    assert "<td>ELBO on 50,000 training images (surgery)</td>" in text
    assert "<td>training ELBO (last epoch, running average)</td>" in text
    assert "<td>validation ELBO (last epoch, validation split)</td>" in text
    assert "<td>best validation ELBO (validation split)</td>" in text
    assert '<th class="n">ELBO, 500 test images</th>' in text
    assert "On 500 test images; K = 1000" in text
    assert ">ELBO<" not in text and "final train ELBO" not in text


# ----------------------------------------------------------------- figure file names


@pytest.mark.parametrize(
    "title, name",
    [
        (
            "Reconstructions (test inputs above, reconstructions below)",
            "01-reconstructions-test-inputs-above.png",
        ),
        ("CVAE: style of digit 9 around z = 0", "01-cvae-style-of-digit-9-around-z-0.png"),
        (
            "Held-out log-likelihood relative to the prior",
            "01-held-out-log-likelihood-relative.png",
        ),
        ("L_K against K  --  AIS", "01-l-k-against-k-ais.png"),
        ("Échantillons à partir du prior", "01-echantillons-a-partir-du-prior.png"),
        ("***", "01-figure.png"),
        ("x" * 60, "01-" + "x" * 40 + ".png"),
    ],
)
def test_figure_file_names_are_whole_words(title, name):
    from pyrovae.analysis.report.run_figures import SLUG_LENGTH, figure_filename

    out = figure_filename(1, title)
    assert out == name
    stem = out.removesuffix(".png").split("-", 1)[1]
    assert len(stem) <= SLUG_LENGTH and "--" not in stem and not stem.endswith("-")
    assert re.fullmatch(r"[a-z0-9-]+", stem)


def test_figure_file_names_are_unique_and_numbered():
    from pyrovae.analysis.report.run_figures import figure_filename

    titles = ["Samples from each latent source", "Samples from each latent source (again)"]
    names = [figure_filename(i, t, max_length=20) for i, t in enumerate(titles)]
    assert names == ["00-samples-from-each.png", "01-samples-from-each.png"]
    assert len(set(names)) == 2


def test_paired_errors_bound_the_difference_between_two_sources():
    # large spread between images (stderr 3.5) but tight paired differences to the prior:
    # se(gmm - flow) <= 0.1 + 0.1, so 2.00 nats apart is beyond 1.96 standard errors
    evaluation = _evaluation()
    del evaluation["sources"]["aggregate"]
    for entry in evaluation["sources"].values():
        entry["stderr"] = 3.5
    evaluation["sources"]["gmm"].update(loglik=-95.0, vs_prior=5.0, vs_prior_stderr=0.1)
    evaluation["sources"]["flow"] = _source(-97.0, stderr=3.5)
    evaluation["sources"]["flow"].update(vs_prior=3.0, vs_prior_stderr=0.1)
    best = _first(conclusions(evaluation), "highest held-out")
    assert best.startswith("Drawing z from gmm gives the highest")
    assert "2.00 nats above the runner-up flow: significant: importance sampling puts it " in best
    assert "beyond 1.96 standard errors (0.20, bounded by the paired errors)" in best
    evaluation["sources"]["flow"].update(loglik=-95.3, vs_prior=4.7)  # 0.30 apart: tied
    assert "The leading sources are tied" in _first(conclusions(evaluation), "highest held-out")


def _diagnostics(approx: float, amort: float, figure: Path | None = None) -> dict:
    per = [
        {"gaps": {"approximation_gap": approx + d, "amortization_gap": amort - d}}
        for d in (-0.1, 0.0, 0.1)
    ]
    summary = {"mean": 0.0, "stderr": 0.1}
    gaps = {
        "family": "diagonal",
        "log_px_method": "ais",
        "num_data": 3,
        "approximation_gap": {**summary, "mean": approx},
        "amortization_gap": {**summary, "mean": amort},
        "total_gap": {**summary, "mean": approx + amort},
    }
    out = {
        "num_data": 3,
        "num_reference": 2,
        "flagged": 1,
        "coverage_90_mean": 0.71,
        "gaps": gaps,
        "data": per,
        "budget": {"ais_steps": 500, "ais_chains": 16},
    }
    if figure is not None:
        out["figure_paths"] = {"Posterior against guide": figure}
    return out


def test_inference_quality_section_and_summary(tmp_path):
    figure = _png(tmp_path / "posterior.png")
    runs = [
        RunReport("vae-z2", evaluation=_evaluation(), diagnostics=_diagnostics(1.0, 3.0, figure)),
        RunReport("vae-z10", evaluation=_evaluation(), diagnostics={"stale": "re-run diagnose"}),
        RunReport("cvae-z2", evaluation=_evaluation()),
    ]
    text = write_report(runs, tmp_path / "r").read_text(encoding="utf-8")
    assert text.count("<h3>Inference quality</h3>") == 2  # the stale run says why it has none
    assert "re-run diagnose" in text and "Amortization dominates" in text
    assert 'alt="Posterior against guide"' in text
    summary = text[text.index("<h3>Inference gaps</h3>") :]
    assert "vae-z2" in summary and "1 of 2" in summary and "71.0%" in summary
    assert "4.00 \u00b1 0.10" in summary and "vae-z10</a>" not in summary.split("</table>")[0]


def test_bdmc_gap_is_shown_only_for_the_source_it_was_measured_on():
    evaluation = _evaluation()
    for name, value in (("prior", -99.0), ("gmm", -96.0)):
        ais = {"loglik": value, "stderr": 0.3, "is_loglik": value - 1, "num_test": 50}
        evaluation["sources"][name]["ais"] = {**ais, "steps": 500, "chains": 16}
    gap = {"lower": -96.1, "upper": -96.03, "gap": 0.07, "steps": 500, "num_data": 100}
    evaluation["sources"]["gmm"]["ais"]["bdmc"] = {"source": "gmm", "initial": "guide", **gap}
    text = render_report([RunReport("r", evaluation=evaluation)])
    assert text.count("[BDMC gap 0.07]") == 1 and "a row without one has no BDMC check" in text
    assert re.search(r"-96\.00 \u00b1 0\.30 \(IS -97\.00\) \[BDMC gap 0\.07\]", text)
    found = " ".join(conclusions(evaluation))
    assert "BDMC for gmm, on 100 data simulated from gmm" in found
    level = "AIS with a BDMC gap of its own below 1 nat for gmm; AIS with no BDMC gap measured "
    assert level + "for prior; importance sampling for the rest" in found
    assert "BDMC for prior" not in found and "No BDMC gap was measured for prior" in found
    # an old file's one top-level gap was the prior's; it loads and is named so
    del evaluation["sources"]["gmm"]["ais"]["bdmc"]
    evaluation["bdmc"] = gap
    text = render_report([RunReport("r", evaluation=evaluation)])
    assert re.search(r"-99\.00 \u00b1 0\.30 \(IS -100\.00\) \[BDMC gap 0\.07\]", text)
    assert text.count("[BDMC gap 0.07]") == 1
    found = " ".join(conclusions(evaluation))
    assert (
        "BDMC for prior, on 100 data simulated from prior with forward AIS from the guide" in found
    )
    assert "No BDMC gap was measured for gmm" in found
    assert "below 1 nat for prior; AIS with no BDMC gap measured for gmm;" in found


# ------------------------------------------- one verdict, evidence first, flags not remarks


def _rising(evaluation: dict) -> dict:
    """Every estimate still rising in K, as after a short sweep."""
    for entry in evaluation["sources"].values():
        entry["converged"] = False
    return evaluation


def test_one_verdict_per_comparison_from_the_strongest_evidence():
    # importance sampling puts gmm +0.66 beyond 1.96 paired errors, but every estimate is
    # still rising in K: the verdict is undetermined, and the word significant is not used
    evaluation = _rising(_evaluation())
    del evaluation["sources"]["aggregate"]
    evaluation["sources"]["gmm"].update(loglik=-99.34, vs_prior=0.66, vs_prior_stderr=0.05)
    evaluation["sources"]["gmm"]["stderr"] = evaluation["sources"]["prior"]["stderr"] = 0.1
    best = _first(conclusions(evaluation), "highest held-out")
    assert "+0.66 nats over the prior" in best and "undetermined" in best
    assert "beyond 1.96 standard errors (0.05, paired)" in best
    assert "significant" not in best, best

    # AIS on both, within its error: AIS decides, whatever importance sampling says
    for name, value in (("gmm", -99.5), ("prior", -99.6)):
        evaluation["sources"][name]["ais"] = {"loglik": value, "stderr": 0.3}
    best = _first(conclusions(evaluation), "highest held-out")
    assert "not significant under AIS, the strongest evidence here: under AIS" in best
    assert "undetermined" not in best and "beyond 1.96" not in best, best

    # AIS on both, clearly apart: significant, under AIS
    evaluation["sources"]["gmm"]["ais"]["loglik"] = -97.0
    best = _first(conclusions(evaluation), "highest held-out")
    assert "significant; it holds under AIS (+2.60" in best and "undetermined" not in best


def test_tied_sources_get_one_verdict_each_against_the_prior():
    evaluation = _rising(_evaluation())  # gmm and aggregate tied, both 1.5+ over the prior
    best = _first(conclusions(evaluation), "highest held-out")
    assert "The leading sources are tied" in best
    assert "gmm +2.50 \u00b1 0.57 (both errors combined)" in best
    assert "undetermined, as importance sampling puts each beyond 1.96 standard errors" in best
    assert "significant" not in best


def test_the_level_of_evidence_comes_first():
    evaluation = _rising(_evaluation())
    for name, share in (("prior", 1.0), ("aggregate", 0.95), ("gmm", 0.98)):
        evaluation["sources"][name]["khat_gt_0.7"] = share
    sentences = conclusions(evaluation)
    assert sentences[0].startswith("Level of evidence behind the log-likelihoods: importance ")
    assert "no AIS" in sentences[0] and "lower bounds of unknown tightness" in sentences[0]
    assert sentences[1].startswith("The estimate of every source is unreliable: PSIS k-hat")
    khat = next(i for i, s in enumerate(sentences) if "unreliable: PSIS k-hat" in s)
    loglik = next(i for i, s in enumerate(sentences) if "highest held-out" in s)
    quality = next(i for i, s in enumerate(sentences) if "ambiguous" in s)
    assert khat < loglik and khat < quality
    assert "for 95-100% of the test data" in sentences[khat]

    converged = _evaluation()
    level = conclusions(converged)[0]
    assert "whose L_K stopped rising in K for every source" in level
    assert "PSIS k-hat > 0.7 for 1% of the images across the sources" in level


def _copies(evaluation: dict, shares: dict[str, float], n: int = 1000) -> dict:
    for name, share in shares.items():
        evaluation["sources"][name]["memorization"] = {
            "near_copy_fraction": share,
            "num_samples": n,
            "quantile": 0.05,
        }
        evaluation["sources"][name]["num_quality_samples"] = n
    return evaluation


def test_near_copies_are_shown_wherever_sample_quality_is():
    evaluation = _copies(_evaluation(), {"prior": 0.005, "aggregate": 0.076, "gmm": 0.01})
    evaluation["sources"]["aggregate"].update(ambiguous=0.03)
    evaluation["sources"]["prior"].update(ambiguous=0.148)
    sentences = conclusions(evaluation)
    praised = _first(sentences, "the least ambiguous samples (3.0%")
    assert praised.startswith("Drawing z from aggregate")
    assert "but 7.6% of its samples are near-copies of training images (prior 0.5%)" in praised
    listed = _first(sentences, "Near-copies of training images")
    assert "aggregate 7.6%, gmm 1.0% and prior 0.5%" in listed
    assert "aggregate copies clearly more than the prior" in listed

    text = render_report([RunReport("r", evaluation=evaluation)])
    assert '<th class="n">near-copies</th>' in text and '<td class="n">7.6%</td>' in text


def test_extrapolation_never_claims_a_convergence_the_sweep_contradicts():
    evaluation = _evaluation()
    # the last three rises shrink 155x (L_10 to L_100, then to L_1000), so a geometric
    # extrapolation says 0.01 nats are left; but L_K rose 1.24 over the last 10x
    sweep = {"1": -700.0, "10": -495.0, "100": -340.0, "1000": -338.76}
    evaluation["sources"]["gmm"].update(converged=False, ksweep=sweep, ksweep_remaining=0.0099)
    rising = _first(conclusions(evaluation), "Still rising in K")
    assert "0.01" not in rising, rising
    assert "gmm (+1.24 from K = 100 to 1000; at least 0.14 to go at the 1/K rate)" in rising

    # a geometric extrapolation above the 1/K floor is shown beside it
    evaluation["sources"]["gmm"]["ksweep_remaining"] = 0.8
    rising = _first(conclusions(evaluation), "Still rising in K")
    assert "about 0.80 to go by geometric extrapolation, at least 0.14" in rising


def test_mutual_information_above_its_bound_is_a_flag():
    evaluation = _evaluation()
    evaluation["surgery"].update(
        avg_kl=20.0, marginal_kl=13.64, mutual_information=6.36, mi_upper_bound=6.21
    )
    evaluation["surgery_subset"] = {
        "num_data": 50,
        "avg_kl": 20.0,
        "marginal_kl": 16.2,
        "mutual_information": 3.8,
        "mi_upper_bound": 3.91,
    }
    evaluation["surgery"]["num_data"] = 500
    sentences = conclusions(evaluation)
    flag = _first(sentences, "exceeds its upper bound")
    assert "I(x; z) = 6.36 nats on 500 training images exceeds its upper bound log N = 6.21" in flag
    assert "unreliable" in flag
    split = _first(sentences, "On N = 500")
    assert "near log N" not in split and "outside [0, log N] at N = 500" in split
    assert "unreliable" in split
    text = render_report([RunReport("r", evaluation=evaluation)])
    row = re.search(r'<tr class="unreliable"><td>mutual information<span class="badge">', text)
    assert row and "outside [0, log N]</span>" in text


def test_khat_column_bolds_the_lowest_share_and_never_a_tie_of_the_worst():
    evaluation = _evaluation()
    for name, share in (("prior", 1.0), ("aggregate", 1.0), ("gmm", 1.0)):
        evaluation["sources"][name]["khat_gt_0.7"] = share
    text = render_report([RunReport("r", evaluation=evaluation)])
    assert '<td class="n best">100.0%</td>' not in text and '<td class="n">100.0%</td>' in text
    evaluation["sources"]["gmm"]["khat_gt_0.7"] = 0.02
    text = render_report([RunReport("r", evaluation=evaluation)])
    assert '<td class="n best">2.0%</td>' in text
    assert '<td class="n best">100.0%</td>' not in text


_WIDTH_PROBE = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.sources");
  const wrap = table.parentElement;
  const cells = Array.from(table.querySelectorAll("th"));
  const right = Math.max(...cells.map((c) => c.getBoundingClientRect().right));
  const scrolls = getComputedStyle(wrap).overflowX === "auto"
    && wrap.getBoundingClientRect().right <= window.innerWidth;
  document.body.dataset.width = `${Math.round(right)}/${window.innerWidth}/${scrolls}`;
});
</script>"""


def test_sources_table_loses_no_column_at_1280_px(tmp_path, chromium):
    evaluation = _evaluation()
    for name in ("gaussian-full", "gaussian-loc", "flow"):
        evaluation["sources"][name] = _source(-99.0)
    for entry in evaluation["sources"].values():
        entry["ais"] = {"loglik": -98.12, "stderr": 0.31, "is_loglik": -99.25}
    _copies(evaluation, {n: 0.05 for n in evaluation["sources"]})
    page = write_report([RunReport("vae-z50", evaluation=evaluation)], tmp_path)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _WIDTH_PROBE + "</body>"))
    dom = chromium.run("--window-size=1280,1000", "--dump-dom", probe.as_uri()).stdout
    match = re.search(r'data-width="(\d+)/(\d+)/(true|false)"', dom)
    assert match, dom[:300]
    right, width, scrolls = int(match[1]), int(match[2]), match[3] == "true"
    assert right <= width or scrolls, f"the last column ends at {right} px of {width}"
    assert "Frechet" in dom and "near-copies" in dom


def test_sample_grid_caption_shows_the_near_copies():
    from pyrovae.analysis.report.run_figures import samples_title

    evaluation = _copies(_evaluation(), {"prior": 0.005, "aggregate": 0.076})
    title = samples_title(evaluation["sources"])
    assert title == (
        "Samples from each latent source (near-copies of training images: prior 0.5%, "
        "aggregate 7.6%)"
    )
    assert samples_title(_evaluation()["sources"]) == "Samples from each latent source"
