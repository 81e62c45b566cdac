"""Training: run directory contents, exact resume, non-finite losses, config validation."""

from __future__ import annotations

import csv

import pyro
import pytest
import torch

from pyrovae import ModelConfig, TrainConfig, build_model, load_run, read_metrics, train_model
from pyrovae.checkpoint import load_checkpoint
from pyrovae.traces import IWAE
from pyrovae.train import METRIC_COLUMNS, NonFiniteLossError, Trainer, make_objective

MODEL = ModelConfig(z_dim=2, hidden_dims=[32])


def small_config(**kwargs) -> TrainConfig:
    base = {"epochs": 2, "subset": 512, "batch_size": 64, "device": "cpu"}
    base.update(kwargs)
    return TrainConfig(**base)


def test_run_directory(mnist, tmp_path):
    vae = train_model(MODEL, small_config(), mnist, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt",
        "checkpoint.pt",
        "config.json",
        "metrics.csv",
    ]
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["train_elbo"]) < 0 and float(r["val_elbo"]) < 0 for r in rows)
    assert all(float(r["seconds"]) > 0 for r in rows)
    # Training improves the ELBO on held-out data.
    assert float(rows[1]["val_elbo"]) > float(rows[0]["val_elbo"])

    loaded = load_run(tmp_path, checkpoint="last")
    for (name, a), (_, b) in zip(
        vae.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    x = mnist.test.x[:5]
    torch.testing.assert_close(vae.reconstruct(x), loaded.reconstruct(x))
    assert loaded.run_config.model == MODEL
    assert not loaded.training


def test_resume_matches_uninterrupted_run(mnist, tmp_path):
    full = train_model(
        MODEL, small_config(epochs=3, kl_warmup=2), mnist, tmp_path / "a", progress=False
    )
    train_model(MODEL, small_config(epochs=1, kl_warmup=2), mnist, tmp_path / "b", progress=False)
    resumed = train_model(
        MODEL,
        small_config(epochs=3, kl_warmup=2),
        mnist,
        tmp_path / "b",
        resume=True,
        progress=False,
    )
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    rows_a, rows_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert (ra["epoch"], ra["train_elbo"], ra["val_elbo"], ra["kl_weight"]) == (
            rb["epoch"],
            rb["train_elbo"],
            rb["val_elbo"],
            rb["kl_weight"],
        )
    assert [r["kl_weight"] for r in rows_a] == [0.5, 1.0, 1.0]


def test_refuses_to_overwrite_a_run(mnist, tmp_path):
    train_model(MODEL, small_config(epochs=1), mnist, tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run; pass --resume"):
        train_model(MODEL, small_config(epochs=1), mnist, tmp_path, progress=False)


class _NaNAtSecondCall:
    """Wraps a real objective and returns NaN from its second call on."""

    def __init__(self, objective):
        self.objective, self.calls = objective, 0

    def differentiable_loss(self, model, guide, *args):
        self.calls += 1
        loss = self.objective.differentiable_loss(model, guide, *args)
        return loss * float("nan") if self.calls >= 2 else loss


def test_non_finite_loss_stops_and_keeps_checkpoint(mnist, tmp_path):
    train_model(MODEL, small_config(epochs=1), mnist, tmp_path, progress=False)
    before = {p: (tmp_path / p).read_bytes() for p in ("checkpoint.pt", "best.pt", "metrics.csv")}
    trainer = Trainer(
        build_model(MODEL), mnist, small_config(epochs=2), tmp_path, MODEL, progress=False
    )
    trainer.objective = _NaNAtSecondCall(trainer.objective)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step 2"):
        trainer.fit(resume=True)
    after = {p: (tmp_path / p).read_bytes() for p in before}
    assert after == before
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


@pytest.mark.parametrize(
    "elbo,cls", [("trace", "Trace_ELBO"), ("meanfield", "TraceMeanField_ELBO"), ("iwae", "IWAE")]
)
def test_objectives(elbo, cls, mnist, tmp_path):
    config = small_config(epochs=1, elbo=elbo, num_particles=3)
    assert type(make_objective(config)).__name__ == cls
    train_model(
        ModelConfig(z_dim=2, hidden_dims=[32], guide="flow"),
        config,
        mnist,
        tmp_path,
        progress=False,
    )
    assert read_metrics(tmp_path)[0]["val_elbo"] < 0


def test_cvae_trains(mnist, tmp_path):
    cvae = train_model(
        ModelConfig(model="cvae", z_dim=2, hidden_dims=[32]),
        small_config(epochs=1),
        mnist,
        tmp_path,
        progress=False,
    )
    assert cvae.conditional and read_metrics(tmp_path)[0]["val_elbo"] < 0


def test_iwae_bound_tightens_with_k():
    vae = build_model(x_dim=10, z_dim=2, hidden_dims=[8])
    x = torch.bernoulli(torch.rand(64, 10))
    with torch.no_grad():
        bounds = [
            -torch.tensor([IWAE(k).loss(vae.model, vae.guide, x) for _ in range(30)]).mean()
            for k in (1, 10, 100)
        ]
    assert bounds[0] < bounds[1] < bounds[2]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"lr": -1.0}, "lr must be a positive number, got -1.0"),
        (
            {"elbo": "renyi"},
            r"unknown elbo 'renyi'; valid names are \['iwae', 'meanfield', 'trace'\]",
        ),
        ({"kl_warmup": -1}, "kl_warmup must be a non-negative integer"),
        ({"clip_norm": 0.0}, "clip_norm must be positive"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
        (
            {"jit": True, "elbo": "iwae", "num_particles": 2},
            "jit works with elbo 'trace' or 'meanfield'",
        ),
    ],
)
def test_bad_train_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_gpu_is_a_clear_error(mnist, tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
        train_model(MODEL, small_config(device="cuda"), mnist, tmp_path, progress=False)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_jit_training(mnist, tmp_path):
    train_model(MODEL, small_config(epochs=1, jit=True), mnist, tmp_path, progress=False)
    assert read_metrics(tmp_path)[0]["val_elbo"] < 0


def test_jit_meanfield_compiles_once():
    """The compiled ELBO is traced on the first step and reused (Pyro 1.9 retraces)."""
    vae = build_model(ModelConfig(z_dim=3, hidden_dims=[16], x_dim=12))
    model, guide = vae.model, vae.guide
    objective = make_objective(TrainConfig(elbo="meanfield", jit=True))
    x = torch.rand(8, 12).bernoulli()
    losses = [objective.differentiable_loss(model, guide, x) for _ in range(3)]
    assert all(torch.isfinite(loss) for loss in losses)
    compiled = objective._differentiable_loss
    objective.differentiable_loss(model, guide, x).backward()
    assert objective._differentiable_loss is compiled and len(compiled.compiled) == 1
    assert all(p.grad is not None for p in vae.parameters() if p.requires_grad)


@pytest.mark.parametrize("elbo", ["trace", "meanfield", "iwae"])
def test_kl_warmup_weight_changes_every_objective(elbo):
    """The warm-up weight reaches the loss of every objective (it used to miss IWAE)."""
    from pyrovae.train import _LatentScale

    vae = build_model(x_dim=10, z_dim=2, hidden_dims=[8])
    x = torch.bernoulli(torch.rand(32, 10, generator=torch.Generator().manual_seed(0)))
    objective = make_objective(TrainConfig(elbo=elbo, num_particles=4))
    scale = _LatentScale()
    model, guide = scale(vae.model), scale(vae.guide)

    def loss(weight: float) -> float:
        scale.scale = weight
        pyro.set_rng_seed(1)
        return objective.differentiable_loss(model, guide, x).item()

    full, none = loss(1.0), loss(0.0)
    assert full != pytest.approx(none, rel=1e-3)
    pyro.set_rng_seed(1)
    assert full == pytest.approx(objective.differentiable_loss(vae.model, vae.guide, x).item())


def test_iwae_with_one_particle_is_refused():
    with pytest.raises(ValueError, match="--num-particles K with K >= 2"):
        TrainConfig(elbo="iwae")
    assert TrainConfig().elbo == "meanfield"  # the README's and the command line's default


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_jit_resume_matches_uninterrupted_run(mnist, tmp_path, elbo):
    """Compiling again after a resume draws no extra random numbers: the runs agree exactly."""
    config = {"jit": True, "elbo": elbo}
    full = train_model(
        MODEL, small_config(epochs=2, **config), mnist, tmp_path / "a", progress=False
    )
    train_model(MODEL, small_config(epochs=1, **config), mnist, tmp_path / "b", progress=False)
    resumed = train_model(
        MODEL, small_config(epochs=2, **config), mnist, tmp_path / "b", resume=True, progress=False
    )
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
