"""The semi-supervised M2: enumeration against the explicit sum over labels, the labelled
loss against the CVAE's, learning from a few labels, the label protocol and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch.nn import functional as F

import pyrovae
from pyrovae.build import ModelConfig, build_model
from pyrovae.semi_supervised import choose_labelled, default_aux_weight
from pyrovae.trainer import TrainConfig

X_DIM, Z_DIM, CLASSES = 6, 2, 3


def small_m2(likelihood: str = "gaussian", **kw):
    return build_model(
        model="m2",
        x_dim=X_DIM,
        z_dim=Z_DIM,
        y_dim=CLASSES,
        hidden_dims=[5],
        likelihood=likelihood,
        **kw,
    )


def grads(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor]:
    params = [p for p in module.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def test_enumeration_gives_the_loss_and_gradient_of_the_explicit_sum_over_labels():
    """U(x) = sum_y q(y | x) L(x, y) + H(q(y | x)), with the z of each label drawn from the
    same standard normals as the enumerated guide draws them."""
    pyro.set_rng_seed(0)
    m2 = small_m2()
    m2.register_params = False
    x = torch.randn(4, X_DIM)
    torch.manual_seed(1)
    enumerated = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m2.model, m2.guide, x)
    torch.manual_seed(1)
    eps = torch.randn(CLASSES, 4, Z_DIM)  # the draws the enumerated z site made
    log_q_y = F.log_softmax(m2.classifier(x), -1)
    bounds = []
    for c in range(CLASSES):
        y = F.one_hot(torch.full((4,), c), CLASSES).float()
        loc, scale, _ = m2.encoder.encode(x, y)
        z = loc + scale * eps[c]
        log_p = (
            -math.log(CLASSES)
            + m2.prior().log_prob(z)
            + m2.decoder(z, y).log_prob(x)
            - m2.encoder(x, y).log_prob(z)
        )
        bounds.append(log_p)
    bound = torch.stack(bounds, -1)  # (B, C): L(x, y = c)
    explicit = -((log_q_y.exp() * (bound - log_q_y)).sum())
    torch.testing.assert_close(enumerated, explicit)
    for a, b in zip(grads(enumerated, m2), grads(explicit, m2), strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)
    # a plausible wrong bound, without the entropy of q(y | x), is measurably different
    wrong = -((log_q_y.exp() * bound).sum())
    assert (wrong - explicit).abs() > 0.1


def test_with_every_label_observed_the_loss_is_the_cvaes_plus_the_label_terms(tmp_path):
    """L(x, y) of M2 is the CVAE's ELBO plus log p(y) = -log C; the trainer's labelled
    objective adds alpha times the classifier's cross-entropy."""
    pyro.set_rng_seed(0)
    m2 = small_m2()
    cvae = build_model(
        model="cvae",
        x_dim=X_DIM,
        z_dim=Z_DIM,
        y_dim=CLASSES,
        hidden_dims=[5],
        likelihood="gaussian",
    )
    cvae.load_state_dict(
        {k: v for k, v in m2.state_dict().items() if not k.startswith("classifier.")}
    )
    m2.register_params = cvae.register_params = False
    x = torch.randn(5, X_DIM)
    labels = torch.tensor([0, 1, 2, 1, 0])
    y = F.one_hot(labels, CLASSES).float()
    torch.manual_seed(2)
    joint = Trace_ELBO().differentiable_loss(m2.model, m2.guide, x, y)
    torch.manual_seed(2)
    conditional = Trace_ELBO().differentiable_loss(cvae.model, cvae.guide, x, y)
    torch.testing.assert_close(joint, conditional + 5 * math.log(CLASSES))
    # the trainer's labelled objective: the same, and the classifier term beside it
    from pyrovae.semi_supervised import SemiSupervisedTrainer

    data = pyrovae.load_dataset(
        np.random.default_rng(0).normal(size=(60, X_DIM)), y=np.arange(60) % 3
    )
    config = TrainConfig(epochs=1, batch_size=10, device="cpu", labels=9, aux_weight=7.0)
    trainer = SemiSupervisedTrainer(
        m2, data, config, tmp_path, ModelConfig(**m2.config.to_dict()), progress=False
    )
    torch.manual_seed(2)
    loss, aux = trainer.labelled_loss(x, labels)
    torch.testing.assert_close(loss, conditional + 5 * math.log(CLASSES))
    torch.testing.assert_close(aux, F.cross_entropy(m2.classifier(x), labels, reduction="sum"))
    assert trainer.aux_weight == 7.0


