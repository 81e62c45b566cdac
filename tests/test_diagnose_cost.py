"""diagnose's plan and progress: said before the long steps, naming the flags that bound
them, counted in the units the steps spend, and never changing the results."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from test_diagnose import BUDGET  # the small budget of the diagnose tests

from pyrovae import build_model
from pyrovae.analysis.likelihood.annealing import DEFAULT_PILOT_CHAINS
from pyrovae.analysis.posterior import nuts as posterior
from pyrovae.analysis.posterior.diagnose import DiagnoseBudget, diagnose_plan, diagnose_run
from pyrovae.analysis.posterior.nuts import (
    UNADAPTED_WARMUP,
    NutsLength,
    nuts_length,
    reference_posterior,
)

FLAGS = (
    "--num-data",
    "--nuts-data",
    "--chains",
    "--warmup",
    "--samples",
    "--gap-steps",
    "--elbo-draws",
    "--ais-steps",
    "--ais-chains",
)
LONG_STEPS = ("NUTS p(z | x), image", "AIS log p(x), prior:", "q* fits of")
"""How the progress lines of the long steps begin (the plan's lines are indented)."""


def tiny() -> tuple[torch.nn.Module, SimpleNamespace]:
    torch.manual_seed(0)
    vae = build_model(x_dim=12, z_dim=2, hidden_dims=[8])
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(30) % 3
    x = torch.rand(30, 12, generator=gen)
    return vae, SimpleNamespace(test=SimpleNamespace(x=x, y=labels), num_classes=3)


@pytest.fixture
def often(monkeypatch):
    """Progress lines as often as they can come, as off a terminal."""
    monkeypatch.setenv("PYROVAE_PROGRESS_INTERVAL", "0.001")


def test_the_plan_comes_before_the_long_steps_and_names_the_flags(tmp_path, often, capsys):
    vae, data = tiny()
    diagnose_run(vae, data, tmp_path, BUDGET, figures=False, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("pyrovae diagnose: timing this machine for the plan")
    assert lines[1].startswith("pyrovae diagnose: about ")
    first = min(i for i, line in enumerate(lines) if line.startswith(LONG_STEPS))
    plan = "\n".join(lines[:first])
    for flag in FLAGS:
        assert flag in plan
    for step in ("NUTS p(z | x) of 2 images x 2 chains x (20 warm-up + 20)", "AIS log p(x) of 5"):
        assert step in plan
    assert "q* fits (diagonal) of 1 group of up to 8 images x 10 steps" in plan
    # every long step talks: lines while it runs (share done, elapsed) and one at its end
    for start, unit in zip(LONG_STEPS, ("iterations", "steps", "SVI steps"), strict=True):
        mine = [line for line in lines if line.startswith(start)]
        assert any("elapsed" in line for line in mine), start
        assert f" {unit}, " in mine[-1] and mine[-1].endswith(" s")
    for k in (1, 2):  # each image: 2 chains x 40 iterations
        image = [line for line in lines if line.startswith(f"NUTS p(z | x), image {k}/2 (#")]
        assert "80/80 iterations, " in image[-1]
    fits_end = [line for line in lines if line.startswith(LONG_STEPS[2])][-1]
    assert "10/10 SVI steps" in fits_end


def test_quiet_says_nothing_and_results_are_the_same_with_progress(tmp_path, often, capfd):
    vae, data = tiny()
    quiet = diagnose_run(vae, data, tmp_path / "quiet", BUDGET, figures=False, progress=False)
    assert capfd.readouterr().err == ""
    loud = diagnose_run(vae, data, tmp_path / "loud", BUDGET, figures=False, progress=True)
    assert "pyrovae diagnose: about" in capfd.readouterr().err
    assert quiet == loud


def test_planned_nuts_gradients_match_those_counted(tmp_path, monkeypatch):
    """The plan's NUTS units (a pilot's gradients per iteration times the iterations) come
    within a factor 2 of the log-joint evaluations the reference posteriors then make."""
    vae, data = tiny()
    budget = DiagnoseBudget(**{**BUDGET.__dict__, "warmup": 60, "samples": 40})
    steps = diagnose_plan(vae, data, budget)
    planned = steps[0].units
    assert steps[0].unit == "gradients" and math.isfinite(steps[0].seconds)
    calls = [0]
    made = posterior.latent_model

    def counting(*args):
        model = made(*args)

        def counted() -> None:
            calls[0] += 1
            model()

        return counted

    monkeypatch.setattr(posterior, "latent_model", counting)
    diagnose_run(vae, data, tmp_path, budget, figures=False, progress=False)
    assert planned / 2 < calls[0] < 2 * planned, (planned, calls[0])
    # and the other steps' units follow their flags
    ais = steps[1]
    leapfrog = 10
    assert ais.units == 5 * (2 + DEFAULT_PILOT_CHAINS) * ((5 - 1) * leapfrog + 1)
    assert steps[2].units == 1 * budget.gap_steps and steps[2].unit == "SVI steps"
    doubled = diagnose_plan(vae, data, DiagnoseBudget(**{**budget.__dict__, "chains": 4}))
    assert doubled[0].units == pytest.approx(2 * planned)


def test_the_pilot_counts_gradients_per_iteration():
    vae, data = tiny()
    x = data.test.x[0]
    length = nuts_length(vae, x, warmup=10, num_samples=10, seed=3)
    assert length.sample >= 1 and length.warmup >= 1 and length.rate > 0
    # a pilot whose warm-up is the whole warm-up predicts it as counted there
    assert length.gradients(10, 0) == pytest.approx(10 * length.warmup)
    # warm-up after the first mass-matrix update costs halfway between the pilot's
    # warm-up iterations and its draws
    fake = NutsLength(warmup=30.0, sample=10.0, pilot_warmup=40, pilot_samples=10)
    assert UNADAPTED_WARMUP == 100
    assert fake.gradients(300, 50) == 100 * 30 + 200 * 20 + 50 * 10
    assert fake.gradients(60, 50) == 60 * 30 + 50 * 10
    # a seeded pilot leaves the global RNG alone
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    nuts_length(vae, x, warmup=5, num_samples=5, seed=0)
    assert torch.equal(torch.rand(3), before)
    first = reference_posterior(vae, x, num_chains=1, warmup=5, num_samples=5, seed=7)
    nuts_length(vae, x, warmup=5, num_samples=5, seed=0)
    second = reference_posterior(vae, x, num_chains=1, warmup=5, num_samples=5, seed=7)
    assert torch.equal(first.draws, second.draws)


def test_the_command_line_says_the_plan_unless_quiet(tmp_path, often, monkeypatch, capsys):
    import pyrovae.cli as cli
    import pyrovae.cli.diagnose as diagnose_command
    import pyrovae.runs as runs

    vae, data = tiny()
    monkeypatch.setattr(runs, "load_run", lambda *a, **k: vae)
    monkeypatch.setattr(diagnose_command, "load_data", lambda *a, **k: data)
    argv = ["diagnose", str(tmp_path), "--out", str(tmp_path / "d"), "--num-data", "3"]
    argv += ["--nuts-data", "1", "--chains", "2", "--warmup", "10", "--samples", "10"]
    argv += ["--gap-steps", "5", "--ais-steps", "3", "--ais-chains", "2", "--elbo-draws", "20"]
    assert cli.main([*argv, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\npyrovae diagnose: about " in err and "--gap-steps" in err
    assert "NUTS p(z | x) of 1 image x 2 chains x (10 warm-up + 10)" in err
    assert "ELBO of q and q* on 3 images x 20 draws" in err
    assert cli.main([*argv, "--device", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
