"""``pyrovae train --model m2`` on MNIST: the label protocol, its metrics, exact resume and
the one-line refusals of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyrovae.cli import main
from pyrovae.runs import read_metrics

SMALL = ["--z-dim", "4", "--hidden-dims", "64", "--subset", "1000", "--batch-size", "100"]
SMALL += ["--device", "cpu", "--quiet"]


def one_line_error(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_m2_trains_on_a_few_labels_and_resumes_exactly(mnist_root, tmp_path, capsys):
    data = ["--data-root", str(mnist_root)]
    whole, part = tmp_path / "whole", tmp_path / "part"
    argv = ["train", "--model", "m2", "--labels", "100", "--label-seed", "3", "--aux-weight"]
    argv += ["50", *SMALL, *data]
    assert main([*argv, "--epochs", "2", "--out", str(whole)]) == 0
    assert "val accuracy" in capsys.readouterr().out
    config = json.loads((whole / "config.json").read_text())
    assert config["model"]["model"] == "m2" and config["model"]["y_dim"] == 10
    assert config["train"]["labels"] == 100 and config["train"]["label_seed"] == 3
    rows = read_metrics(whole)
    assert len(rows) == 2 and all(0.0 <= r["val_accuracy"] <= 1.0 for r in rows)
    assert all(r["labelled_elbo"] < 0 and r["unlabelled_elbo"] < 0 for r in rows)
    assert rows[-1]["val_accuracy"] > 0.3  # far above chance (0.1) after 2 short epochs
    # one epoch, then --resume for the second: the same numbers as two in one go
    assert main([*argv, "--epochs", "1", "--out", str(part)]) == 0
    assert main(["train", "--out", str(part), "--resume", "--epochs", "2", "--quiet"]) == 0
    again = read_metrics(part)
    for a, b in zip(rows, again, strict=True):
        for key in ("train_elbo", "val_elbo", "labelled_elbo", "unlabelled_elbo", "val_accuracy"):
            assert a[key] == b[key], key
    # the analysis: log p(x) with the label summed out, the classifier's test error, the
    # report with M2's style grid, and samples of a chosen digit
    budget = ["--num-samples", "10", "--num-test", "20", "--num-train", "300"]
    budget += ["--flow-steps", "5", "--no-quality", "--quiet", "--device", "cpu", *data]
    assert main(["evaluate", str(whole), *budget]) == 0
    evaluation = json.loads((whole / "evaluation.json").read_text())
    error = evaluation["label_error"]
    assert error["num_test"] == 10_000 and 0 <= error["interval"][0] <= error["error"]
    assert error["error"] <= error["interval"][1] <= 1 and error["error"] < 0.7
    assert evaluation["note"].startswith("M2: held-out log p(x) sums the label out")
    assert "q(y | x) test error" in capsys.readouterr().out
    assert main(["report", str(whole), "--out", str(tmp_path / "report"), *budget]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "M2: style of digit 9" in page and "The classifier q(y | x) mislabels" in page
    assert "best validation accuracy of q(y | x)" in page
    out = tmp_path / "threes.npy"
    assert main(["sample", str(whole), "--label", "3", "--n", "4", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 28, 28)


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--model", "m2", "--labels", "5000"], "--labels 5000 is more than the 1000 training"),
        (["--model", "m2", "--labels", "105"], "--labels 105 does not divide over the 10 classes"),
        (["--labels", "100"], "--labels applies to --model m2 only"),
        (["--model", "m2", "--aux-weight", "-1"], "argument --aux-weight: must be a number >= 0"),
        (["--model", "m2", "--elbo", "iwae", "--num-particles", "2"], "use --elbo trace"),
        (["--model", "m2", "--kl-warmup", "2"], "--kl-warmup 2 is not available for --model m2"),
    ],
)
def test_bad_semi_supervised_settings_are_one_line(extra, expected, mnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *SMALL, "--data-root", str(mnist_root), "--out", str(out), *extra]
    with pytest.raises(SystemExit) as info:  # argparse's own refusals exit from main
        raise SystemExit(main(argv))
    one_line_error(capsys, info.value.code, expected)
    assert not (out / "checkpoint.pt").exists()


def test_m2_on_data_without_labels_is_refused(tmp_path, capsys):
    rows = np.random.default_rng(0).random((60, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", rows)
    argv = [
        "train",
        "--model",
        "m2",
        "--data",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "r"),
    ]
    one_line_error(capsys, main([*argv, "--quiet"]), "--model m2 needs labelled data")
