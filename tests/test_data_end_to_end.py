"""Each kind of user data through the whole command line: train, evaluate every source with
sample quality, sample to every output format, report; data made in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyrovae.cli import main
from pyrovae.settings import SOURCE_NAMES
from pyrovae.user_data import read_data

TRAIN = ["--z-dim", "2", "--hidden-dims", "16", "--epochs", "2", "--device", "cpu", "--quiet"]
BUDGET = [
    "--num-test",
    "12",
    "--num-train",
    "60",
    "--num-samples",
    "10",
    "--flow-steps",
    "5",
    "--num-quality-samples",
    "12",
    "--quiet",
    "--device",
    "cpu",
]


def binary_vectors(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    np.save(root / "bits.npy", (rng.random((90, 7)) < 0.3).astype(np.uint8))
    return root / "bits.npy", []


def linear_gaussian(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 2))
    x = 100 + 50 * (rng.normal(size=(90, 2)) @ w.T + 0.3 * rng.normal(size=(90, 4)))
    np.save(root / "real.npy", x.astype(np.float32))
    return root / "real.npy", []


def labelled_csv(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=90)
    x = rng.normal(size=(90, 3)) + 4 * y[:, None]
    lines = ["f1,f2,f3,label"] + [
        ",".join([*(f"{v:.4f}" for v in row), str(c)]) for row, c in zip(x, y, strict=True)
    ]
    (root / "table.csv").write_text("\n".join(lines) + "\n")
    return root / "table.csv", ["--label-column", "label", "--model", "cvae"]


def colour_folder(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(3)
    for name, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / "imgs" / name).mkdir(parents=True)
        for i in range(45):
            pixels = np.clip(np.array(base) + rng.normal(0, 25, size=(5, 5, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "imgs" / name / f"{i}.png")
    return root / "imgs", ["--net", "conv", "--channels", "4"]


CASES = {
    "binary": (binary_vectors, "bernoulli"),
    "real": (linear_gaussian, "gaussian"),
    "csv": (labelled_csv, "gaussian"),
    "colour": (colour_folder, "discretized-logistic"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_evaluate_sample_report(case, tmp_path, capsys):
    make, likelihood = CASES[case]
    path, extra = make(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--out", str(run), *extra, *TRAIN]) == 0
    out = capsys.readouterr().out
    assert f"likelihood: {likelihood} (inferred from" in out
    assert main(["evaluate", str(run), *BUDGET]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert set(evaluation["sources"]) == set(SOURCE_NAMES)
    for entry in evaluation["sources"].values():
        assert np.isfinite(entry["loglik"]) and 0 <= entry["c2st"]["accuracy"] <= 1
        assert 0 <= entry["precision_recall"]["recall"] <= 1
    user = read_data(path, label_column="label" if case == "csv" else None)
    formats = ["s.npy", "s.npz", "s.csv"] + (["folder/"] if case == "colour" else [])
    for target in formats:
        argv = ["sample", str(run), "--source", "gmm", "--n", "6", "--draw", "sample"]
        if target.endswith("/"):  # class subfolders: the source fitted to each class
            argv.append("--per-class")
        assert main([*argv, "--out", str(tmp_path / target), "--device", "cpu"]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape[0] == 6 and x[0].size == user.splits.train.x.shape[1]
    if user.kind in ("binary", "8-bit"):  # draws in the data's own values
        assert np.array_equal(x, np.round(x)) and x.min() >= 0
        assert x.max() <= (1 if user.kind == "binary" else 255)
    again = read_data(tmp_path / "s.npz")  # synthetic data read back as data
    assert again.splits.train.x.shape[1] == user.splits.train.x.shape[1]
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    if case == "csv":
        assert header == "f1,f2,f3,label"  # the data's own columns, with the labels
    if case == "colour":
        assert sorted(p.name for p in (tmp_path / "folder").iterdir() if p.is_dir()) == [
            "blue",
            "red",
        ]
    assert (tmp_path / "s.npy.json").is_file()
    if case in ("real", "colour"):  # posterior diagnostics of vectors and of conv nets
        argv = ["diagnose", str(run), "--num-data", "2", "--nuts-data", "1", "--chains", "2"]
        argv += ["--warmup", "20", "--samples", "20", "--gap-steps", "10", "--ais-steps", "5"]
        assert main([*argv, "--ais-chains", "2", "--device", "cpu", "--quiet"]) == 0
        what = "images" if case == "colour" else "data points"
        assert f"2 {what}, 1 with a NUTS reference" in capsys.readouterr().out
    assert main(["report", str(run), *BUDGET, "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "C2ST" in page and ("bits/dim" in page) == (case == "colour")
    if case in ("real", "colour"):
        assert "Inference quality" in page  # the diagnostics, shown by the report
