"""Synthetic data out: ``pyrovae sample`` and :mod:`pyrovae.export` write .npy, .npz, .csv, an
image folder and a grid in the data's own units, with labels and a JSON record, and refuse bad
outputs before writing anything."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyro
import pytest
import torch

import pyrovae
from pyrovae.build import build_model
from pyrovae.cli import main
from pyrovae.export import draw_samples, output_format, write_samples
from pyrovae.runs import load_run, read_config
from pyrovae.user_data import read_data

TINY = [
    *["--z-dim", "2", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "20"],
    *["--device", "cpu", "--quiet"],
]


def _train(data: Path, out: Path, *extra: str) -> Path:
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: a CVAE and a VAE on 8-bit colour images (3, 4, 4) of two classes, and a VAE
    on real vectors far from [0, 1] read from a CSV with a label column."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.integers(0, 128, size=(60, 3, 4, 4)) + 100 * y[:, None, None, None]
    np.savez(root / "colour.npz", x=x.astype(np.uint8), y=y)
    v = rng.normal(size=(60, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -500.0]
    lines = ["a,b,c,kind", *(f"{r[0]},{r[1]},{r[2]},{k}" for r, k in zip(v, y, strict=True))]
    (root / "vectors.csv").write_text("\n".join(lines) + "\n")
    return SimpleNamespace(
        cvae=_train(root / "colour.npz", root / "cvae", "--model", "cvae"),
        vae=_train(root / "colour.npz", root / "vae"),
        vectors=_train(root / "vectors.csv", root / "vectors", "--label-column", "kind"),
    )


def _expected(run: Path, n: int, labels: list[int] | None, draw: str = "mean") -> torch.Tensor:
    """What `pyrovae sample RUN --n n` (seed 0, prior) decodes, in data units."""
    vae = load_run(run)
    pyro.set_rng_seed(0)
    y = torch.tensor(labels) if labels is not None else None
    return draw_samples(vae, n, labels=y, draw=draw)


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def one_line_error(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err


def test_npy_of_8bit_colour_images_is_uint8_n_c_h_w_with_labels_and_a_record(runs, tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", str(runs.cvae), "--n", "6", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (6, 3, 4, 4) and x.dtype == np.uint8
    mean = _expected(runs.cvae, 6, [0, 1, 0, 1, 0, 1])
    assert mean.max() > 1  # 0..255 units, not [0, 1]
    np.testing.assert_array_equal(x.reshape(6, -1), np.rint(mean.numpy()))
    labels = np.load(tmp_path / "s.labels.npy")
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 0, 1, 0, 1]
    record = _record(tmp_path / "s.npy.json")
    config = read_config(runs.cvae)
    assert record["run_dir"] == str(runs.cvae.resolve()) and record["checkpoint"] == "best.pt"
    assert record["source"] == "prior" and record["seed"] == 0 and record["n"] == 6
    assert record["draw"] == "mean" and record["kind"] == "8-bit" and record["dtype"] == "uint8"
    assert record["data_fingerprint"] == config.train.data_fingerprint is not None
    assert record["pyrovae_version"] == pyrovae.__version__
    assert record["label_rule"] == "cycling: sample i has class i mod 2"
    assert record["files"] == ["s.npy", "s.labels.npy"]


def test_npz_csv_and_folder_hold_the_same_samples_and_read_back_as_data(runs, tmp_path):
    argv = ["sample", str(runs.cvae), "--n", "7", "--seed", "3"]
    for out in ("s.npy", "s.npz", "s.csv", "folder/"):
        assert main([*argv, "--out", str(tmp_path / out)]) == 0
    x, labels = np.load(tmp_path / "s.npy"), np.load(tmp_path / "s.labels.npy")
    with np.load(tmp_path / "s.npz") as z:
        assert sorted(z.files) == ["x", "y"]
        np.testing.assert_array_equal(z["x"], x)
        np.testing.assert_array_equal(z["y"], labels)
    header = (tmp_path / "s.csv").read_text().splitlines()[0].split(",")
    assert header == [*(f"x{i}" for i in range(48)), "label"]
    table = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, :48], x.reshape(7, -1))
    np.testing.assert_array_equal(table[:, 48], labels)
    folder = tmp_path / "folder"
    assert sorted(p.name for p in folder.iterdir()) == ["0", "1", "samples.json"]
    assert len(list((folder / "0").glob("*.png"))) == 4
    assert len(list((folder / "1").glob("*.png"))) == 3
    from PIL import Image

    with Image.open(folder / "1" / "000001.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im).transpose(2, 0, 1), x[1])
    assert _record(folder / "samples.json")["files"] == {"0/": 4, "1/": 3}
    for path in (tmp_path / "s.npz", folder):
        data = read_data(path)
        assert data.kind == "8-bit" and data.image_shape == (3, 4, 4)
        assert data.num_classes == 2
    data = read_data(tmp_path / "s.csv", label_column="label")
    assert data.kind == "8-bit" and data.num_classes == 2


def test_draw_sample_gives_integers_of_a_discretized_likelihood(runs, tmp_path):
    out = tmp_path / "d.npy"
    argv = ["sample", str(runs.cvae), "--n", "5", "--label", "1", "--draw", "sample"]
    assert main([*argv, "--out", str(out)]) == 0
    x = np.load(out)
    assert x.dtype == np.uint8 and x.shape == (5, 3, 4, 4)
    drawn = _expected(runs.cvae, 5, [1] * 5, draw="sample")
    np.testing.assert_array_equal(x.reshape(5, -1), drawn.numpy())
    assert np.load(tmp_path / "d.labels.npy").tolist() == [1] * 5
    record = _record(tmp_path / "d.npy.json")
    assert record["draw"] == "sample" and record["label_rule"] == "--label 1: every sample"


def test_png_grid_of_colour_images(runs, tmp_path):
    out = tmp_path / "g.png"
    assert main(["sample", str(runs.cvae), "--n", "4", "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as im:
        assert im.mode == "RGB"
    assert _record(tmp_path / "g.png.json")["format"] == "png"


def test_vectors_in_their_own_units_unclipped_with_the_runs_label_column(runs, tmp_path, capsys):
    out = tmp_path / "v.npy"
    assert main(["sample", str(runs.vectors), "--n", "8", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (8, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, _expected(runs.vectors, 8, None).numpy(), rtol=1e-6)
    assert x[:, 2].max() < -100  # the third column lives near -500: not clipped to [0, 1]
    assert not (tmp_path / "v.labels.npy").exists()
    assert _record(tmp_path / "v.npy.json")["label_rule"] is None
    # per-class sources of a VAE: labels cycle over the classes the source was fitted to
    csv_out = tmp_path / "v.csv"
    argv = ["sample", str(runs.vectors), "--source", "gaussian-z", "--per-class", "--n", "6"]
    assert main([*argv, "--out", str(csv_out)]) == 0
    assert "per class" in capsys.readouterr().out
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "a,b,c,kind"  # the data's own column names, recorded by the run
    table = np.loadtxt(csv_out, delimiter=",", skiprows=1)
    assert table.shape == (6, 4) and table[:, 3].tolist() == [0, 1, 0, 1, 0, 1]
    assert table[:, 2].max() < -100
    data = read_data(csv_out, label_column="kind")
    assert data.kind == "real" and data.num_classes == 2


@pytest.mark.parametrize(
    "out,expected",
    [
        ("a.jpg", "--out must end in .png or .npy, .npz or .csv, or be a folder"),
        ("images/", "writes images, but the model's data are vectors"),
        ("grid.png", "writes images, but the model's data are vectors"),
    ],
)
def test_refused_outputs_write_nothing(runs, tmp_path, capsys, out, expected):
    target = tmp_path / "out"
    target.mkdir()
    code = main(["sample", str(runs.vectors), "--out", str(target / out)])
    one_line_error(capsys, code, expected)
    assert list(target.iterdir()) == []


def test_a_folder_that_holds_files_or_a_file_are_refused_untouched(runs, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    code = main(["sample", str(runs.cvae), "--out", str(full)])
    one_line_error(capsys, code, "is a folder that already holds files")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    (tmp_path / "plain").write_text("mine")
    code = main(["sample", str(runs.cvae), "--out", str(tmp_path / "plain")])
    one_line_error(capsys, code, "is an existing file, not a folder")
    assert (tmp_path / "plain").read_text() == "mine"
    # the output is checked before the run is read: a cheap refusal
    code = main(["sample", str(tmp_path / "no-run"), "--out", str(tmp_path / "a.txt")])
    one_line_error(capsys, code, "--out must end in")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "plain"]


def test_labels_outside_the_classes_are_refused(runs, tmp_path, capsys):
    code = main(["sample", str(runs.cvae), "--label", "2", "--out", str(tmp_path / "a.npy")])
    one_line_error(capsys, code, "--label must be in 0..1, got 2 (the CVAE has 2 classes)")
    argv = ["sample", str(runs.vectors), "--source", "gaussian-z", "--label", "5"]
    code = main([*argv, "--out", str(tmp_path / "b.csv")])
    one_line_error(capsys, code, "--label must be in 0..1, got 5 (the classes of the per-class")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_is_filled(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["sample", str(runs.vae), "--n", "3", "--out", str(empty)]) == 0
    assert sorted(p.name for p in empty.iterdir()) == ["samples", "samples.json"]
    assert len(list((empty / "samples").glob("*.png"))) == 3


def test_a_crash_while_writing_a_folder_leaves_nothing(monkeypatch, tmp_path):
    import pyrovae.export as export

    written = []

    def failing(pixels: np.ndarray) -> bytes:
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(1)
        return b"png"

    monkeypatch.setattr(export, "_png", failing)
    x = torch.rand(5, 12)
    with pytest.raises(KeyboardInterrupt):
        write_samples(x, tmp_path / "dir/", image_shape=(3, 2, 2), kind="unit", log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_mnist_format_keeps_its_n_28_28_layout_user_grey_images_get_a_channel(tmp_path):
    vae = build_model(z_dim=2, hidden_dims=[8])  # MNIST-format: 784 Bernoulli values
    pyro.set_rng_seed(0)
    x = draw_samples(vae, 4)
    write_samples(x, tmp_path / "m.npy", vae=vae)
    m = np.load(tmp_path / "m.npy")
    assert m.shape == (4, 28, 28) and m.dtype == np.float32
    np.testing.assert_array_equal(m.reshape(4, -1), x.numpy())
    user = build_model(z_dim=2, hidden_dims=[8], image_shape=[1, 28, 28])
    user.run_config = SimpleNamespace(train=SimpleNamespace(data="/data/grey.npy"))
    write_samples(x, tmp_path / "u.npy", vae=user)  # the user's own 28 x 28 grey images
    assert np.load(tmp_path / "u.npy").shape == (4, 1, 28, 28)
    grey = build_model(z_dim=2, hidden_dims=[8], x_dim=16, image_shape=[1, 4, 4])
    write_samples(draw_samples(grey, 3), tmp_path / "g.npy", vae=grey)
    assert np.load(tmp_path / "g.npy").shape == (3, 1, 4, 4)


def test_bernoulli_draws_are_uint8_zeros_and_ones(tmp_path):
    vae = build_model(z_dim=2, hidden_dims=[8], x_dim=16, image_shape=[1, 4, 4])
    x = draw_samples(vae, 20, draw="sample", seed=1)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    write_samples(x, tmp_path / "b.npy", vae=vae, draw="sample")
    b = np.load(tmp_path / "b.npy")
    assert b.dtype == np.uint8 and b.shape == (20, 1, 4, 4)
    np.testing.assert_array_equal(b.reshape(20, -1), x.numpy())
    mean = draw_samples(vae, 20, seed=1)
    write_samples(mean, tmp_path / "p.npy", vae=vae)  # means: probabilities, float32
    assert np.load(tmp_path / "p.npy").dtype == np.float32


def test_8bit_values_outside_0_255_are_kept_and_said_but_clipped_for_png(tmp_path):
    x = torch.tensor([[-3.2, 12.4, 300.0, 254.6]])
    notes: list[str] = []
    write_samples(x, tmp_path / "o.npy", kind="8-bit", log=notes.append)
    o = np.load(tmp_path / "o.npy")
    assert o.dtype == np.float32 and o.tolist() == [[-3.0, 12.0, 300.0, 255.0]]
    assert "2 values lie outside 0..255" in notes[0]
    assert _record(tmp_path / "o.npy.json")["outside_range"] == 2
    write_samples(x, tmp_path / "img/", kind="8-bit", image_shape=(1, 2, 2), log=notes.append)
    assert "2 values lie outside the pixels' 0..255 and were clipped" in notes[1]
    from PIL import Image

    with Image.open(tmp_path / "img" / "samples" / "000000.png") as im:
        assert np.asarray(im).tolist() == [[0, 12], [255, 255]]
    x = torch.tensor([[0.0, 1.0, 200.0, 255.0]])
    write_samples(x, tmp_path / "in.npy", kind="8-bit")
    assert np.load(tmp_path / "in.npy").dtype == np.uint8


def test_unit_values_outside_0_1_are_kept_and_said(tmp_path):
    notes: list[str] = []
    x = torch.tensor([[-0.25, 0.5, 1.5]])
    write_samples(x, tmp_path / "u.csv", kind="unit", log=notes.append)
    assert np.loadtxt(tmp_path / "u.csv", delimiter=",", skiprows=1).tolist() == [-0.25, 0.5, 1.5]
    assert notes == [
        "2 values lie outside [0, 1], the data's range (from -0.25 to 1.5); kept as they are"
    ]
    assert _record(tmp_path / "u.csv.json")["outside_range"] == 2


def test_real_valued_images_are_not_written_as_png_files(tmp_path):
    with pytest.raises(ValueError, match="real-valued .* write .npy, .npz or .csv"):
        write_samples(torch.randn(2, 4), tmp_path / "r/", kind="real", image_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="PNG files hold 1, 3 or 4 channels"):
        write_samples(torch.rand(2, 8), tmp_path / "c/", kind="unit", image_shape=(2, 2, 2))
    assert list(tmp_path.iterdir()) == []


def test_the_record_has_the_runs_fingerprint_and_stale_labels_go(tmp_path):
    vae = build_model(z_dim=2, hidden_dims=[8], x_dim=3, likelihood="gaussian")
    vae.run_config = SimpleNamespace(
        train=SimpleNamespace(data="/d.csv", data_fingerprint="abc123", column_names=None)
    )
    x = draw_samples(vae, 4, seed=0)
    paths = write_samples(x, tmp_path / "s.npy", vae=vae, labels=torch.tensor([0, 1, 0, 1]))
    assert [p.name for p in paths] == ["s.npy", "s.labels.npy", "s.npy.json"]
    record = _record(tmp_path / "s.npy.json")
    assert record["data_fingerprint"] == "abc123" and record["dataset"] == "/d.csv"
    write_samples(x, tmp_path / "s.npy", vae=vae)  # no labels now: the old file would mislead
    assert not (tmp_path / "s.labels.npy").exists()


def test_output_format_and_the_public_name():
    assert [output_format(p) for p in ("a.npy", "a.NPZ", "a.csv", "a.png", "dir/", "dir")] == [
        "npy",
        "npz",
        "csv",
        "png",
        "folder",
        "folder",
    ]
    assert pyrovae.write_samples is write_samples and pyrovae.draw_samples is draw_samples
