"""Learning-rate schedules: Burda et al.'s stages, the rate of every epoch in a run, resume."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from pyrovae import ModelConfig, TrainConfig, read_metrics, train_model
from pyrovae.cli import main
from pyrovae.schedules import BURDA_EPOCHS, burda_stage, learning_rate
from pyrovae.train import METRIC_COLUMNS

MODEL = ModelConfig(z_dim=2, hidden_dims=[32], activation="tanh")


def config(**kwargs) -> TrainConfig:
    base = {"epochs": 5, "subset": 256, "batch_size": 64, "device": "cpu"}
    return TrainConfig(**{**base, **kwargs})


def test_burda_stages_last_three_to_the_i_epochs():
    stages = [burda_stage(e) for e in range(1, BURDA_EPOCHS + 1)]
    assert BURDA_EPOCHS == 3280
    assert [stages.count(i) for i in range(8)] == [3**i for i in range(8)]
    assert stages == sorted(stages)  # one block per stage, in order
    # boundaries: the last epoch of stage i is 1 + 3 + ... + 3^i
    assert [burda_stage(e) for e in (1, 2, 4, 5, 13, 14, 3280, 3281, 10**5)] == [
        0, 1, 1, 2, 2, 3, 7, 7, 7,
    ]  # fmt: skip


def test_learning_rates():
    assert learning_rate("constant", 3e-4, 1000) == 3e-4
    assert learning_rate("burda", 1e-3, 1) == 1e-3
    assert learning_rate("burda", 1e-3, 3) == pytest.approx(1e-3 * 10 ** (-1 / 7), rel=1e-15)
    assert learning_rate("burda", 1e-3, 3280) == pytest.approx(1e-4, rel=1e-14)
    with pytest.raises(ValueError, match=r"unknown lr_schedule 'cosine'; valid names"):
        learning_rate("cosine", 1e-3, 1)
    with pytest.raises(ValueError, match="epoch must be a positive integer, got 0"):
        learning_rate("burda", 1e-3, 0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"lr_schedule": "step"},
            "unknown lr_schedule 'step'; valid names are ['burda', 'constant']",
        ),
        ({"adam_eps": 0.0}, "adam_eps must be a positive number, got 0.0"),
        ({"adam_eps": math.nan}, "adam_eps must be a positive number, got nan"),
        ({"adam_eps": True}, "adam_eps must be a positive number, got True"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config(**kwargs)


def test_bad_activation_is_refused_when_configured():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; valid names are \["):
        ModelConfig(activation="swish")


def test_a_run_follows_the_schedule_and_resumes_on_it(mnist, tmp_path):
    """Epochs 1, 2-4, 5 are stages 0, 1, 2; a run stopped inside stage 1 resumes exactly."""
    full = train_model(MODEL, config(lr_schedule="burda", adam_eps=1e-4), mnist, tmp_path / "a",
                 progress=False)  # fmt: skip
    rates = [row["lr"] for row in read_metrics(tmp_path / "a")]
    assert rates == pytest.approx([1e-3 * 10 ** (-i / 7) for i in (0, 1, 1, 1, 2)], rel=1e-12)
    train_model(MODEL, config(epochs=2, lr_schedule="burda", adam_eps=1e-4), mnist, tmp_path / "b",
          progress=False)  # fmt: skip
    resumed = train_model(MODEL, config(lr_schedule="burda", adam_eps=1e-4), mnist, tmp_path / "b",
                    resume=True, progress=False)  # fmt: skip
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [r["lr"] for r in read_metrics(tmp_path / "b")] == rates


def test_adam_eps_changes_the_steps(mnist, tmp_path):
    """The epsilon reaches the optimizer: the same run with another one ends elsewhere."""
    a = train_model(MODEL, config(epochs=1), mnist, tmp_path / "a", progress=False)
    b = train_model(MODEL, config(epochs=1, adam_eps=1e-1), mnist, tmp_path / "b", progress=False)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["eps"] == 1e-1
    first = next(iter(a.state_dict()))
    assert not torch.equal(a.state_dict()[first], b.state_dict()[first])


def test_command_line(mnist_root, tmp_path, capsys):
    out = tmp_path / "burda"
    argv = ["train", "--data-root", str(mnist_root), "--out", str(out), "--z-dim", "2"]
    argv += ["--hidden-dims", "16", "--activation", "tanh", "--subset", "200"]
    argv += ["--batch-size", "100", "--lr-schedule", "burda", "--adam-eps", "1e-4"]
    argv += ["--device", "cpu", "--quiet"]
    assert main([*argv, "--epochs", "2"]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["model"]["activation"] == "tanh"
    assert (stored["train"]["lr_schedule"], stored["train"]["adam_eps"]) == ("burda", 1e-4)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3 * 10 ** (-1 / 7)])
    capsys.readouterr()
    code = main([*argv, "--epochs", "3", "--resume", "--lr-schedule", "constant"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "--lr-schedule constant differs from the stored burda" in err


def test_resuming_a_run_written_before_the_lr_column(mnist, tmp_path):
    """An older run's rows have no lr: resumed, they are written with an empty one and
    read without it."""
    train_model(MODEL, config(epochs=1), mnist, tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for row in state["metrics"]:
        del row["lr"]
    torch.save(state, tmp_path / "checkpoint.pt")
    train_model(MODEL, config(epochs=2), mnist, tmp_path, resume=True, progress=False)
    first, second = read_metrics(tmp_path)
    assert "lr" not in first and second["lr"] == 1e-3
    assert (first["epoch"], second["epoch"]) == (1, 2)
