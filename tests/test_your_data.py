"""The user's own data through training and evaluation: likelihoods chosen by the kind of
values, standardization in the data's units (exact answers of a linear Gaussian model), the
fingerprint that ties a run to its data, and the one-line refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pyrovae import TrainConfig, read_data, train_model
from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.exact import (
    LinearGaussianEncoder,
    ppca_log_marginal,
    ppca_posterior,
)
from pyrovae.analysis.likelihood.loglik import estimate_log_likelihood
from pyrovae.build import build_model
from pyrovae.cli import main
from pyrovae.data import Split, Splits
from pyrovae.models import VAE
from pyrovae.nets import data_scaling
from pyrovae.run_data import (
    DataMismatchError,
    check_likelihood,
    model_config_for,
    open_data,
)
from pyrovae.runs import load_run, read_config

D, Z = 6, 2
LOC = np.array([0.0, -50.0, 500.0, 1e4, 3.0, 0.0])
SCALE = np.array([1.0, 10.0, 100.0, 1000.0, 0.1, 5.0])
JACOBIAN = float(np.log(SCALE).sum())  # 13.1 nats: what dropping it would cost


def linear_gaussian_data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = LOC + SCALE (W z + 0.3 eps): rows, and the true mean and covariance of x."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, Z))
    x = LOC + SCALE * (rng.normal(size=(n, Z)) @ w.T + 0.3 * rng.normal(size=(n, D)))
    cov = np.diag(SCALE) @ (w @ w.T + 0.09 * np.eye(D)) @ np.diag(SCALE)
    return x.astype(np.float32), LOC, cov


def standardized_ppca(seed: int = 0, widen: float = 1.4) -> VAE:
    """A linear Gaussian decoder of standardized data (m = LOC, d = SCALE), float64, with
    the exact posterior in the data's units (widened, so importance weights vary) as guide."""
    torch.manual_seed(seed)
    vae = build_model(
        x_dim=D,
        z_dim=Z,
        hidden_dims=[8],
        decoder_hidden_dims=[],
        likelihood="gaussian",
        standardize=True,
    ).double()
    scaling = data_scaling(vae.decoder)
    with torch.no_grad():
        scaling.loc.copy_(torch.tensor(LOC))
        scaling.scale.copy_(torch.tensor(SCALE))
        vae.decoder.raw_scale.copy_(torch.linspace(-1.5, -0.5, D))
    # the posterior of the model in data units: x = d W z + m + d b + d s eps
    w = SCALE[:, None] * vae.decoder.net[0].weight.detach().numpy()
    b = LOC + SCALE * vae.decoder.net[0].bias.detach().numpy()
    s = SCALE * vae.decoder.scale.detach().numpy()
    gain, offset, cov = ppca_posterior(torch.tensor(w), torch.tensor(b), torch.tensor(s))
    encoder = LinearGaussianEncoder(gain, offset, widen * cov.diagonal().sqrt())
    return VAE(encoder, vae.decoder, vae.prior).double().eval()


def test_standardized_decoder_density_is_the_data_units_density():
    """log p(x | z) = log N(u; W z + b, s^2) - sum log d with u = (x - m) / d, and the
    closed-form marginal is N(m + d b, d (W W^T + s^2) d)."""
    vae = standardized_ppca()
    x = torch.tensor(linear_gaussian_data(8)[0], dtype=torch.float64)
    z = torch.randn(8, Z, dtype=torch.float64)
    u = (x - torch.tensor(LOC)) / torch.tensor(SCALE)
    lin = vae.decoder.net[0]
    in_u = torch.distributions.Normal(lin(z), vae.decoder.scale).log_prob(u).sum(-1)
    torch.testing.assert_close(vae.decoder(z).log_prob(x), in_u - JACOBIAN)
    w, b = lin.weight.detach(), lin.bias.detach()
    d = torch.tensor(SCALE)
    cov = d[:, None] * (w @ w.T + torch.diag(vae.decoder.scale.detach() ** 2)) * d
    marginal = torch.distributions.MultivariateNormal(torch.tensor(LOC) + d * b, cov)
    torch.testing.assert_close(ppca_log_marginal(vae, x), marginal.log_prob(x))


