"""The command line on real MNIST: train, resume, sample, and one-line errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pyrovae.cli import main
from pyrovae.runs import read_config, read_metrics

TINY = [
    "--z-dim",
    "2",
    "--hidden-dims",
    "32",
    "--subset",
    "300",
    "--batch-size",
    "100",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.fixture(scope="module")
def run_dirs(mnist_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    vae, cvae = root / "vae", root / "cvae"
    assert (
        main(["train", "--data-root", str(mnist_root), "--epochs", "1", "--out", str(vae), *TINY])
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data-root",
                str(mnist_root),
                "--epochs",
                "1",
                "--model",
                "cvae",
                "--out",
                str(cvae),
                *TINY,
            ]
        )
        == 0
    )
    return vae, cvae


def test_train_writes_run(run_dirs):
    vae, _ = run_dirs
    config = read_config(vae)
    assert config.model.z_dim == 2 and config.model.hidden_dims == [32]
    assert config.train.elbo == "meanfield" and config.train.subset == 300
    assert [row["epoch"] for row in read_metrics(vae)] == [1]


def test_resume_extends_run(run_dirs, mnist_root, capsys):
    vae, _ = run_dirs
    assert (
        main(
            [
                "train",
                "--out",
                str(vae),
                "--resume",
                "--epochs",
                "2",
                "--quiet",
                "--data-root",
                str(mnist_root),
            ]
        )
        == 0
    )
    assert [row["epoch"] for row in read_metrics(vae)] == [1, 2]
    assert "epoch 2" in capsys.readouterr().out


def test_sample_png_and_npy(run_dirs, tmp_path):
    vae, cvae = run_dirs
    assert main(["sample", str(vae), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(["sample", str(cvae), "--n", "5", "--label", "7", "--out", str(tmp_path / "s.npy")])
        == 0
    )
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (5, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1


def one_line_error(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "--z-dim", "0", "--out", "x"], "argument --z-dim: must be a positive integer"),
        (["train", "--prior", "gauss", "--out", "x"], "invalid choice: 'gauss'"),
        (["sample", "/nonexistent/run", "--out", "a.png"], "is not a run directory"),
    ],
)
def test_argument_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        code = main(argv)
        raise SystemExit(code)
    one_line_error(capsys, info.value.code, expected)


def test_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    code = main(
        [
            "train",
            "--data-root",
            str(tmp_path),
            "--no-download",
            "--out",
            str(tmp_path / "run"),
            *TINY,
        ]
    )
    one_line_error(capsys, code, "mnist not found: looked in")


def test_sample_errors(run_dirs, tmp_path, capsys):
    vae, cvae = run_dirs
    code = main(["sample", str(vae), "--label", "3", "--out", str(tmp_path / "a.png")])
    one_line_error(capsys, code, "holds an unconditional VAE; drop --label")
    code = main(["sample", str(cvae), "--label", "12", "--out", str(tmp_path / "a.png")])
    one_line_error(capsys, code, "--label must be in 0..9, got 12")
    code = main(["sample", str(vae), "--out", str(tmp_path / "a.jpg")])
    one_line_error(capsys, code, "--out must end in .png or .npy")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((vae / "config.json").read_text())
    code = main(["sample", str(tmp_path / "empty"), "--out", str(tmp_path / "a.png")])
    one_line_error(capsys, code, "no checkpoint at")


def test_resume_rejects_new_settings(run_dirs, capsys):
    vae, _ = run_dirs
    code = main(["train", "--out", str(vae), "--resume", "--z-dim", "5", "--lr", "0.01"])
    one_line_error(capsys, code, "--lr 0.01 differs from the stored 0.001; --z-dim 5 differs")


def test_resume_with_the_original_command_line(mnist_root, tmp_path, capsys):
    """A requeued job re-runs the exact command: equal flags are accepted and it resumes."""
    out = tmp_path / "requeued"
    argv = ["train", "--data-root", str(mnist_root), "--out", str(out), *TINY]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert [row["epoch"] for row in read_metrics(out)] == [1, 2]
    code = main([*argv, "--epochs", "3", "--resume", "--seed", "4"])
    one_line_error(capsys, code, "--seed 4 differs from the stored 0")


FIT_FAST = ["--num-train", "2000", "--device", "cpu"]


@pytest.mark.parametrize("which", [0, 1], ids=["vae", "cvae"])
def test_sample_from_fitted_sources(run_dirs, tmp_path, capsys, which):
    """--source fits and saves the source once; the saved one reloads bit-identically."""
    run = run_dirs[which]
    for name in ("gmm", "aggregate"):
        out = tmp_path / f"{name}.npy"
        argv = ["sample", str(run), "--source", name, "--n", "20", "--out", str(out), *FIT_FAST]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert (run / "sources" / f"{name}.pt").is_file()
        first = np.load(out)
        assert main(argv) == 0  # now from the saved file
        again = capsys.readouterr().out
        assert "fitting" in printed or "using" in printed
        assert "using" in again and "fitting" not in again
        assert np.array_equal(first, np.load(out))
        assert first.shape == (20, 28, 28) and 0 <= first.min() and first.max() <= 1
    png = tmp_path / "g.png"
    assert main(["sample", str(run), "--source", "gmm", "--n", "64", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_one_digit_from_a_vae(run_dirs, tmp_path, capsys):
    """A VAE's --label D draws z from the source fitted to digit D's encodings."""
    vae, _ = run_dirs
    out = tmp_path / "threes.npy"
    argv = ["sample", str(vae), "--source", "gaussian-z", "--label", "3", "--n", "8"]
    assert main([*argv, "--out", str(out), *FIT_FAST]) == 0
    assert (vae / "sources" / "gaussian-z.per-class.pt").is_file()
    assert "per class" in capsys.readouterr().out
    assert np.load(out).shape == (8, 28, 28)
    code = main(["sample", str(vae), "--per-class", "--out", str(tmp_path / "p.png")])
    one_line_error(capsys, code, "the prior of a VAE knows no digits")


def test_sample_cvae_per_class(run_dirs, tmp_path, capsys):
    """A CVAE's --per-class draws z of digit D from the fit to digit D's encodings."""
    _, cvae = run_dirs
    out = tmp_path / "cvae.npy"
    argv = ["sample", str(cvae), "--source", "gmm", "--per-class", "--n", "20"]
    assert main([*argv, "--out", str(out), *FIT_FAST]) == 0
    assert (cvae / "sources" / "gmm.per-class.pt").is_file()
    assert "from gmm (per class)" in capsys.readouterr().out
    assert np.load(out).shape == (20, 28, 28)


def test_fit_sources_command(run_dirs, capsys):
    from pyrovae.analysis.sources.store import load_sources
    from pyrovae.runs import load_run

    vae, _ = run_dirs
    argv = ["fit-sources", str(vae), "--sources", "gaussian-full", "gmm", *FIT_FAST]
    assert main(argv) == 0
    assert "gaussian-full.pt" in capsys.readouterr().out
    model = load_run(vae)
    sources = load_sources(vae, model, ["gaussian-full", "gmm"])
    assert sources["gmm"].fitted_with["num_train"] == 2000
    assert sources["gmm"].fitted_with["checkpoint"] == "best.pt"


EVAL_TINY = [
    *["--sources", "gaussian-z", "--num-samples", "5", "--num-test", "20"],
    *["--num-train", "500", "--no-quality", "--device", "cpu"],
]


def test_report_reuses_a_matching_evaluation(run_dirs, tmp_path, capsys):
    vae, _ = run_dirs
    assert main(["evaluate", str(vae), *EVAL_TINY, "--quiet"]) == 0
    written = (vae / "evaluation.json").read_text()
    capsys.readouterr()
    report = ["report", str(vae), "--out", str(tmp_path / "r"), *EVAL_TINY]
    assert main(report) == 0
    assert "reusing evaluation.json" in capsys.readouterr().out
    assert (vae / "evaluation.json").read_text() == written
    assert (tmp_path / "r" / "report.html").is_file()
    # other settings: refused, each difference named, the file untouched
    changed = [a if a != "20" else "30" for a in report]
    code = main(changed)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "num_test: saved 20, asked 30" in err and "--reevaluate" in err
    assert (vae / "evaluation.json").read_text() == written
    assert main([*changed, "--reevaluate"]) == 0
    assert "replacing" in capsys.readouterr().out
    assert '"num_test": 30' in (vae / "evaluation.json").read_text()


def test_report_refuses_an_evaluation_of_other_weights(run_dirs, mnist_root, tmp_path, capsys):
    """evaluate, one more epoch with --resume, report: the old evaluation is never shown."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dirs[0], run)
    last = ["--checkpoint", "last"]  # checkpoint.pt changes with every epoch (best.pt may not)
    assert main(["evaluate", str(run), *EVAL_TINY, *last, "--quiet"]) == 0
    saved = json.loads((run / "evaluation.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", saved["fingerprint"])
    epochs = str(read_metrics(run)[-1]["epoch"] + 1)
    argv = ["train", "--out", str(run), "--resume", "--epochs", epochs, "--quiet"]
    assert main([*argv, "--data-root", str(mnist_root)]) == 0
    written = (run / "evaluation.json").read_text()
    capsys.readouterr()
    report = ["report", str(run), "--out", str(tmp_path / "r"), *EVAL_TINY, *last]
    code = main(report)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "was made with other model weights than checkpoint.pt" in err
    assert "--reevaluate" in err and f"pyrovae evaluate {run}" in err
    assert (run / "evaluation.json").read_text() == written
    assert not (tmp_path / "r" / "report.html").exists()

    # an older evaluation.json without a fingerprint: its weights are unknown, not these
    del saved["fingerprint"]
    (run / "evaluation.json").write_text(json.dumps(saved))
    code = main(report)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "records no fingerprint of the model weights" in err and "--reevaluate" in err

    assert main([*report, "--reevaluate"]) == 0
    assert "replacing" in capsys.readouterr().out
    from pyrovae.analysis.sources.store import model_fingerprint
    from pyrovae.runs import load_run

    fresh = json.loads((run / "evaluation.json").read_text())
    assert fresh["fingerprint"] == model_fingerprint(load_run(run, checkpoint="last"))
    assert main(report) == 0  # now it is these weights' evaluation: reused
    assert "reusing evaluation.json" in capsys.readouterr().out


def test_bad_flags_answer_within_a_second():
    """Argument errors are answered before torch and Pyro are imported."""
    import subprocess
    import sys
    import time

    times = []
    for argv in (["train", "--z-dim", "0", "--out", "x"], ["sample", "RUN", "--source", "vamp"]):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pyrovae", *argv], capture_output=True)
        times.append(time.perf_counter() - start)
        assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert min(times) < 1.0, times  # generous: parsing alone takes about 50 ms


def test_interrupt_says_how_to_resume(run_dirs, monkeypatch, capsys):
    import importlib

    vae, _ = run_dirs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("pyrovae.train"), "train", interrupted)
    code = main(["train", "--out", str(vae), "--resume", "--quiet"])
    assert code == 130
    err = capsys.readouterr().err
    assert f"pyrovae train --out {vae} --resume" in err and err.count("\n") == 1


