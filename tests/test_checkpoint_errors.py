"""Unsafe, damaged and malformed run files: one clear error each, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pyrovae.checkpoint import (
    CheckpointError,
    UnreadableFileError,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from pyrovae.cli import main
from pyrovae.runs import load_run, read_config

TINY = [
    *["--z-dim", "2", "--hidden-dims", "32", "--subset", "300", "--batch-size", "100"],
    *["--epochs", "1", "--device", "cpu", "--quiet"],
]
UNSAFE_ADVICE = "weights_only=False"


class Payload:
    """An arbitrary object: a checkpoint holding one is not plain data."""

    def __init__(self) -> None:
        self.value = 3


class Trap:
    """Unpickling this would create ``marker``: proof that code ran on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("checkpoint-errors") / "run"
    assert main(["train", "--data-root", str(mnist_root), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("pyrovae sample: error: ")
    assert UNSAFE_ADVICE not in err and "weights_only" not in err
    return err


def sample(run: Path, tmp_path: Path) -> int:
    return main(["sample", str(run), "--out", str(tmp_path / "x.png")])


def test_pickle_payload_is_refused_unread(tmp_path):
    marker = tmp_path / "code-ran"
    # the refused global is named: the class, or the callable the trap would have run
    for name, obj, named in [
        ("payload.pt", Payload(), f"({__name__}.Payload)"),
        ("trap.pt", Trap(marker), "(getattr)"),
    ]:
        path = tmp_path / name
        torch.save({"model": {"w": torch.zeros(2)}, "extra": obj}, path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert message.startswith(f"{path} holds objects other than tensors, numbers and strings")
        assert "so it was not loaded (a pyrovae checkpoint never does" in message
        assert UNSAFE_ADVICE not in message and "\n" not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert named in message
    assert not marker.exists()


def test_truncated_and_garbage_checkpoints(run_dir, tmp_path):
    data = (run_dir / "best.pt").read_bytes()
    assert isinstance(load_checkpoint(run_dir / "best.pt")["model"], dict)
    for name, content, cause in [
        ("half.pt", data[: len(data) // 2], "failed reading zip archive"),
        ("tail.pt", data[:-7], "failed reading zip archive"),
        ("empty.pt", b"", "the file is empty"),
        ("text.pt", b"not a checkpoint at all\n", "not a torch.save archive"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert message.startswith(f"{path} is not a complete checkpoint (truncated or corrupt: ")
        assert cause in message, message
        assert UNSAFE_ADVICE not in message and "\n" not in message


def test_cli_sample_refuses_a_pickle_payload(run_copy, tmp_path, capsys):
    state = load_checkpoint(run_copy / "best.pt")
    state["extra"] = Payload()
    torch.save(state, run_copy / "best.pt")
    err = one_line_error(capsys, sample(run_copy, tmp_path))
    assert f"{run_copy / 'best.pt'} holds objects other than tensors, numbers and strings" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_sample_names_a_truncated_checkpoint(run_copy, tmp_path, capsys):
    data = (run_copy / "best.pt").read_bytes()
    (run_copy / "best.pt").write_bytes(data[: len(data) // 2])
    err = one_line_error(capsys, sample(run_copy, tmp_path))
    assert f"{run_copy / 'best.pt'} is not a complete checkpoint (truncated or corrupt:" in err
    assert "PytorchStreamReader" not in err


def test_cli_sample_a_checkpoint_without_weights(run_copy, tmp_path, capsys):
    save_checkpoint(run_copy / "best.pt", {"epoch": 1})
    err = one_line_error(capsys, sample(run_copy, tmp_path))
    assert "best.pt holds no model weights" in err


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"model": {"z_dim": 2,}, "train": {}}', "is not valid JSON: Expecting property name"),
        ("", "is not valid JSON: Expecting value at line 1, column 1"),
        ('{"model": {}}', 'lacks the "train" section'),
        ('{"train": {}}', 'lacks the "model" section'),
        ("[1, 2]", "holds a JSON list"),
        ('{"model": {"z_dim": 0}, "train": {}}', "z_dim must be a positive integer"),
    ],
)
def test_cli_sample_names_a_bad_config(run_copy, tmp_path, capsys, text, expected):
    (run_copy / "config.json").write_text(text)
    err = one_line_error(capsys, sample(run_copy, tmp_path))
    assert f"{run_copy / 'config.json'}" in err and expected in err, err


def test_read_json_gives_the_position(tmp_path):
    path = tmp_path / "config.json"
    # the closing brace of the outer object is missing
    path.write_text('{\n  "model": {"z_dim": 2},\n  "train": {"epochs": 1\n}\n')
    with pytest.raises(UnreadableFileError) as info:
        read_json(path)
    assert str(info.value) == (
        f"{path} is not valid JSON: Expecting ',' delimiter at line 5, column 1; "
        "fix or restore the file"
    )
    path.write_bytes(b'{"model": "\xff"}')
    with pytest.raises(UnreadableFileError, match="is not UTF-8 text"):
        read_json(path)


def test_good_files_still_load(run_dir):
    config = read_config(run_dir)
    assert config.model.z_dim == 2
    assert load_run(run_dir).z_dim == 2
    json.loads((run_dir / "config.json").read_text())  # the files were not touched


def _with_model_config(run: Path, **changes) -> None:
    config = json.loads((run / "config.json").read_text())
    config["model"].update(changes)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_cli_names_a_z_dim_that_differs_from_the_checkpoint(run_copy, tmp_path, capsys, command):
    """best.pt trained with z_dim 2, config.json edited to say 5: one line, not a dozen."""
    _with_model_config(run_copy, z_dim=5)
    if command == "sample":
        code = sample(run_copy, tmp_path)
    else:
        code = main(["evaluate", str(run_copy), "--no-quality", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"pyrovae {command}: error: {run_copy / 'best.pt'} does not fit ")
    assert "decoder.net.0.weight is (32, 2) in the checkpoint but (32, 5) in the model" in err
    assert "config.json says z_dim 5 but the checkpoint was trained with z_dim 2" in err
    assert "restore the config.json the run was trained with" in err
    assert "size mismatch" not in err


def test_load_run_names_parameters_the_config_does_not_build(run_copy):
    _with_model_config(run_copy, prior="mog")
    with pytest.raises(CheckpointError) as info:
        load_run(run_copy)
    message = str(info.value)
    assert message.startswith(f"{run_copy / 'best.pt'} does not fit the model")
    assert "(prior 'mog', guide 'diagonal')" in message and "lacks prior.locs" in message
    assert "has prior.loc, prior.scale, which it does not build" in message
    assert "\n" not in message