def test_importance_sampling_and_ais_in_the_data_units():
    """Both estimators agree with the exact log p(x) of a standardized model within their
    Monte Carlo error, and would not without the Jacobian (13 nats away)."""
    vae = standardized_ppca()
    x = torch.tensor(linear_gaussian_data(16, seed=2)[0], dtype=torch.float64)
    exact = ppca_log_marginal(vae, x)
    result = estimate_log_likelihood(
        vae, x, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )
    stderr = mc_stderr(result.log_weights)
    err = (result.per_datum - exact).abs()
    assert (err < 5 * stderr + 1e-3).all(), err
    assert ((result.per_datum - (exact + JACOBIAN)).abs() > 5 * stderr + 1).all()
    ais = ais_log_likelihood(vae, x, num_steps=100, num_chains=16, seed=0)
    err = (ais.per_datum - exact).abs()
    assert (err < 5 * mc_stderr(ais.log_weights) + 1e-3).all(), err


def mc_stderr(log_weights: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log(mean w) per row: sd(w) / (sqrt(K) mean(w))."""
    w = (log_weights - log_weights.max(1, keepdim=True).values).exp()
    return w.std(1) / (math.sqrt(w.shape[1]) * w.mean(1))


def test_training_on_linear_gaussian_data_recovers_its_density(tmp_path):
    """A linear VAE trained on data of a known linear Gaussian model (scales 0.1 to 1,000)
    reaches the true held-out log-likelihood in the data's units: the trained model's exact
    log p(x) is within 0.3 nats of the truth's (the Jacobian alone is 13 nats)."""
    x, loc, cov = linear_gaussian_data(3000)
    np.save(tmp_path / "lg.npy", x)
    user = read_data(tmp_path / "lg.npy")
    assert user.kind == "real"
    config, notes = model_config_for(
        user.splits, {"z_dim": Z, "hidden_dims": [16], "decoder_hidden_dims": []}
    )
    assert config.likelihood == "gaussian" and config.standardize
    assert any("gaussian (inferred from real values)" in line for line in notes)
    vae = train_model(
        config,
        TrainConfig(epochs=20, lr=0.01, batch_size=100),
        user,
        tmp_path / "run",
        progress=False,
    )
    test = user.splits.test.x.double()
    truth = torch.distributions.MultivariateNormal(torch.tensor(loc), torch.tensor(cov))
    gap = float((ppca_log_marginal(vae.cpu(), test) - truth.log_prob(test)).mean())
    assert abs(gap) < 0.3, gap
    saved = read_config(tmp_path / "run").train
    assert saved.data == str((tmp_path / "lg.npy").resolve()) and saved.dataset is None
    assert saved.data_fingerprint == user.fingerprint and saved.data_kind == "real"
    # the scaling is fitted to the training split and saved with the weights
    reloaded = data_scaling(load_run(tmp_path / "run").decoder)
    train_x = user.splits.train.x.double()
    torch.testing.assert_close(reloaded.loc.double(), train_x.mean(0), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    "likelihood,kind,fix",
    [
        ("bernoulli", "real", "--likelihood gaussian"),
        ("bernoulli", "8-bit", "--likelihood discretized-logistic or --likelihood gaussian"),
        ("continuous-bernoulli", "8-bit", "--likelihood discretized-logistic"),
        ("discretized-logistic", "real", "--likelihood gaussian"),
        ("discretized-logistic", "unit", "--likelihood bernoulli"),
    ],
)
def test_a_likelihood_that_cannot_fit_the_values_is_refused(likelihood, kind, fix):
    with pytest.raises(ValueError) as info:
        check_likelihood(likelihood, kind)
    assert f"--likelihood {likelihood}" in str(info.value) and fix in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kind,values,likelihood,standardize",
    [
        ("binary", [0.0, 1.0], "bernoulli", False),
        ("unit", [0.0, 0.5], "bernoulli", False),
        ("8-bit", [0.0, 255.0], "discretized-logistic", True),
        ("real", [-2.5, 3.0], "gaussian", True),
    ],
)
def test_the_likelihood_follows_the_kind_of_values(kind, values, likelihood, standardize):
    x = torch.tensor(values).repeat(6, 2)
    split = Split(x, torch.zeros(len(x), dtype=torch.long))
    splits = Splits(split, split, split, "toy", num_classes=1, kind=kind)
    config, _ = model_config_for(splits, {"z_dim": 2, "hidden_dims": [4]})
    assert (config.likelihood, config.standardize, config.x_dim) == (likelihood, standardize, 4)
    with pytest.raises(ValueError, match="--model cvae needs labelled data"):
        model_config_for(splits, {"model": "cvae"})