def separable(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary rows of 3 classes, each a fixed pattern with 5% of its bits flipped."""
    rng = np.random.default_rng(seed)
    patterns = rng.random((3, 20)) < 0.5
    labels = rng.integers(0, 3, n)
    flips = rng.random((n, 20)) < 0.05
    return (patterns[labels] ^ flips).astype(np.float32), labels


def test_a_few_labels_reach_near_zero_error_on_separable_classes(tmp_path):
    """Two labelled images of each of three classes, the other 714 unlabelled: q(y | x) of
    the best checkpoint (by validation accuracy) classifies the test split."""
    x, labels = separable(900)
    data = pyrovae.load_dataset(x, y=labels)
    settings = {"model": "m2", "z_dim": 2, "hidden_dims": [32]}
    model = pyrovae.run_data.model_config_for(data, settings)[0]
    config = TrainConfig(epochs=8, batch_size=50, device="cpu", labels=6, aux_weight=100.0)
    pyrovae.train_model(model, config, data, tmp_path / "m2", progress=False)
    rows = pyrovae.read_metrics(tmp_path / "m2")
    assert {"labelled_elbo", "unlabelled_elbo", "val_accuracy"} <= set(rows[-1])
    assert rows[-1]["unlabelled_elbo"] > rows[0]["unlabelled_elbo"]  # it learned
    vae = pyrovae.load_run(tmp_path / "m2")  # best.pt
    test = data.test
    accuracy = float((vae.classify(test.x) == test.y).float().mean())
    assert accuracy > 0.98, accuracy


def test_the_labelled_images_are_balanced_seeded_and_refused_when_impossible():
    labels = torch.arange(100) % 4
    first = choose_labelled(labels, 20, 4, seed=3)
    assert torch.equal(first, choose_labelled(labels, 20, 4, seed=3))
    assert not torch.equal(first, choose_labelled(labels, 20, 4, seed=4))
    assert torch.bincount(labels[first], minlength=4).tolist() == [5, 5, 5, 5]
    assert first.unique().numel() == 20
    for n, expected in (
        (101, "more than the 100 training images"),
        (22, "does not divide over the 4 classes"),
    ):
        with pytest.raises(ValueError, match=expected):
            choose_labelled(labels, n, 4)
    skewed = torch.tensor([0] * 90 + [1] * 10)
    with pytest.raises(ValueError, match="asks for 15 images of class 1"):
        choose_labelled(skewed, 30, 2)
    assert default_aux_weight(50_000, 100) == pytest.approx(7500.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"prior": "mog"},
        {"prior": "vamp"},
        {"prior": "flow"},
        {"guide": "flow"},
        {"likelihood": "continuous-bernoulli"},
        {"net": "conv", "channels": [4, 8]},
        {"jit": True},
        {"num_particles": 3},
    ],
    ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()),
)
def test_every_component_trains_in_m2(settings, tmp_path):
    """A step of every prior, guide, likelihood and net pyrovae has for z, compiled or not,
    and the label-summed log p(x) of what it trained."""
    import pyrovae.analysis as pa

    rng = np.random.default_rng(0)
    x = (rng.random((120, 64)) < 0.3).astype(np.float32)
    data = pyrovae.load_dataset(x.reshape(120, 1, 8, 8), y=np.arange(120) % 3)
    train_keys = {"jit", "num_particles"}
    model_settings = {k: v for k, v in settings.items() if k not in train_keys}
    model = pyrovae.run_data.model_config_for(
        data, {"model": "m2", "z_dim": 2, "hidden_dims": [16], **model_settings}
    )[0]
    extra = {k: v for k, v in settings.items() if k in train_keys}
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", labels=12, seed=0, **extra)
    vae = pyrovae.train_model(model, config, data, tmp_path / "run", progress=False)
    rows = pyrovae.read_metrics(tmp_path / "run")
    assert math.isfinite(rows[0]["unlabelled_elbo"]) and math.isfinite(rows[0]["val_elbo"])
    test = data.test.x.reshape(len(data.test), -1)[:4]
    if vae.decoder.binarize:
        test = pyrovae.fixed_binarization(test)
    result = pa.estimate_log_likelihood(vae.eval(), test, num_samples=5, progress=False)
    assert torch.isfinite(result.per_datum).all()
