"""Data streamed from disk: the same fingerprint, kind and splits as data read whole, cached
split files reused while the source is unchanged and rebuilt when it changed, the first bad
row named, nothing half-written, and training (with its exact resume) on memory-mapped rows
that matches training on the same rows in memory."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pyrovae.streamed_data as streamed_data
from pyrovae import ModelConfig, TrainConfig, read_metrics, train_model
from pyrovae.nets import DataScaling
from pyrovae.run_data import DataMismatchError
from pyrovae.streamed_data import STREAM_ABOVE_ENV, is_mapped, stream_above_bytes
from pyrovae.user_data import read_data

SPLITS = ("train", "val", "test")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of its own for each test; streaming left to each test to switch on."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(STREAM_ABOVE_ENV, raising=False)
    return tmp_path / "cache" / "streamed"


def _both(path: Path, monkeypatch, **kwargs):
    """``path`` read whole (the threshold above its size) and streamed (threshold 0)."""
    monkeypatch.setenv(STREAM_ABOVE_ENV, str(10**12))
    whole = read_data(path, **kwargs)
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's warning on read-only arrays is handled
        streamed = read_data(path, **kwargs)
    assert not whole.streamed and streamed.streamed
    return whole, streamed


def _assert_same(whole, streamed) -> None:
    assert streamed.fingerprint == whole.fingerprint
    assert (streamed.kind, streamed.split_rule) == (whole.kind, whole.split_rule)
    assert (streamed.num_classes, streamed.image_shape) == (whole.num_classes, whole.image_shape)
    assert streamed.splits.num_classes == whole.splits.num_classes
    for name in SPLITS:
        a, b = getattr(whole.splits, name), getattr(streamed.splits, name)
        assert b.x.dtype == torch.float32 and is_mapped(b.x)
        assert is_mapped(a.x) == whole.streamed
        assert torch.equal(a.x, b.x), name
        assert torch.equal(a.y, b.y), name


def _write(path: Path, x: np.ndarray) -> Path:
    np.save(path, x)
    return path


def test_threshold_is_a_quarter_of_available_memory_unless_set(monkeypatch) -> None:
    assert streamed_data.available_memory_bytes() > 0
    monkeypatch.setattr(streamed_data, "available_memory_bytes", lambda: 4_000_003)
    assert stream_above_bytes() == 1_000_000
    monkeypatch.setenv(STREAM_ABOVE_ENV, "12345")
    assert stream_above_bytes() == 12345
    monkeypatch.setenv(STREAM_ABOVE_ENV, "lots")
    with pytest.raises(ValueError, match=f"{STREAM_ABOVE_ENV}='lots' is not a byte count"):
        stream_above_bytes()


def test_small_file_is_read_whole_large_one_streams(tmp_path, monkeypatch) -> None:
    path = _write(tmp_path / "d.npy", np.ones((40, 5), dtype=np.float32))
    monkeypatch.setenv(STREAM_ABOVE_ENV, str(40 * 5 * 4))  # exactly its size: read whole
    assert not read_data(path).streamed
    monkeypatch.setenv(STREAM_ABOVE_ENV, str(40 * 5 * 4 - 1))
    data = read_data(path)
    assert data.streamed and data.describe().endswith("; streamed from disk")


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.normal(size=(203, 6)),  # float64, real
        lambda rng: rng.integers(0, 256, size=(97, 5, 4), dtype=np.uint8),  # grey 8-bit images
        lambda rng: rng.integers(0, 2, size=(50, 3, 2, 2)).astype(np.int16),  # binary colour
        lambda rng: rng.uniform(size=(61, 7)).astype(np.float32),  # unit
    ],
    ids=["real", "8-bit", "binary", "unit"],
)
def test_npy_streamed_matches_whole(tmp_path, monkeypatch, make) -> None:
    monkeypatch.setattr(streamed_data, "CHUNK_BYTES", 4 * 24 * 7)  # several chunks per pass
    path = _write(tmp_path / "d.npy", make(np.random.default_rng(0)))
    _assert_same(*_both(path, monkeypatch, val_fraction=0.2, test_fraction=0.15, seed=3))


def test_npz_with_labels_and_given_test_split_matches_whole(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x=rng.normal(size=(120, 2, 3)),
        y=rng.integers(0, 4, 120),
        x_test=rng.normal(size=(30, 2, 3)),
        y_test=rng.integers(0, 4, 30),
    )
    whole, streamed = _both(path, monkeypatch)
    _assert_same(whole, streamed)
    assert len(streamed.splits.test) == 30 and streamed.num_classes == 4


def test_compressed_npz_is_read_whole(tmp_path, monkeypatch) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(2).normal(size=(40, 3)))
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    assert not read_data(path).streamed


@pytest.mark.parametrize("row", [0, 37, 199])
def test_first_non_finite_row_is_named_and_nothing_written(tmp_path, monkeypatch, cache, row):
    monkeypatch.setattr(streamed_data, "CHUNK_BYTES", 4 * 3 * 16)  # 16 rows a chunk
    x = np.random.default_rng(3).normal(size=(200, 3))
    x[row, 1] = np.nan
    x[min(row + 5, 199), 2] = np.inf
    path = _write(tmp_path / "d.npy", x)
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    with pytest.raises(ValueError) as info:
        read_data(path)
    message = str(info.value)
    assert message == (
        f"{path}: row {row} of 'x' (0-based) holds NaN or an infinite value; drop or fill it"
    )
    monkeypatch.setenv(STREAM_ABOVE_ENV, str(10**12))
    with pytest.raises(ValueError) as whole:
        read_data(path)
    assert str(whole.value) == message
    assert not cache.exists()


def test_bad_row_of_a_given_test_split_is_named(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(4)
    x_test = rng.normal(size=(20, 3))
    x_test[11, 0] = -np.inf
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(50, 3)), x_test=x_test)
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    with pytest.raises(ValueError, match="row 11 of 'x_test' \\(0-based\\) holds NaN"):
        read_data(tmp_path / "d.npz")


def test_cached_splits_are_reused(tmp_path, monkeypatch, cache) -> None:
    path = _write(tmp_path / "d.npy", np.random.default_rng(5).normal(size=(80, 4)))
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    first = read_data(path)
    (folder,) = cache.iterdir()
    assert folder.name.startswith(first.fingerprint[:16])
    assert sorted(p.name for p in folder.iterdir()) == [
        "source.json",
        "test.npy",
        "train.npy",
        "val.npy",
    ]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("a cached split was written again")

    monkeypatch.setattr(streamed_data, "_write_split", refuse)
    again = read_data(path)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    _assert_same(first, again)


def test_changed_source_gets_new_splits_and_old_runs_refuse_it(tmp_path, monkeypatch, cache):
    x = np.random.default_rng(6).normal(size=(80, 4))
    path = _write(tmp_path / "d.npy", x)
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    old = read_data(path)
    x[3, 1] += 1.0
    _write(path, x)
    whole, new = _both(path, monkeypatch)
    _assert_same(whole, new)
    assert new.fingerprint != old.fingerprint
    (folder,) = cache.iterdir()  # the old version's split files are removed
    assert folder.name.startswith(new.fingerprint[:16])
    # a run trained on the old data refuses the new
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", data_fingerprint=old.fingerprint)
    model = ModelConfig(x_dim=4, z_dim=2, hidden_dims=[8], likelihood="gaussian")
    with pytest.raises(DataMismatchError, match="fingerprint"):
        train_model(model, config, new, tmp_path / "run", progress=False)


def test_stale_or_damaged_cache_is_rebuilt(tmp_path, monkeypatch, cache) -> None:
    path = _write(tmp_path / "d.npy", np.random.default_rng(7).normal(size=(80, 4)))
    whole, first = _both(path, monkeypatch)
    (folder,) = cache.iterdir()
    for name in ("val.npy", "train.npy"):  # damaged in place: unlinked and written anew
        (folder / name).unlink()
    np.save(folder / "val.npy", np.zeros((3, 4), dtype=np.float32))  # a wrong shape
    _assert_same(whole, read_data(path))
    np.save(folder / "train.npy", np.zeros(first.splits.train.x.shape, dtype=np.float32))
    (folder / "source.json").write_text('{"fingerprint": "another"}')  # not these data's
    _assert_same(whole, read_data(path))
    (folder / "train.npy").unlink()
    np.save(folder / "train.npy", np.zeros(first.splits.train.x.shape, dtype=np.float32))
    (folder / "source.json").write_text("{not json")  # damaged
    _assert_same(whole, read_data(path))
    _assert_same(whole, first)  # maps opened before a rebuild still read the old files


def test_interrupted_write_leaves_nothing_half_written(tmp_path, monkeypatch, cache) -> None:
    monkeypatch.setattr(streamed_data, "CHUNK_BYTES", 4 * 4 * 8)  # 8 rows a chunk
    path = _write(tmp_path / "d.npy", np.random.default_rng(8).normal(size=(80, 4)))
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    gather, calls = streamed_data._gather, []

    def fail_later(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return gather(*args)

    monkeypatch.setattr(streamed_data, "_gather", fail_later)
    with pytest.raises(KeyboardInterrupt):
        read_data(path)
    (folder,) = cache.iterdir()
    assert list(folder.iterdir()) == []  # no split file, no temporary file
    monkeypatch.setattr(streamed_data, "_gather", gather)
    _assert_same(*_both(path, monkeypatch))


def test_data_scaling_in_chunks_matches_one_piece(monkeypatch) -> None:
    x = torch.randn(1000, 7, dtype=torch.float64) * torch.linspace(0.1, 30, 7) + 1e3
    x[:, 2] = 1.5  # a constant column gets s = 1
    x = x.float()
    one = DataScaling(7).fit(x)
    monkeypatch.setattr(DataScaling, "FIT_CHUNK_VALUES", 7 * 64)  # 16 chunks
    chunked = DataScaling(7).fit(x)
    x64 = x.double()
    torch.testing.assert_close(chunked.loc, x64.mean(0).float(), rtol=0, atol=0)
    std = x64.std(0, unbiased=False)
    torch.testing.assert_close(chunked.scale, torch.where(std > 0, std, 1.0).float())
    torch.testing.assert_close(chunked.loc, one.loc, rtol=0, atol=0)
    torch.testing.assert_close(chunked.scale, one.scale)
    assert chunked.scale[2] == 1.0


def _train(data, out: Path, epochs: int, resume: bool = False):
    model = ModelConfig(x_dim=6, z_dim=2, hidden_dims=[16], likelihood="gaussian", standardize=True)
    config = TrainConfig(epochs=epochs, batch_size=32, device="cpu", kl_warmup=2)
    return train_model(model, config, data, out, resume=resume, progress=False)


def test_training_streamed_matches_in_memory_and_resumes_exactly(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 6)) * 5 + 40
    path = _write(tmp_path / "d.npy", x)
    monkeypatch.setattr(DataScaling, "FIT_CHUNK_VALUES", 6 * 50)  # the scaling in chunks
    whole, streamed = _both(path, monkeypatch)
    a = _train(whole, tmp_path / "whole", 3)
    b = _train(streamed, tmp_path / "streamed", 3)
    _train(streamed, tmp_path / "resumed", 1)
    c = _train(read_data(path), tmp_path / "resumed", 3, resume=True)
    for (name, va), (_, vb), (_, vc) in zip(
        a.state_dict().items(), b.state_dict().items(), c.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(vb, va, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(vc, va, rtol=0, atol=0, msg=name)
    rows = [read_metrics(tmp_path / run) for run in ("whole", "streamed", "resumed")]
    assert rows[0] == [{**r, "seconds": rows[0][i]["seconds"]} for i, r in enumerate(rows[1])]
    assert [r["val_elbo"] for r in rows[2]] == [r["val_elbo"] for r in rows[0]]
    assert rows[0][-1]["val_elbo"] > rows[0][0]["val_elbo"]  # it learns
    assert os.path.samefile(str(read_data(path).splits.root), str(path))


def test_full_disk_is_one_line_before_writing(tmp_path, monkeypatch, cache) -> None:
    path = _write(tmp_path / "d.npy", np.random.default_rng(10).normal(size=(80, 4)))
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    usage = streamed_data.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        streamed_data.shutil, "disk_usage", lambda _: usage._replace(free=80 * 4 * 4 - 1)
    )
    with pytest.raises(OSError) as info:
        read_data(path)
    message = str(info.value)
    assert "\n" not in message and "need 0.00 GiB" in message and "PYROVAE_CACHE" in message
    assert not cache.exists()  # nothing written


def test_train_command_streams_and_resumes(tmp_path, monkeypatch, capsys) -> None:
    from pyrovae.cli import main

    x = np.random.default_rng(11).normal(size=(120, 5)) * 3 + 7
    path = _write(tmp_path / "d.npy", x)
    monkeypatch.setenv(STREAM_ABOVE_ENV, "0")
    flags = ["--data", str(path), "--z-dim", "2", "--hidden-dims", "8", "--device", "cpu"]
    out = ["--quiet", "--out", str(tmp_path / "run")]
    assert main(["train", *flags, "--epochs", "1", *out]) == 0
    assert "; streamed from disk" in capsys.readouterr().out
    assert main(["train", "--resume", "--epochs", "2", *out]) == 0
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_trainer_keeps_a_mapped_training_split_where_it_is(tmp_path, monkeypatch) -> None:
    from pyrovae import build_model
    from pyrovae.train import Trainer

    path = _write(tmp_path / "d.npy", np.random.default_rng(12).normal(size=(90, 6)))
    whole, streamed = _both(path, monkeypatch)
    model = ModelConfig(x_dim=6, z_dim=2, hidden_dims=[8], likelihood="gaussian")
    config = TrainConfig(epochs=1, device="cpu", subset=50)
    for data in (whole, streamed):
        trainer = Trainer(build_model(model), data.splits, config, tmp_path / "run", model)
        assert trainer.streamed == data.streamed
        assert is_mapped(trainer.train_split.x) == data.streamed
        assert len(trainer.train_split) == 50