def binary_csv(path, n: int = 120, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = (rng.random((n, 5)) < (0.2 + 0.3 * y[:, None])).astype(int)
    lines = ["a,b,c,d,e,label"] + [",".join(map(str, [*r, c])) for r, c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


TINY = ["--z-dim", "2", "--hidden-dims", "8", "--epochs", "1", "--device", "cpu", "--quiet"]


def test_train_a_cvae_on_a_csv_with_a_label_column(tmp_path, capsys):
    binary_csv(tmp_path / "toy.csv")
    argv = ["train", "--data", str(tmp_path / "toy.csv"), "--label-column", "label"]
    code = main([*argv, "--model", "cvae", "--out", str(tmp_path / "run"), *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "toy.csv: 120 rows of shape (5,), binary, 3 classes" in out
    assert "likelihood: bernoulli (inferred from binary values)" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["y_dim"] == 3 and config["model"]["x_dim"] == 5
    assert config["train"]["label_column"] == "label"
    assert config["train"]["column_names"] == ["a", "b", "c", "d", "e"]
    data = open_data(read_config(tmp_path / "run").train)
    assert data.num_classes == 3 and data.kind == "binary"
    # resuming with the same command line continues the run
    code = main([*argv, "--model", "cvae", "--out", str(tmp_path / "run"), "--resume"])
    assert code == 0


def one_line(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--likelihood", "bernoulli"], "--likelihood bernoulli is a distribution on [0, 1]"),
        (["--likelihood", "discretized-logistic"], "use --likelihood gaussian"),
        (["--model", "cvae"], "--model cvae needs labelled data"),
        (["--dataset", "mnist"], "both name the data; give one"),
        (["--prior", "vamp"], "vamp prior's pseudo-inputs live in [0, 1]"),
    ],
)
def test_refusals_write_nothing(tmp_path, capsys, extra, expected):
    np.save(tmp_path / "real.npy", linear_gaussian_data(40)[0])
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "real.npy"), "--out", str(out), *extra, *TINY])
    one_line(capsys, code, expected)
    assert not out.exists()


def test_reading_flags_need_data(tmp_path, capsys):
    code = main(["train", "--label-column", "y", "--out", str(tmp_path / "run"), *TINY])
    one_line(capsys, code, "--label-column applies to your own data only; add --data PATH")


def test_a_run_refuses_other_data(tmp_path, capsys):
    """Data whose fingerprint differs from the run's are refused by resume and by every
    command that reads the run's data, in one line; a moved copy of the same data is read."""
    binary_csv(tmp_path / "toy.csv")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "toy.csv"), "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    before = (run / "checkpoint.pt").read_bytes()
    binary_csv(tmp_path / "toy.csv", seed=1)  # the same file name, other rows
    code = main(["train", "--out", str(run), "--resume", "--epochs", "2"])
    one_line(capsys, code, "is not the data this run was trained on")
    assert (run / "checkpoint.pt").read_bytes() == before
    binary_csv(tmp_path / "moved.csv")  # the original rows, elsewhere
    config = read_config(run).train
    assert len(open_data(config, path=tmp_path / "moved.csv").train) > 0
    with pytest.raises(DataMismatchError):
        open_data(config)
    sample = ["sample", str(run), "--source", "gmm", "--n", "4"]
    code = main([*sample, "--out", str(tmp_path / "s.npy")])
    one_line(capsys, code, "is not the data this run was trained on")
    assert not (tmp_path / "s.npy").exists()


