"""`pyrovae evaluate` and `pyrovae study --quick` on real MNIST runs."""

from __future__ import annotations

import json
import math
import re

import pytest

from pyrovae.analysis.evaluation.evaluate import format_evaluation
from pyrovae.analysis.sources import SOURCES
from pyrovae.cli import main

QUALITY_KEYS = {"entropy", "ambiguous", "coverage_kl", "frechet"}


def test_evaluate_cli(small_vae, mnist_root, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            str(small_vae.run_dir),
            "--num-samples",
            "16",
            "--num-test",
            "100",
            "--num-train",
            "2000",
            "--no-quality",
            "--data-root",
            str(mnist_root),
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["sources"]) == set(SOURCES)
    for name, entry in result["sources"].items():
        assert {"loglik", "stderr", "khat_gt_0.7", "converged", "proposal"} <= set(entry), name
        assert entry["loglik"] < 0 and entry["stderr"] > 0
        # L_K at K = 1, 10 and the full K = 16, from the same draws; L_16 is the estimate
        assert set(entry["ksweep"]) == {"1", "10", "16"}, name
        assert entry["ksweep"]["16"] == entry["loglik"]
        assert entry["ksweep"]["1"] <= entry["ksweep"]["16"] + 1e-9
        assert entry["converged"] is (entry["ksweep"]["16"] - entry["ksweep"]["1"] <= 0.1)
        assert "ais" not in entry
    assert result["proposal"] == "adapted" and "bdmc" not in result
    assert set(result["unconverged_sources"]) <= set(SOURCES)
    assert result["loglik"] == result["sources"]["prior"]["loglik"]
    # "elbo" is the guide's ELBO whatever the proposal (reweighted by q/g): the same, up to
    # Monte Carlo error, as with draws from the guide, where L_K lies above it
    guide_out = tmp_path / "guide.json"
    argv = ["evaluate", str(small_vae.run_dir), "--num-samples", "16", "--num-test", "100"]
    argv += ["--num-train", "2000", "--no-quality", "--sources", "gaussian-z", "--quiet"]
    argv += ["--proposal", "guide", "--device", "cpu", "--out", str(guide_out)]
    assert main(argv) == 0
    guide = json.loads(guide_out.read_text())
    assert abs(guide["elbo"] - result["elbo"]) < 1.0
    assert guide["loglik"] > guide["elbo"]
    subset = result["surgery_subset"]
    assert subset["num_data"] == 200 and subset["mi_upper_bound"] == pytest.approx(math.log(200))
    surgery = result["surgery"]
    assert surgery["avg_kl"] == pytest.approx(
        surgery["mutual_information"] + surgery["marginal_kl"], abs=1e-6
    )
    printed = capsys.readouterr().out
    assert "aggregate" in printed and f"wrote {out}" in printed


