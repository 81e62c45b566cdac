"""An evaluation says what it will do and how long it should take before it starts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyrovae import cli
from pyrovae.analysis.cost import Step, measure_rate, plan_text
from pyrovae.analysis.evaluation.evaluate import evaluate_run
from pyrovae.analysis.evaluation.plan import evaluation_steps
from pyrovae.cli import main
from pyrovae.cli.evaluation_flags import settings_from
from pyrovae.settings import DEFAULT_NUM_TEST, DEFAULT_NUM_TRAIN, EvaluationSettings


def test_plan_text_totals_the_known_steps():
    steps = [Step("fit 2 sources", 30.0), Step("log p(x)", 150.0, 2e6, "draws")]
    text = plan_text("evaluate", steps, "--num-test bounds it")
    lines = text.splitlines()
    assert lines[0] == "evaluate: about 3 min 00 s on this machine at the rates measured now"
    assert lines[2] == "  log p(x) (2.0M draws): ~2 min 30 s"
    assert lines[-1] == "  --num-test bounds it"
    unknown = plan_text("x", [Step("a", 5.0), Step("b", math.nan)])
    assert "(plus steps of unknown length)" in unknown and "b: ~unknown" in unknown


def test_measure_rate_counts_units_over_time():
    calls = []

    def run() -> float:
        calls.append(1)
        return 10.0

    rate = measure_rate(run, min_seconds=0.0)
    assert len(calls) == 2  # a warm-up, then one timed call
    assert rate > 0


def test_steps_scale_with_the_budget(small_vae, mnist):
    """The log-likelihood step's work is num_test x K draws, and its time grows with it."""
    kwargs = dict(sources=["prior", "gaussian-z"], num_train=500, quality=False, surgery=False)
    small = evaluation_steps(small_vae, mnist, num_samples=10, num_test=20, **kwargs)
    large = evaluation_steps(small_vae, mnist, num_samples=100, num_test=200, **kwargs)
    (is_small,) = [s for s in small if s.what.startswith("log p(x) of 20")]
    (is_large,) = [s for s in large if s.what.startswith("log p(x) of 200")]
    assert (is_small.units, is_large.units) == (200, 20_000)
    assert all(math.isfinite(s.seconds) and s.seconds >= 0 for s in small + large)
    assert is_large.seconds > 10 * is_small.seconds


def test_evaluate_run_writes_its_plan_before_the_work(small_vae, mnist, capsys, monkeypatch):
    monkeypatch.setenv("PYROVAE_PROGRESS_INTERVAL", "0.01")
    evaluate_run(
        small_vae,
        mnist,
        sources=["gaussian-z", "aggregate"],
        num_samples=8,
        num_test=30,
        num_train=300,
        surgery=True,
    )
    err = capsys.readouterr().err
    plan = err.index("evaluate (rates measured in")
    assert plan < err.index("fitting sources") < err.index("log p(x): 3 sources, 30 images")
    block = err[plan:].splitlines()
    assert block[1].startswith("  fit 2 sources to 300 training encodings: ~")
    assert block[2].startswith("  log p(x) of 30 images, K=8, 3 sources (240 draws): ~")
    assert any(line.startswith("  ELBO surgery on 300 training images: ~") for line in block)
    assert any("--num-test, --num-train, --sources and --num-samples" in ln for ln in block)
    assert "--full" in err


def test_no_plan_without_progress(small_vae, mnist, capsys):
    evaluate_run(
        small_vae,
        mnist,
        sources=["gaussian-z"],
        num_samples=4,
        num_test=10,
        num_train=200,
        surgery=False,
        progress=False,
    )
    assert capsys.readouterr().err == ""


def test_defaults_bound_the_work_and_full_asks_for_everything():
    assert (EvaluationSettings().num_test, EvaluationSettings().num_train) == (
        DEFAULT_NUM_TEST,
        DEFAULT_NUM_TRAIN,
    )
    assert (DEFAULT_NUM_TEST, DEFAULT_NUM_TRAIN) == (1000, 10_000)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--full"], (None, None)),
        (["--num-test", "all"], (None, DEFAULT_NUM_TRAIN)),
        (["--num-train", "all", "--num-test", "40"], (40, None)),
        ([], (DEFAULT_NUM_TEST, DEFAULT_NUM_TRAIN)),
    ],
)
def test_full_and_all_on_the_command_line(flags, expected):
    args = cli.build_parser().parse_args(["evaluate", "RUN", *flags])
    settings, asked = settings_from(args)
    assert (settings.num_test, settings.num_train) == expected
    if flags:
        assert {"num_test", "num_train"} & asked


def test_full_with_a_count_is_one_line_error(capsys):
    code = main(["evaluate", "/nonexistent", "--full", "--num-test", "40"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "--full asks for every image, but --num-test 40 asks for fewer" in err


def test_settings_of_all_are_stored_as_null(tmp_path):
    stored = json.loads(json.dumps(EvaluationSettings(num_test=None, num_train=None).to_dict()))
    assert stored["num_test"] is None and stored["num_train"] is None


def test_study_plan_times_each_training_before_it_starts(mnist, capsys):
    from pyrovae.build import ModelConfig
    from pyrovae.settings import QUICK
    from pyrovae.study import _announce_study, _epoch_seconds
    from pyrovae.train import TrainConfig

    small = ModelConfig(model="vae", z_dim=2, hidden_dims=[16])
    cond = ModelConfig(model="cvae", z_dim=2, hidden_dims=[16])
    config = TrainConfig(epochs=3, subset=256, device="cpu")
    one = _epoch_seconds(small, config, mnist, torch.device("cpu"))
    assert math.isfinite(one) and one > 0
    configs = [("vae-z2", small, config, 3), ("cvae-z2", cond, config, 0)]
    _announce_study(configs, mnist, QUICK, torch.device("cpu"), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("study: about ")
    assert lines[1].startswith("  train vae-z2 (3 epochs): ~")
    assert not any("cvae-z2" in line for line in lines)  # already trained: nothing to time
    assert lines[2].startswith("  evaluate 2 runs (200 held-out images, K=20; each prints")
    assert "--epochs" in lines[-1]
    _announce_study(configs, mnist, QUICK, torch.device("cpu"), progress=False)
    assert capsys.readouterr().err == ""


def test_plan_of_a_cvae(small_cvae, mnist):
    steps = evaluation_steps(
        small_cvae,
        mnist,
        sources=["prior", "aggregate", "gmm"],
        num_samples=10,
        num_test=20,
        num_train=300,
        quality=True,
        num_quality_samples=50,
    )
    assert [s.what.split(" ")[0] for s in steps] == ["fit", "log", "log", "sample", "ELBO"]
    assert all(math.isfinite(s.seconds) and s.seconds >= 0 for s in steps)