def test_python_training_refuses_other_data_on_resume(tmp_path):
    binary_csv(tmp_path / "a.csv")
    binary_csv(tmp_path / "b.csv", seed=1)
    first = read_data(tmp_path / "a.csv")
    config, _ = model_config_for(first.splits, {"z_dim": 2, "hidden_dims": [4]})
    train_model(config, TrainConfig(epochs=1), first, tmp_path / "run", progress=False)
    saved = read_config(tmp_path / "run").train
    with pytest.raises(DataMismatchError, match="is not the data the run"):
        train_model(
            config,
            saved,
            read_data(tmp_path / "b.csv"),
            tmp_path / "run",
            resume=True,
            progress=False,
        )


def test_colour_images_get_a_discretized_likelihood_and_evaluate(tmp_path, capsys):
    """A folder of 8-bit colour images of two classes: a standardized discretized logistic
    (values stay integers 0..255), trained and evaluated with every source."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(24):
            base = 60 if label == "cats" else 180
            pixels = np.clip(base + rng.normal(0, 30, size=(6, 6, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{i}.png")
    run = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "imgs"), "--out", str(run), *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rows of shape (3, 6, 6), 8-bit, 2 classes" in out
    assert "likelihood: discretized-logistic (inferred from 8-bit values)" in out
    vae = load_run(run)
    assert vae.config.image_shape == [3, 6, 6] and vae.config.standardize
    x = open_data(read_config(run).train).test.x
    assert torch.equal(x, x.round()) and x.max() <= 255
    result = estimate_log_likelihood(vae, x, num_samples=20, seed=0, progress=False)
    # a probability mass of integers: log p(x) <= 0
    assert (result.per_datum <= 0).all()
    budget = [
        "--num-test",
        "8",
        "--num-train",
        "30",
        "--num-samples",
        "10",
        "--flow-steps",
        "5",
        "--num-quality-samples",
        "16",
        "--quiet",
    ]
    code = main(["evaluate", str(run), *budget])
    assert code == 0, capsys.readouterr()
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert set(evaluation["sources"]) >= {"prior", "aggregate", "gmm", "flow"}
    assert evaluation["data"] == {
        "name": "imgs",
        "kind": "8-bit",
        "image_shape": [3, 6, 6],
        "x_dim": 108,
        "num_classes": 2,
    }
    for entry in evaluation["sources"].values():
        assert entry["bits_per_dim"] == pytest.approx(-entry["loglik"] / (108 * math.log(2)))
        assert 0 <= entry["c2st"]["accuracy"] <= 1 and "precision" in entry["precision_recall"]
    assert "bits per dimension (8-bit values" in capsys.readouterr().out


def test_load_dataset_takes_a_name_or_your_data(tmp_path):
    import pyrovae

    binary_csv(tmp_path / "toy.csv")
    splits = pyrovae.load_dataset(tmp_path / "toy.csv", label_column="label")
    assert splits.num_classes == 3 and splits.kind == "binary" and splits.train.x.shape[1] == 5
    x = np.random.default_rng(0).normal(size=(20, 3))
    assert pyrovae.load_dataset(x).kind == "real"
    with pytest.raises(ValueError, match="neither a built-in data set"):
        pyrovae.load_dataset("mnsit")
    with pytest.raises(ValueError, match="apply to your own data"):
        pyrovae.load_dataset("mnist", label_column="y")