def test_run_moved_to_another_machine(run_dirs, tmp_path, capsys, monkeypatch, mnist_root):
    """A stored data root that does not exist here is said, then the default lookup used."""
    import json
    import shutil

    vae, _ = run_dirs
    moved = tmp_path / "moved"
    shutil.copytree(vae, moved, ignore=shutil.ignore_patterns("sources"))
    config = json.loads((moved / "config.json").read_text())
    config["train"]["data_root"] = str(tmp_path / "elsewhere")
    (moved / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("PYROVAE_DATA", str(mnist_root))
    argv = ["sample", str(moved), "--source", "gaussian-z", "--out", str(tmp_path / "m.png")]
    assert main([*argv, *FIT_FAST]) == 0
    assert "does not exist here; looking in $PYROVAE_DATA" in capsys.readouterr().err
    # an explicit --data-root that does not exist is an error, even though the cache could serve
    code = main(["fit-sources", str(moved), "--data-root", str(tmp_path / "nope"), *FIT_FAST])
    one_line_error(capsys, code, "does not exist; pass the directory that holds MNIST/raw/")


def test_diagnose_writes_json_netcdf_and_figures_and_the_report_shows_them(
    run_dirs, tmp_path, capsys
):
    import json
    import shutil

    import arviz as az

    vae, _ = run_dirs
    run = tmp_path / "run"
    shutil.copytree(vae, run)
    argv = ["diagnose", str(run), "--num-data", "3", "--nuts-data", "2", "--chains", "2"]
    argv += ["--warmup", "30", "--samples", "30", "--gap-steps", "20", "--ais-steps", "10"]
    assert main([*argv, "--ais-chains", "2", "--device", "cpu"]) == 0
    assert "3 images, 2 with a NUTS reference" in capsys.readouterr().out
    out = run / "diagnostics"  # the default --out
    result = json.loads((out / "diagnostics.json").read_text())
    assert result["num_data"] == 3 and result["num_reference"] == 2 and len(result["data"]) == 3
    for entry in result["data"]:
        gaps = entry["gaps"]
        assert gaps["total_gap"] == pytest.approx(
            gaps["approximation_gap"] + gaps["amortization_gap"]
        )
    for entry in result["data"][:2]:
        assert entry["reference"]
        assert {"index", "label", "r_hat_max", "ess_bulk_min", "flagged", "guide"} <= set(entry)
        posterior = az.from_netcdf(out / f"posterior-{entry['index']:05d}.nc").posterior
        assert posterior["z"].shape[:2] == (2, 30)
    third = result["data"][2]
    assert not third["reference"] and "guide" not in third
    assert not (out / f"posterior-{third['index']:05d}.nc").exists()
    labels = [e["label"] for e in result["data"]]
    assert len(set(labels)) == 3  # one image of each of three classes
    for name in ("posterior.png", "gaps.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    # the report finds them and shows an "Inference quality" section with both figures
    report = ["report", str(run), "--out", str(tmp_path / "r"), *EVAL_TINY, "--reevaluate"]
    assert main([*report, "--quiet"]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h3>Inference quality</h3>" in page
    assert "NUTS reference posteriors p(z | x) for 2 of 3 test images" in page
    for title in ("Posterior p(z | x) by NUTS against the guide", "Inference gaps per image"):
        assert title in page
    # more NUTS images than images: one line, no traceback
    code = main([*argv[:4], "--nuts-data", "5"])
    one_line_error(capsys, code, "--nuts-data 5 exceeds --num-data 3")


def test_help_texts_show_a_percent_sign_once(capsys):
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    out = capsys.readouterr().out
    assert "90% interval" in out and "%%" not in out


def test_dir_of_the_package_lists_its_public_names_only():
    import pyrovae

    names = dir(pyrovae)
    assert "load_run" in names and "train_model" in names and "__version__" in names
    assert not {"sys", "importlib", "Any", "types"} & set(names)
