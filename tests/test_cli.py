"""The command line on real MNIST: train, resume, sample, and one-line errors."""

from __future__ import annotations

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
    code = main(["train", "--out", str(vae), "--resume", "--z-dim", "5"])
    one_line_error(capsys, code, "drop --z-dim")