def test_evaluate_cli_with_ais_and_bdmc(small_vae, mnist_root, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", str(small_vae.run_dir), "--num-samples", "30", "--num-test", "20"]
    args += ["--num-train", "1000", "--no-quality", "--sources", "gaussian-z", "gaussian-loc"]
    args += ["--ais-num-test", "4", "--ais-steps", "8", "--ais-chains", "3"]
    args += ["--ais-leapfrog", "2", "--bdmc-num-data", "3", "--ais-sources", "prior"]
    args += ["gaussian-loc", "--data-root", str(mnist_root), "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    sources = result["sources"]
    assert "ais" not in sources["gaussian-z"]
    for name in ("prior", "gaussian-loc"):
        ais = sources[name]["ais"]
        assert (ais["num_test"], ais["steps"], ais["chains"]) == (4, 8, 3), name
        assert ais["loglik"] < 0 and ais["is_loglik"] < 0
    # each AIS'd source has its own BDMC (data simulated from it, its own start), and no
    # gap is left at the top level to be read as everyone's
    assert "bdmc" not in result
    for name, initial in (("prior", "guide"), ("gaussian-loc", "adapted proposal of gaussian-loc")):
        bdmc = sources[name]["ais"]["bdmc"]
        assert (bdmc["source"], bdmc["initial"]) == (name, initial)
        assert bdmc["gap"] == pytest.approx(bdmc["upper"] - bdmc["lower"])
        assert (bdmc["steps"], bdmc["chains"], bdmc["num_data"]) == (8, 3, 3)
    assert {"mean", "stderr"} == set(sources["gaussian-loc"]["ais"]["minus_prior"])
    assert {"mean", "stderr"} == set(sources["prior"]["ais"]["minus_is"])
    printed = capsys.readouterr().out
    assert "BDMC for prior" in printed and "BDMC for gaussian-loc" in printed
    assert "AIS: 4 images, T=8, 3 chains" in printed
    # AIS on more images than importance sampling evaluated is refused, in one line
    code = main([*args[:-4], "--ais-num-test", "50", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "--ais-num-test 50 exceeds the 20 held-out images" in err


def test_evaluate_with_quality_scores(small_cvae, mnist, tmp_path):
    from pyrovae.analysis.evaluation.evaluate import evaluate_run
    from pyrovae.analysis.quality.classifier import ClassifierConfig, train_classifier

    classifier = train_classifier(mnist, ClassifierConfig(epochs=1), subset=3000)
    result, comparison = evaluate_run(
        small_cvae,
        mnist,
        sources=["prior", "gaussian-z"],
        num_samples=8,
        num_test=50,
        num_train=1000,
        classifier=classifier,
        num_quality_samples=50,
        surgery=False,
    )
    assert set(result["sources"]) == {"prior", "gaussian-z"}
    for entry in result["sources"].values():
        assert QUALITY_KEYS <= set(entry)
        assert 0 <= entry["ambiguous"] <= 1 and entry["frechet"] >= 0
        assert entry["ambiguous_low"] <= entry["ambiguous"] <= entry["ambiguous_high"]
        copies = entry["memorization"]
        assert (copies["num_samples"], copies["num_train"]) == (50, 1000)
        assert 0 <= copies["near_copy_fraction"] <= 1 and copies["test_median"] > 0
    assert result["conditional"] and "true label" in result["note"]
    assert "gaussian-z" in format_evaluation(result)


def test_an_evaluation_of_other_weights_is_never_reused_or_shown(small_vae, mnist, tmp_path):
    """evaluation.json records model_fingerprint (as sources and diagnostics do); reuse and
    the report refuse it for other weights, and for a file that records none."""
    import copy
    import shutil

    import torch

    from pyrovae.analysis.evaluation.reuse import (
        StaleEvaluationError,
        check_reusable,
        reuse_or_evaluate,
    )
    from pyrovae.analysis.report.run_figures import build_run_report
    from pyrovae.analysis.sources.store import model_fingerprint
    from pyrovae.checkpoint import read_json, write_json
    from pyrovae.runs import load_run
    from pyrovae.settings import EvaluationSettings

    run = tmp_path / "run"
    shutil.copytree(small_vae.run_dir, run)
    vae = load_run(run)
    settings = EvaluationSettings(
        sources=("gaussian-z",), num_samples=4, num_test=20, num_train=500, quality=False
    )
    logged: list[str] = []
    evaluation, _ = reuse_or_evaluate(run, vae, mnist, settings, log=logged.append)
    assert evaluation["fingerprint"] == model_fingerprint(vae)
    assert read_json(run / "evaluation.json")["fingerprint"] == model_fingerprint(vae)
    check_reusable(run, settings)  # the same weights: reusable

    trained_further = copy.deepcopy(vae)
    with torch.no_grad():
        next(trained_further.parameters()).add_(1e-3)
    with pytest.raises(StaleEvaluationError, match="was made with other model weights than"):
        check_reusable(run, settings, vae=trained_further)
    with pytest.raises(StaleEvaluationError, match="pass --reevaluate"):
        reuse_or_evaluate(run, trained_further, mnist, settings, log=logged.append)
    with pytest.raises(StaleEvaluationError, match="the evaluation of .* was made with other"):
        build_run_report(trained_further, mnist, evaluation, tmp_path / "report")

    old = {k: v for k, v in evaluation.items() if k != "fingerprint"}  # an older pyrovae's
    write_json(run / "evaluation.json", old)
    with pytest.raises(StaleEvaluationError, match="records no fingerprint .* unknown"):
        check_reusable(run, settings, vae=vae)
    with pytest.raises(StaleEvaluationError, match="records no fingerprint"):
        build_run_report(vae, mnist, old, tmp_path / "report")

    fresh, _ = reuse_or_evaluate(
        run, trained_further, mnist, settings, reevaluate=True, log=logged.append
    )
    assert fresh["fingerprint"] == model_fingerprint(trained_further) != evaluation["fingerprint"]
    assert any(line.strip().startswith("replacing") for line in logged)


def test_evaluate_rejects_bad_arguments(small_vae, capsys):
    code = main(["evaluate", str(small_vae.run_dir), "--out", "x.txt", "--no-quality"])
    err = capsys.readouterr().err
    assert code == 1 and "--out must end in .json" in err
    with pytest.raises(SystemExit):
        main(["evaluate", str(small_vae.run_dir), "--sources", "nope"])


def _study(out, mnist_root, *extra: str) -> list[str]:
    argv = [
        "study",
        "--quick",
        "--out",
        str(out),
        "--data-root",
        str(mnist_root),
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]
    assert main(argv) == 0
    return argv


@pytest.fixture(scope="module")
def quick_study(mnist_root, tmp_path_factory):
    """The study on a tiny budget at z=2: a VAE and a CVAE, their evaluations, one report."""
    out = tmp_path_factory.mktemp("study")
    return out, _study(out, mnist_root, "--z-dims", "2")


def test_study_quick(quick_study, capsys):
    out, argv = quick_study
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["cvae-z2", "vae-z2"]
    for run in runs:
        evaluation = json.loads((out / "runs" / run / "evaluation.json").read_text())
        assert set(evaluation["sources"]) == set(SOURCES)
        assert QUALITY_KEYS <= set(evaluation["sources"]["aggregate"])
    html = (out / "report.html").read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 2 * 6
    assert "vae-z2" in html and "cvae-z2" in html
    # a second call finds everything done and only redraws the report
    capsys.readouterr()
    assert main([a for a in argv if a != "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "already trained" in printed and "reusing evaluation.json" in printed


@pytest.mark.slow
def test_study_quick_all_dims(mnist_root, tmp_path):
    """``pyrovae study --quick`` as it is: z = 2, 5, 10 for VAE and CVAE (a few minutes)."""
    _study(tmp_path, mnist_root)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["cvae-z10", "cvae-z2", "cvae-z5", "vae-z10", "vae-z2", "vae-z5"]
    html = (tmp_path / "report.html").read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 6 * 6


def test_study_report_renders(quick_study, chromium):
    out, _ = quick_study
    loaded, total, fetched = chromium.count_images(out / "report.html")
    assert total >= 12 and loaded == total, f"{loaded} of {total} images loaded"
    assert fetched == 0


def test_study_flags_set_the_budget(monkeypatch, mnist_root, tmp_path):
    """--z-dims and --models narrow the study (in order, repeats dropped); others keep FULL."""
    import pyrovae.study

    seen = {}

    def fake_run_study(out_dir, data, budget, device, seed=0, progress=True):
        seen.update(out_dir=out_dir, budget=budget, seed=seed)
        return tmp_path / "report.html"

    monkeypatch.setattr(pyrovae.study, "run_study", fake_run_study)
    argv = ["study", "--out", str(tmp_path), "--data-root", str(mnist_root), "--device", "cpu"]
    assert main([*argv, "--z-dims", "5", "2", "5", "--models", "cvae", "--seed", "3"]) == 0
    budget = seen["budget"]
    assert budget.z_dims == (5, 2) and budget.models == ("cvae",) and seen["seed"] == 3
    assert budget.epochs == pyrovae.study.FULL.epochs
    assert main([*argv, "--quick"]) == 0
    assert seen["budget"] == pyrovae.study.QUICK
    extra = ["--priors", "vamp", "normal", "--seeds", "0", "1", "--ais-num-test", "50"]
    assert main([*argv, *extra, "--ais-steps", "100"]) == 0
    budget = seen["budget"]
    assert budget.priors == ("vamp", "normal") and budget.seeds == (0, 1)
    assert (budget.ais_num_test, budget.ais_steps, budget.ais_chains) == (50, 100, 16)
    with pytest.raises(SystemExit):
        main([*argv, "--priors", "gaussian"])


def test_study_run_names():
    from pyrovae.study import run_dir_name

    assert run_dir_name("vae", 10) == "vae-z10"
    assert run_dir_name("cvae", 5, "mog", 1) == "cvae-z5-mog-s1"


@pytest.mark.slow
def test_study_quick_with_priors_and_seeds(mnist_root, tmp_path):
    """Trained flexible priors and two seeds: one run each, every one evaluated and reported."""
    _study(
        tmp_path,
        mnist_root,
        *["--models", "vae", "--z-dims", "2", "--priors", "normal", "mog"],
        *["--seeds", "0", "1", "--ais-num-test", "5", "--ais-steps", "5", "--ais-chains", "2"],
    )
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["vae-z2-mog-s0", "vae-z2-mog-s1", "vae-z2-s0", "vae-z2-s1"]
    for run in runs:
        config = json.loads((tmp_path / "runs" / run / "config.json").read_text())
        assert config["model"]["prior"] == ("mog" if "mog" in run else "normal")
        assert config["train"]["seed"] == int(run[-1])
        evaluation = json.loads((tmp_path / "runs" / run / "evaluation.json").read_text())
        assert evaluation["sources"]["prior"]["ais"]["num_test"] == 5
        assert "bdmc" in evaluation["sources"]["prior"]["ais"]
    html = (tmp_path / "report.html").read_text()
    assert all(run in html for run in runs)


def test_format_evaluation_shows_near_copies_beside_sample_quality():
    entry = {"loglik": -90.5, "stderr": 2.0, "khat_gt_0.7": 0.0, "ambiguous": 0.03}
    evaluation = {
        "sources": {
            "prior": {**entry, "memorization": {"near_copy_fraction": 0.005}},
            "aggregate": {**entry, "memorization": {"near_copy_fraction": 0.076}},
            "gmm": dict(entry),  # evaluated without the memorization check
        },
        "elbo": -95.0,
        "loglik": -90.5,
        "loglik_stderr": 2.0,
    }
    lines = format_evaluation(evaluation).splitlines()
    assert lines[1].split()[-1] == "copies"
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["aggregate"][-1] == "7.6%" and rows["prior"][-1] == "0.5%"
    assert rows["gmm"][-1] == "-"
