"""Reading the user's data files: each format round-trips, the split rule, the kind, the
fingerprint, and a one-line error for each bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.user_data import read_data


def _rows(x: np.ndarray) -> list[tuple[float, ...]]:
    return sorted(map(tuple, np.asarray(x, dtype=np.float32).reshape(len(x), -1).tolist()))


def _all(data) -> tuple[torch.Tensor, torch.Tensor]:
    s = data.splits
    return torch.cat([s.train.x, s.val.x, s.test.x]), torch.cat([s.train.y, s.val.y, s.test.y])


def _one_line_error(exc: type[Exception], *names: str, **kwargs) -> str:
    """The message of the error read_data raises, checked to be one line naming ``names``."""
    path = kwargs.pop("path")
    with pytest.raises(exc) as info:
        read_data(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    return message


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


# ----------------------------------------------------------------------------- formats


def test_npy_vectors_round_trip_and_unlabelled_convention(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(30, 4))
    np.save(tmp_path / "d.npy", x)
    data = read_data(tmp_path / "d.npy")
    got_x, got_y = _all(data)
    assert got_x.dtype == torch.float32 and got_x.shape == (30, 4)
    assert _rows(got_x.numpy()) == _rows(x)
    assert data.kind == "real" and data.image_shape is None
    # unlabelled: y all zeros, one class in the splits, None in UserData
    assert data.num_classes is None and data.splits.num_classes == 1
    assert torch.equal(got_y, torch.zeros(30, dtype=torch.long))
    assert data.path == (tmp_path / "d.npy").resolve() and data.splits.name == "d.npy"


def test_npy_grey_images_keep_their_shape(tmp_path) -> None:
    x = (np.random.default_rng(1).random((12, 5, 6)) > 0.5).astype(np.uint8)
    np.save(tmp_path / "img.npy", x)
    data = read_data(tmp_path / "img.npy")
    assert data.image_shape == (1, 5, 6) and data.splits.train.x.shape[1] == 30
    assert data.kind == "binary"
    assert _rows(_all(data)[0].numpy()) == _rows(x)


def test_npz_labels_and_given_test_split(tmp_path) -> None:
    rng = np.random.default_rng(2)
    x, y = rng.random((40, 3)), rng.integers(0, 4, 40)
    x_test, y_test = rng.random((7, 3)), rng.integers(0, 4, 7)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    data = read_data(tmp_path / "d.npz")
    s = data.splits
    # the given test split is kept, in its order; validation is 10% of the other 40 rows
    assert torch.equal(s.test.x, torch.from_numpy(x_test.astype(np.float32)))
    assert torch.equal(s.test.y, torch.from_numpy(y_test))
    assert (len(s.train), len(s.val), len(s.test)) == (36, 4, 7)
    train_val = torch.cat([s.train.x, s.val.x]).numpy()
    assert _rows(train_val) == _rows(x)
    # each row keeps its own label
    by_row = {
        tuple(r): int(label) for r, label in zip(x.astype(np.float32).tolist(), y, strict=True)
    }
    for split in (s.train, s.val):
        for row, label in zip(split.x.tolist(), split.y.tolist(), strict=True):
            assert by_row[tuple(row)] == label
    assert data.num_classes == int(max(y.max(), y_test.max())) + 1
    assert data.kind == "unit" and "given as the test split" in data.split_rule


def test_pt_tensor_and_dict(tmp_path) -> None:
    x = torch.randint(0, 256, (25, 3, 4, 4), dtype=torch.uint8)
    torch.save(x, tmp_path / "t.pt")
    data = read_data(tmp_path / "t.pt")
    assert data.image_shape == (3, 4, 4) and data.kind == "8-bit"
    assert _all(data)[0].max() > 1  # 0..255 kept, not divided by 255
    assert _rows(_all(data)[0].numpy()) == _rows(x.numpy())

    y = torch.arange(25) % 3
    torch.save(
        {"x": x.float(), "y": y, "x_test": x[:5].float(), "y_test": y[:5]}, tmp_path / "d.pt"
    )
    data = read_data(tmp_path / "d.pt")
    assert len(data.splits.test) == 5 and data.num_classes == 3
    assert torch.equal(data.splits.test.y, y[:5])


def test_csv_with_label_column(tmp_path) -> None:
    path = _write_csv(
        tmp_path / "d.csv", "a,label,b\n" + "".join(f"{i},{i % 2},{-i}\n" for i in range(10))
    )
    data = read_data(path, label_column="label")
    x, y = _all(data)
    assert x.shape == (10, 2) and data.num_classes == 2 and data.kind == "real"
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        assert row[1] == -row[0] and label == int(row[0]) % 2


def test_csv_quoted_cells_read_like_plain_ones(tmp_path) -> None:
    plain = _write_csv(tmp_path / "plain.csv", "a,b\n0.5,1\n0.25,0\n1,0\n")
    quoted = _write_csv(tmp_path / "quoted.csv", '"a","b"\n"0.5","1"\n0.25,0\n\n1,0\n')
    a, b = read_data(plain), read_data(quoted)
    assert torch.equal(_all(a)[0], _all(b)[0]) and a.fingerprint == b.fingerprint


def test_image_folder_grey_and_colour(tmp_path) -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (3, 6, 5))
    colour = rng.integers(0, 256, (2, 6, 5, 3))
    for i, a in enumerate(grey):
        _write_png(tmp_path / "imgs" / "cat" / f"{i}.png", a)
    for i, a in enumerate(colour):
        _write_png(tmp_path / "imgs" / "dog" / f"{i}.png", a)
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")
    data = read_data(tmp_path / "imgs", val_fraction=0.2, test_fraction=0.2)
    assert data.image_shape == (3, 6, 5) and data.kind == "8-bit"
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    written = [np.repeat(a[None], 3, axis=0) for a in grey] + [a.transpose(2, 0, 1) for a in colour]
    x, y = _all(data)
    assert _rows(x.numpy()) == _rows(np.stack(written))
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1]


def test_image_folder_train_test_and_resize(tmp_path) -> None:
    rng = np.random.default_rng(4)
    for split, n in (("train", 4), ("test", 2)):
        for k in ("a", "b"):
            for i in range(n):
                size = (6, 6) if i else (8, 7)
                _write_png(tmp_path / "f" / split / k / f"{i}.png", rng.integers(0, 2, size) * 255)
    _one_line_error(ValueError, "6x6 pixels", "7x8", "image_size=N", path=tmp_path / "f")
    (tmp_path / "f" / "train" / "c").mkdir()
    _one_line_error(ValueError, "train/c", "no PNG/JPEG", path=tmp_path / "f", image_size=5)
    (tmp_path / "f" / "train" / "c").rmdir()
    data = read_data(tmp_path / "f", image_size=5)
    assert data.image_shape == (1, 5, 5)
    assert (len(data.splits.train) + len(data.splits.val), len(data.splits.test)) == (8, 4)
    assert sorted(data.splits.test.y.tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([0.0, 1.0, 1.0, 0.0], "binary"),
        ([0.0, 0.5, 1.0, 0.25], "unit"),
        ([0.0, 3.0, 255.0, 17.0], "8-bit"),
        ([0.0, 3.5, 255.0, 17.0], "real"),
        ([0.0, 3.0, 256.0, 17.0], "real"),
        ([-1.0, 0.0, 1.0, 0.0], "real"),
    ],
)
def test_kind_inferred(tmp_path, values, kind) -> None:
    np.save(tmp_path / "k.npy", np.array(values * 3).reshape(6, 2))
    data = read_data(tmp_path / "k.npy", val_fraction=0.2, test_fraction=0.2)
    assert data.kind == kind and kind in data.describe()


# ----------------------------------------------------------------------------- splits


def test_split_sizes_disjoint_covering_and_seeded(tmp_path) -> None:
    x = np.arange(100 * 2, dtype=np.float64).reshape(100, 2)  # every row distinct
    np.save(tmp_path / "d.npy", x)
    a = read_data(tmp_path / "d.npy", seed=5)
    s = a.splits
    assert (len(s.train), len(s.val), len(s.test)) == (80, 10, 10)
    keys = [set(split.x[:, 0].tolist()) for split in (s.train, s.val, s.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert set().union(*keys) == set(x[:, 0].tolist())
    b = read_data(tmp_path / "d.npy", seed=5)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a.splits, name).x, getattr(b.splits, name).x)
    c = read_data(tmp_path / "d.npy", seed=6)
    assert not torch.equal(a.splits.test.x, c.splits.test.x)
    assert "seed 5" in a.split_rule and "80" in a.split_rule
    assert a.fingerprint == c.fingerprint  # the fingerprint is of the data, not of the split
    line = a.describe()
    assert "\n" not in line and "100 rows" in line and "train 80 / val 10 / test 10" in line


def test_split_rounds_and_keeps_one_row_each(tmp_path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((3, 2)))
    s = read_data(tmp_path / "d.npy").splits  # 10% of 3 rows rounds to 0: one row each
    assert (len(s.train), len(s.val), len(s.test)) == (1, 1, 1)
    np.save(tmp_path / "e.npy", np.zeros((25, 2)))
    s = read_data(tmp_path / "e.npy", val_fraction=0.3, test_fraction=0.2).splits
    assert (len(s.train), len(s.val), len(s.test)) == (12, 8, 5)  # 7.5 rounds up to 8
    # fractions below 1 that round to every row leave no training row: refused
    np.save(tmp_path / "f.npy", np.zeros((10, 2)))
    _one_line_error(
        ValueError,
        "f.npy",
        "10 rows",
        "at least 11",
        path=tmp_path / "f.npy",
        val_fraction=0.45,
        test_fraction=0.45,
    )


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_same_data_same_print_any_format(tmp_path) -> None:
    x = np.array([[0.0, 1.5], [2.0, 3.0], [4.25, 5.0], [6.0, 7.0]])
    np.save(tmp_path / "d.npy", x)
    _write_csv(tmp_path / "d.csv", "p,q\n" + "".join(f"{a},{b}\n" for a, b in x))
    first = read_data(tmp_path / "d.npy", val_fraction=0.25, test_fraction=0.25)
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0
    assert read_data(tmp_path / "d.npy", val_fraction=0.25, test_fraction=0.25).fingerprint == (
        first.fingerprint
    )
    assert read_data(tmp_path / "d.csv", val_fraction=0.25, test_fraction=0.25).fingerprint == (
        first.fingerprint
    )
    changed = x.copy()
    changed[2, 1] = 5.5
    np.save(tmp_path / "c.npy", changed)
    assert read_data(tmp_path / "c.npy", val_fraction=0.25, test_fraction=0.25).fingerprint != (
        first.fingerprint
    )


def test_fingerprint_covers_labels_and_shape(tmp_path) -> None:
    x = np.zeros((6, 4))
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 0, 1, 0, 1]))
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, 0, 1, 0, 0]))
    np.savez(tmp_path / "c.npz", x=x)
    np.save(tmp_path / "d.npy", x.reshape(6, 2, 2))
    kw = {"val_fraction": 0.2, "test_fraction": 0.2}
    prints = {
        read_data(tmp_path / f, **kw).fingerprint for f in ("a.npz", "b.npz", "c.npz", "d.npy")
    }
    assert len(prints) == 4


# ----------------------------------------------------------------------------- errors


def test_missing_path_and_unknown_suffix(tmp_path) -> None:
    _one_line_error(
        FileNotFoundError, "nowhere.npy", "does not exist", path=tmp_path / "nowhere.npy"
    )
    (tmp_path / "d.txt").write_text("1 2 3")
    _one_line_error(ValueError, "d.txt", "'.txt'", ".csv", path=tmp_path / "d.txt")
    (tmp_path / "bad.npy").write_text("not an array")
    _one_line_error(ValueError, "bad.npy", "np.save", path=tmp_path / "bad.npy")


def test_csv_errors_name_the_line_and_column(tmp_path) -> None:
    ragged = _write_csv(tmp_path / "r.csv", "a,b\n1,2\n3,4\n5\n")
    _one_line_error(ValueError, "r.csv", "line 4", "1 cells", "2", path=ragged)
    text = _write_csv(tmp_path / "t.csv", "a,b\n1,2\n3,four\n")
    _one_line_error(ValueError, "t.csv", "line 3", "'b'", "'four'", path=text)
    nan = _write_csv(tmp_path / "n.csv", "a,b\n1,2\n3,4\n5,nan\n6,7\n")
    _one_line_error(ValueError, "n.csv", "line 4", "'b'", "not finite", path=nan)
    big = _write_csv(tmp_path / "b.csv", "a,b\n1,2\n3,1e40\n")
    _one_line_error(ValueError, "b.csv", "line 3", "1e+40", path=big)
    no_header = _write_csv(tmp_path / "h.csv", "1,2\n3,4\n")
    _one_line_error(ValueError, "h.csv", "header", path=no_header)
    ok = _write_csv(tmp_path / "ok.csv", "a,b\n1,0\n3,1\n5,1\n")
    _one_line_error(ValueError, "label_column 'c'", "['a', 'b']", path=ok, label_column="c")
    half = _write_csv(tmp_path / "half.csv", "a,b\n1,0\n3,1.5\n5,1\n")
    _one_line_error(ValueError, "half.csv", "line 3", "'b'", "1.5", path=half, label_column="b")
    empty = _write_csv(tmp_path / "e.csv", "a,b\n")
    _one_line_error(ValueError, "e.csv", "0 rows", path=empty, label_column="b")


def test_array_errors(tmp_path) -> None:
    x = np.ones((10, 3))
    x[6, 1] = np.inf
    np.save(tmp_path / "inf.npy", x)
    _one_line_error(ValueError, "inf.npy", "row 6", "infinite", path=tmp_path / "inf.npy")
    x[6, 1] = 1e40  # finite in float64, beyond float32
    np.save(tmp_path / "big.npy", x)
    _one_line_error(ValueError, "big.npy", "row 6", path=tmp_path / "big.npy")
    x[6, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=np.ones((5, 3)), x_test=x)
    _one_line_error(ValueError, "nan.npz", "row 6 of 'x_test'", path=tmp_path / "nan.npz")
    np.savez(tmp_path / "y.npz", x=np.ones((5, 3)), y=np.array([0, 1, 0.5, 1, 0]))
    _one_line_error(ValueError, "y.npz", "0.5", "row 2", "integer", path=tmp_path / "y.npz")
    np.savez(tmp_path / "neg.npz", x=np.ones((5, 3)), y=np.array([0, 1, -1, 1, 0]))
    _one_line_error(ValueError, "neg.npz", "-1", path=tmp_path / "neg.npz")
    np.savez(tmp_path / "short.npz", x=np.ones((5, 3)), y=np.array([0, 1]))
    _one_line_error(ValueError, "short.npz", "(5,)", path=tmp_path / "short.npz")
    np.savez(tmp_path / "nox.npz", data=np.ones((5, 3)))
    _one_line_error(ValueError, "nox.npz", "['data']", path=tmp_path / "nox.npz")
    np.save(tmp_path / "flat.npy", np.ones(5))
    _one_line_error(ValueError, "flat.npy", "(5,)", "(N, D)", path=tmp_path / "flat.npy")
    torch.save([1, 2], tmp_path / "list.pt")
    _one_line_error(ValueError, "list.pt", "list", path=tmp_path / "list.pt")


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"val_fraction": 0.0}, ("val_fraction", "0.0")),
        ({"test_fraction": 1.0}, ("test_fraction", "1.0")),
        ({"val_fraction": -0.1}, ("val_fraction",)),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, ("0.5 + 0.5",)),
        ({"image_size": 8}, ("image_size", "d.npy")),
        ({"label_column": "a"}, ("label_column", "d.npy")),
    ],
)
def test_bad_arguments(tmp_path, kwargs, names) -> None:
    np.save(tmp_path / "d.npy", np.zeros((10, 2)))
    _one_line_error(ValueError, *names, path=tmp_path / "d.npy", **kwargs)


def test_too_few_rows(tmp_path) -> None:
    np.save(tmp_path / "two.npy", np.zeros((2, 2)))
    _one_line_error(ValueError, "two.npy", "2 rows", "at least 3", path=tmp_path / "two.npy")
    np.savez(tmp_path / "t.npz", x=np.zeros((1, 2)), x_test=np.zeros((4, 2)))
    _one_line_error(ValueError, "t.npz", "outside the given test split", path=tmp_path / "t.npz")


# ----------------------------------------------------------------------------- API


def test_exported_and_no_image_library_at_import() -> None:
    import ast

    import pyrovae
    import pyrovae.user_data as module

    assert pyrovae.read_data is read_data and pyrovae.UserData is module.UserData
    tree = ast.parse(Path(module.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not {m.split(".")[0] for m in names} & {"PIL", "torchvision"}


# ----------------------------------------------------------------------------- in memory


def test_arrays_tensors_and_datasets_read_as_the_same_file(tmp_path) -> None:
    """Rows given in Python split and fingerprint exactly as the same rows in a file."""
    from torch.utils.data import TensorDataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 3, 4, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    from_file = read_data(tmp_path / "d.npz")
    for given in (
        read_data(x, y=y),
        read_data(torch.from_numpy(x), y=torch.from_numpy(y)),
        read_data(TensorDataset(torch.from_numpy(x), torch.from_numpy(y))),
    ):
        assert given.fingerprint == from_file.fingerprint
        assert given.kind == "8-bit" and given.image_shape == (3, 4, 4)
        assert torch.equal(given.splits.test.x, from_file.splits.test.x)
        assert str(given.path) == "<memory>" and given.splits.root is None


def test_in_memory_refusals() -> None:
    from torch.utils.data import TensorDataset

    _one_line_error(ValueError, "y applies to data given as arrays", path="x.npy", y=[1])
    _one_line_error(ValueError, "dict", path={"x": 1})
    ragged = [torch.zeros(3), torch.zeros(4)]
    _one_line_error(ValueError, "item 1", "shape (4,)", path=ragged_dataset(ragged))
    _one_line_error(
        ValueError, "y was given with a Dataset", path=TensorDataset(torch.zeros(5, 2)), y=[0]
    )


def ragged_dataset(items: list[torch.Tensor]) -> torch.utils.data.Dataset:
    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> torch.Tensor:
            return items[i]

    return Items()
