"""``pyrovae evaluate`` and ``pyrovae diagnose --from-python FILE.py:FUNC --params FILE``: a
Pyro model/guide pair written by the user, trained by Pyro's own SVI, from the command line."""

from __future__ import annotations

import json

import pyro
import pytest
import torch

from pyrovae.cli import main

MY_VAE = """
import pyro, pyro.distributions as dist, torch
from torch import nn


class VAE(nn.Module):
    def __init__(self, z_dim=4, hidden=32):
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Linear(784, hidden)
        self.loc = nn.Linear(hidden, z_dim)
        self.log_scale = nn.Linear(hidden, z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, 784))

    def model(self, x):
        pyro.module("decoder", self.dec)
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros((x.shape[0], self.z_dim))
            z = pyro.sample("latent", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0]):
            h = nn.functional.softplus(self.enc(x))
            scale = torch.exp(self.log_scale(h))
            pyro.sample("latent", dist.Normal(self.loc(h), scale).to_event(1))


def build():
    return VAE()
"""

BUDGET = ["--num-test", "10", "--num-train", "100", "--num-samples", "10"]
BUDGET += ["--flow-steps", "5", "--no-quality", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    """my_vae.py, and its weights after a few SVI steps saved both ways."""
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    root = tmp_path_factory.mktemp("mine")
    (root / "my_vae.py").write_text(MY_VAE)
    namespace: dict = {}
    exec(compile(MY_VAE, str(root / "my_vae.py"), "exec"), namespace)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    net = namespace["build"]()
    svi = SVI(net.model, net.guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())
    for start in range(0, 1000, 100):
        svi.step(torch.bernoulli(mnist.train.x[start : start + 100]))
    pyro.get_param_store().save(str(root / "params.pt"))
    torch.save(net.state_dict(), root / "state.pt")
    return root


def test_evaluate_a_pair_from_python_with_either_kind_of_weights(trained, mnist_root, capsys):
    results = {}
    for params in ("params.pt", "state.pt"):
        out = trained / f"{params}.json"
        argv = ["evaluate", "--from-python", f"{trained / 'my_vae.py'}:build"]
        argv += ["--params", str(trained / params), "--data-root", str(mnist_root)]
        assert main([*argv, "--out", str(out), *BUDGET]) == 0, capsys.readouterr().err
        results[params] = json.loads(out.read_text())
    store, state = results["params.pt"], results["state.pt"]
    assert store["sources"]["prior"]["loglik"] == state["sources"]["prior"]["loglik"]
    assert set(store["sources"]) >= {"prior", "aggregate", "gmm", "flow"}
    # the weights were loaded: a fresh, untrained pair scores differently
    argv = ["evaluate", "--from-python", f"{trained / 'my_vae.py'}:build"]
    fresh = trained / "fresh.json"
    assert main([*argv, "--data-root", str(mnist_root), "--out", str(fresh), *BUDGET]) == 0
    assert json.loads(fresh.read_text())["loglik"] != store["loglik"]


def test_diagnose_a_pair_from_python(trained, mnist_root, capsys):
    out = trained / "diagnostics"
    argv = ["diagnose", "--from-python", f"{trained / 'my_vae.py'}:build"]
    argv += ["--params", str(trained / "params.pt"), "--data-root", str(mnist_root)]
    argv += ["--out", str(out), "--num-data", "2", "--nuts-data", "1", "--chains", "2"]
    argv += ["--warmup", "50", "--samples", "50", "--gap-steps", "10", "--ais-steps", "5"]
    assert main([*argv, "--ais-chains", "2", "--quiet", "--device", "cpu"]) == 0
    assert "2 images, 1 with a NUTS reference" in capsys.readouterr().out
    assert json.loads((out / "diagnostics.json").read_text())["num_data"] == 2


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["evaluate", "--out", "x.json"], "give RUN_DIR or --from-python FILE.py:FUNC"),
        (["evaluate", "run", "--from-python", "a.py:f", "--out", "x.json"], "got both"),
        (["evaluate", "run", "--params", "p.pt"], "--params applies to --from-python only"),
        (["evaluate", "--from-python", "a.py:f"], "--from-python needs --out"),
        (["evaluate", "--from-python", "nofunc", "--out", "x.json"], "must be FILE.py:FUNC"),
        (["evaluate", "--from-python", "missing.py:f", "--out", "x.json"], "is not a file"),
    ],
)
def test_refusals(argv, expected, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and expected in err, err


def test_a_missing_function_and_a_broken_file_are_one_line(tmp_path, capsys):
    (tmp_path / "ok.py").write_text("def build():\n    return 1\n")
    (tmp_path / "bad.py").write_text("raise RuntimeError('no GPU here')\n")
    for spec, expected in (
        (f"{tmp_path / 'ok.py'}:other", "defines no function 'other'"),
        (f"{tmp_path / 'ok.py'}:build", "returned a int; return (model, guide)"),
        (f"{tmp_path / 'bad.py'}:build", "RuntimeError: no GPU here"),
    ):
        code = main(["evaluate", "--from-python", spec, "--out", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1 and expected in err, err


MY_CVAE = """
import pyro, pyro.distributions as dist, torch
from torch import nn


class CVAE(nn.Module):
    def __init__(self, z_dim=3, hidden=32):
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Linear(784 + 10, 2 * z_dim)
        self.dec = nn.Linear(z_dim + 10, 784)

    def model(self, x, y):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            logits = self.dec(torch.cat([z, y], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x, y):
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(torch.cat([x, y], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def build():
    return CVAE()
"""


def test_a_cvae_pair_takes_the_datas_labels(tmp_path, mnist_root, capsys):
    import numpy as np

    (tmp_path / "my_cvae.py").write_text(MY_CVAE)
    spec = f"{tmp_path / 'my_cvae.py'}:build"
    out = tmp_path / "cvae.json"
    argv = ["evaluate", "--from-python", spec, "--data-root", str(mnist_root)]
    assert main([*argv, "--out", str(out), *BUDGET]) == 0, capsys.readouterr().err
    evaluation = json.loads(out.read_text())
    assert evaluation["conditional"] is True or "prior" in evaluation["sources"]
    # data without labels cannot feed model(x, y): refused in one line
    np.save(tmp_path / "unlabelled.npy", np.random.default_rng(0).random((50, 784)))
    argv = ["evaluate", "--from-python", spec, "--data", str(tmp_path / "unlabelled.npy")]
    code = main([*argv, "--out", str(tmp_path / "no.json"), *BUDGET])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "the model takes labels" in err, err


def test_report_a_pair_alone_and_beside_a_run(trained, small_vae, mnist_root, tmp_path, capsys):
    import shutil

    pair = ["--from-python", f"{trained / 'my_vae.py'}:build"]
    pair += ["--params", str(trained / "params.pt")]
    alone = tmp_path / "alone"
    argv = ["report", *pair, "--data-root", str(mnist_root), "--out", str(alone), *BUDGET]
    assert main(argv) == 0, capsys.readouterr().err
    page = (alone / "report.html").read_text()
    assert "my_vae-build" in page and "A Pyro model/guide pair written outside pyrovae" in page
    assert "latent site &#39;latent&#39;" in page and "Bernoulli likelihood" in page
    assert "Not shown" in page and "trained outside pyrovae" in page
    assert len(list((alone / "figures" / "my_vae-build").glob("*.png"))) >= 5
    # beside one of pyrovae's runs, on the run's data, under the name asked for
    run = shutil.copytree(small_vae.run_dir, tmp_path / "vae-z2")
    both = tmp_path / "both"
    argv = ["report", str(run), *pair, "--name", "mine", "--out", str(both), *BUDGET]
    assert main([*argv, "--data-root", str(mnist_root)]) == 0, capsys.readouterr().err
    page = (both / "report.html").read_text()
    assert 'id="' in page and "vae-z2" in page and ">mine<" in page
    assert "Summary across runs" in page


def test_report_shows_the_pairs_saved_evaluation_and_diagnostics(
    trained, mnist_root, tmp_path, capsys
):
    spec = f"{trained / 'my_vae.py'}:build"
    pair = ["--from-python", spec, "--params", str(trained / "params.pt")]
    data = ["--data-root", str(mnist_root)]
    saved = tmp_path / "evaluation.json"
    assert main(["evaluate", *pair, *data, "--out", str(saved), *BUDGET]) == 0
    diag = tmp_path / "diag"
    argv = ["diagnose", *pair, *data, "--out", str(diag), "--num-data", "2", "--nuts-data"]
    argv += ["1", "--chains", "2", "--warmup", "30", "--samples", "30", "--gap-steps", "5"]
    assert main([*argv, "--ais-steps", "5", "--ais-chains", "2", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    argv = ["report", *pair, *data, "--evaluation", str(saved), "--diagnostics", str(diag)]
    budget = [b for b in BUDGET if b != "--quiet"]
    assert main([*argv, "--out", str(out), *budget]) == 0, capsys.readouterr().err
    assert "reusing its evaluation" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "Inference quality" in page and "Inference quality: no diagnostics" not in page
    # other settings, or other weights, are refused in one line before any work
    fresh = tmp_path / "fresh.json"
    assert main(["evaluate", "--from-python", spec, *data, "--out", str(fresh), *BUDGET]) == 0
    capsys.readouterr()
    for evaluation, extra, expected in (
        (saved, ["--num-samples", "20"], "was made with other settings"),
        (fresh, [], "other model weights"),
    ):
        argv = ["report", *pair, *data, "--evaluation", str(evaluation), *BUDGET, *extra]
        code = main([*argv, "--out", str(tmp_path / "refused")])
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1 and expected in err, err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["report", "--out", "r"], "give one or more RUN_DIRs, or --from-python"),
        (["report", "run", "--name", "n", "--out", "r"], "--name applies to --from-python only"),
        (
            ["report", "run", "--from-python", "a.py:f", "--dataset", "kmnist", "--out", "r"],
            "drop --dataset",
        ),
        (
            ["report", "--from-python", "a.py:f", "--evaluation", "none.json", "--out", "r"],
            "--evaluation 'none.json' is not a file",
        ),
        (
            ["report", "--from-python", "a.py:f", "--diagnostics", ".", "--out", "r"],
            "holds no diagnostics.json",
        ),
    ],
)
def test_report_refusals(argv, expected, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and expected in err, err


def test_sample_a_pair_from_python(trained, mnist_root, tmp_path, capsys):
    import numpy as np

    pair = ["--from-python", f"{trained / 'my_vae.py'}:build"]
    pair += ["--params", str(trained / "params.pt"), "--data-root", str(mnist_root)]
    out = tmp_path / "gmm.npy"
    argv = ["sample", *pair, "--source", "gmm", "--num-train", "300", "--n", "12"]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0, capsys.readouterr().err
    x = np.load(out)
    assert x.shape == (12, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    record = json.loads((tmp_path / "gmm.npy.json").read_text())
    assert record["from_python"].endswith("my_vae.py:build") and record["source"] == "gmm"
    assert record["params"].endswith("params.pt") and record["dataset"] == "mnist"
    # per class: z of digit 3 from the mixture fitted to the encodings of 3s alone
    out = tmp_path / "threes.npz"
    argv = ["sample", *pair, "--source", "gaussian-z", "--label", "3", "--num-train", "300"]
    assert main([*argv, "--n", "5", "--out", str(out), "--device", "cpu"]) == 0
    assert (np.load(out)["y"] == 3).all()
    capsys.readouterr()
    code = main(["sample", *pair, "--label", "3", "--out", str(tmp_path / "no.npy")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "the pair is an unconditional VAE" in err, err
