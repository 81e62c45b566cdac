"""Per-datum random numbers: estimates that do not depend on the pass size, on the other
data of a pass, or on the number of processes they are sharded over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pyrovae import build_model
from pyrovae.analysis.likelihood import datum_noise
from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.bdmc import bdmc
from pyrovae.analysis.likelihood.datum_noise import METHODS, DatumNoise, datum_normals
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods
from pyrovae.analysis.likelihood.proposals import initial_distribution
from pyrovae.analysis.likelihood.sharding import (
    sharded_ais_log_likelihood,
    sharded_bdmc,
    sharded_source_log_likelihoods,
)
from pyrovae.analysis.sources import fit_sources
from pyrovae.cli import main

NUM_SAMPLES = 40
ROUNDING = 1e-5  # the networks' float32 products in batches of other sizes


def problem():
    """A small Bernoulli VAE, binary data and three sources (one adapted proposal each)."""
    torch.manual_seed(0)
    vae = build_model(x_dim=20, z_dim=3, hidden_dims=[16], likelihood="bernoulli").eval()
    x = (torch.rand(23, 20) < 0.4).float()
    sources = fit_sources(["gaussian-z", "aggregate"], vae, x, progress=False)
    return vae, x, {"prior": None, **sources}


@pytest.fixture(params=METHODS)
def method(request, monkeypatch):
    """Run the test with each way of making per-datum numbers (CPU default: generators)."""
    monkeypatch.setattr(datum_noise, "DEFAULT_METHOD", request.param)
    return request.param


def test_datum_draws_are_uniform_and_normal(method):
    noise = DatumNoise(7, torch.arange(50))
    u = noise.uniform(400, 5)
    assert u.shape == (400, 50, 5) and 0 <= u.min() and u.max() < 1
    n = u.numel()
    assert abs(u.mean().item() - 0.5) < 4 * (1 / 12 / n) ** 0.5
    assert abs(u.var().item() - 1 / 12) < 4 * (1 / 180 / n) ** 0.5  # var of (u - 1/2)^2
    counts = torch.histc(u, bins=20, min=0, max=1)
    chi2 = ((counts - n / 20) ** 2 / (n / 20)).sum().item()
    assert chi2 < 19 + 6 * 38**0.5  # 19 degrees of freedom, 6 sd
    z = noise.normal(400, 5).flatten()
    assert abs(z.mean().item()) < 4 / n**0.5
    assert abs(z.var().item() - 1) < 4 * (2 / n) ** 0.5
    assert abs((z.abs() < 1.959964).double().mean().item() - 0.95) < 4 * (0.95 * 0.05 / n) ** 0.5
    pairs = noise.normal(400, 2)  # neighbouring particles, dims and roles are uncorrelated
    for a, b in [(pairs[1:, :, 0], pairs[:-1, :, 0]), (pairs[..., 0], pairs[..., 1])]:
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(corr) < 4 / a.numel() ** 0.5


def test_no_two_data_share_their_numbers(method):
    """5,000 data x 1,000 particles of one use: 5e6 uniforms of 52 or 53 bits, all distinct
    (a repeat is expected with probability below 3e-3). A hash state of 32 bits would give
    thousands of repeats: whole particle sets shared by pairs of data whose states differ
    by an XOR below K, and 32-bit birthday repeats."""
    u = DatumNoise(3, torch.arange(5000)).uniform(1000)
    assert u.unique().numel() == u.numel()


def test_a_datum_draws_the_same_in_any_batch_and_chunk(method):
    whole = DatumNoise(3, torch.tensor([4, 9, 11])).normal(10, 2)
    chunk = DatumNoise(3, torch.tensor([9]), total=10)
    chunk.start_chunk(6)  # particles 6 to 9 of 10
    alone = chunk.normal(4, 2)
    assert torch.equal(alone[:, 0], whole[6:, 1])
    loc = torch.zeros(3, 2)
    with datum_normals(DatumNoise(3, torch.tensor([4, 9, 11]))):
        draws = torch.distributions.Normal(loc, 1.0).rsample((10,))
    assert torch.equal(draws, whole.float())
    assert not torch.equal(DatumNoise(4, torch.tensor([9])).normal(10, 2)[6:, 0], alone[:, 0])
    at = (torch.tensor([0, 7, 7]), torch.tensor([2, 0, 1]))  # (particle, datum position)
    some = DatumNoise(3, torch.tensor([4, 9, 11])).normal(10, 3, at=at)
    every = DatumNoise(3, torch.tensor([4, 9, 11])).normal(10, 3)
    assert torch.equal(some, every[at])


@pytest.mark.parametrize("proposal", ["adapted", "guide", "separate"])
def test_estimates_do_not_depend_on_the_pass_or_the_other_data(proposal, method):
    vae, x, sources = problem()
    kwargs = dict(num_samples=NUM_SAMPLES, seed=5, proposal=proposal, progress=False)
    a = estimate_source_log_likelihoods(vae, x, sources, draws_per_pass=2**14, **kwargs)
    b = estimate_source_log_likelihoods(vae, x, sources, draws_per_pass=25, **kwargs)
    rows = torch.tensor([2, 3, 17, 20])
    c = estimate_source_log_likelihoods(
        vae, x[rows], sources, draws_per_pass=13, datum_index=rows, **kwargs
    )
    for name in sources:
        torch.testing.assert_close(a[name].per_datum, b[name].per_datum, rtol=0, atol=ROUNDING)
        torch.testing.assert_close(a[name].elbo, b[name].elbo, rtol=0, atol=ROUNDING)
        torch.testing.assert_close(
            a[name].per_datum[rows], c[name].per_datum, rtol=0, atol=ROUNDING
        )
    other = estimate_source_log_likelihoods(
        vae, x, sources, draws_per_pass=25, **{**kwargs, "seed": 6}
    )
    assert (other["prior"].per_datum - a["prior"].per_datum).abs().max() > 1e-3


def test_ais_does_not_depend_on_the_batch_or_the_other_data(method):
    vae, x, sources = problem()
    rows = torch.tensor([1, 8, 20])
    for source in (None, sources["gaussian-z"]):  # a Normal start; a mixture start
        kwargs = dict(
            source=source,
            initial=initial_distribution(vae, source, seed=0),
            num_steps=12,
            num_chains=4,
            leapfrog_steps=2,
            seed=1,
            progress=False,
        )
        whole = ais_log_likelihood(vae, x, datum_index=torch.arange(23), batch_size=23, **kwargs)
        small = ais_log_likelihood(vae, x, datum_index=torch.arange(23), batch_size=5, **kwargs)
        part = ais_log_likelihood(vae, x[rows], datum_index=rows, batch_size=2, **kwargs)
        torch.testing.assert_close(whole.log_weights, small.log_weights, rtol=0, atol=ROUNDING)
        torch.testing.assert_close(whole.log_weights[rows], part.log_weights, rtol=0, atol=ROUNDING)


def test_bdmc_does_not_depend_on_the_batch_or_the_other_data(method):
    vae, _, sources = problem()
    rows = torch.tensor([6, 0, 3])
    for source in (None, sources["gaussian-z"]):
        kwargs = dict(num_data=9, num_steps=8, num_chains=3, leapfrog_steps=2, seed=2)
        whole = bdmc(vae, source, batch_size=9, progress=False, **kwargs)
        small = bdmc(vae, source, batch_size=2, progress=False, **kwargs)
        part = bdmc(vae, source, rows=rows, progress=False, **kwargs)
        for bound in ("lower_per_datum", "upper_per_datum"):
            a, b, c = (getattr(r, bound) for r in (whole, small, part))
            torch.testing.assert_close(a, b, rtol=0, atol=ROUNDING)
            torch.testing.assert_close(a[rows], c, rtol=0, atol=ROUNDING)
        assert torch.equal(part.x, whole.x) and part.num_data == 3
        assert whole.gap > -0.5  # a sandwich, up to the noise of 3 chains


def test_bdmc_rows_must_index_the_simulated_data():
    vae, _, _ = problem()
    for bad in (torch.tensor([0, 9]), torch.tensor([1, 1]), torch.tensor([0.0])):
        with pytest.raises(ValueError, match=r"rows must be distinct int64 indices in \[0, 9\)"):
            bdmc(vae, num_data=9, num_steps=2, num_chains=2, rows=bad, progress=False)


def test_datum_index_must_match_the_data():
    vae, x, sources = problem()
    with pytest.raises(ValueError, match="datum_index must be int64 of shape"):
        estimate_source_log_likelihoods(
            vae, x, sources, num_samples=4, datum_index=torch.arange(3), progress=False
        )


def test_a_sharded_estimate_needs_a_seed():
    """With seed=None each process would draw its own numbers (and BDMC simulate its own
    data): refused before any work."""
    vae, x, sources = problem()
    context = SimpleNamespace(rank=0, world_size=2, is_writer=True)
    message = "seed=None in an estimate sharded over processes"
    with pytest.raises(ValueError, match=message):
        sharded_source_log_likelihoods(context, vae, x, sources, num_samples=4)
    with pytest.raises(ValueError, match=message):
        sharded_ais_log_likelihood(context, vae, x, num_steps=3)
    with pytest.raises(ValueError, match=message):
        sharded_bdmc(context, vae, num_data=3, seed=None)


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_give_the_per_datum_estimates_of_one(tmp_path):
    vae, x, sources = problem()
    one = estimate_source_log_likelihoods(
        vae, x, sources, num_samples=NUM_SAMPLES, seed=5, iwae_particles=[4], progress=False
    )
    for per_pass in (2**14, 30):
        out = tmp_path / f"two-{per_pass}.pt"
        done = torchrun(str(Path(__file__).with_name("sharded_worker.py")), str(out), str(per_pass))
        assert done.returncode == 0, done.stderr[-2000:]
        two = torch.load(out)
        for name, result in one.items():
            expected = (result.per_datum, result.elbo, result.khat, result.iwae[4])
            # k-hat is a fitted tail shape: it moves ten times more than the estimates
            for got, want, tol in zip(two[name], expected, (1, 1, 10, 1), strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=tol * ROUNDING)


@pytest.fixture(scope="module")
def tiny_run(mnist_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("sharded") / "run"
    train = ["train", "--out", str(run), "--epochs", "1", "--z-dim", "2", "--hidden-dims", "32"]
    train += ["--subset", "600", "--device", "cpu", "--quiet", "--data-root", str(mnist_root)]
    assert main(train) == 0
    return run


def test_torchrun_evaluate_writes_what_one_process_writes(tiny_run, mnist_root, tmp_path):
    run = tiny_run
    flags = ["--sources", "gaussian-z", "aggregate", "--num-samples", "20", "--num-test", "30"]
    flags += ["--num-train", "500", "--no-quality", "--device", "cpu", "--quiet"]
    flags += ["--ais-num-test", "7", "--ais-steps", "6", "--ais-chains", "3", "--ais-leapfrog", "2"]
    flags += ["--bdmc-num-data", "4"]
    flags += ["--data-root", str(mnist_root)]
    assert main(["evaluate", str(run), *flags, "--out", str(tmp_path / "one.json")]) == 0
    done = torchrun(
        "-m", "pyrovae", "evaluate", str(run), *flags, "--out", str(tmp_path / "two.json")
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote") == 1  # rank 0 alone writes
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for name in ("prior", "gaussian-z", "aggregate"):
        for key in ("loglik", "stderr", "elbo"):
            assert two["sources"][name][key] == pytest.approx(one["sources"][name][key], abs=1e-5)
        ais = (two["sources"][name]["ais"], one["sources"][name]["ais"])
        assert ais[0]["per_datum"] == pytest.approx(ais[1]["per_datum"], rel=1e-7, abs=1e-5)
        assert ais[0]["acceptance"] == pytest.approx(ais[1]["acceptance"], abs=1e-5)
        for key in ("lower", "upper", "gap"):  # each source's BDMC, sharded like AIS
            assert ais[0]["bdmc"][key] == pytest.approx(ais[1]["bdmc"][key], abs=1e-5)
    for key in ("elbo", "marginal_kl", "mutual_information"):  # run by rank 0 alone
        assert two["surgery"][key] == pytest.approx(one["surgery"][key], abs=1e-5)


def test_more_processes_than_images_leaves_a_rank_idle(tiny_run, mnist_root, tmp_path):
    # one test image (and one simulated datum) for two processes: rank 1 computes a
    # stand-in and drops it; the results are one process's
    flags = ["--sources", "gaussian-z", "--num-samples", "5", "--num-test", "1", "--no-quality"]
    flags += ["--ais-num-test", "1", "--ais-steps", "3", "--ais-chains", "2"]
    flags += ["--bdmc-num-data", "1", "--num-train", "200", "--device", "cpu", "--quiet"]
    flags += ["--data-root", str(mnist_root)]
    assert main(["evaluate", str(tiny_run), *flags, "--out", str(tmp_path / "one.json")]) == 0
    done = torchrun(
        "-m", "pyrovae", "evaluate", str(tiny_run), *flags, "--out", str(tmp_path / "two.json")
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for name in ("prior", "gaussian-z"):
        assert two["sources"][name]["loglik"] == pytest.approx(
            one["sources"][name]["loglik"], abs=1e-5
        )
        ais = (two["sources"][name]["ais"], one["sources"][name]["ais"])
        assert len(ais[0]["per_datum"]) == 1
        assert ais[0]["per_datum"] == pytest.approx(ais[1]["per_datum"], abs=1e-5)
        assert ais[0]["acceptance"] == pytest.approx(ais[1]["acceptance"], abs=1e-5)
        for key in ("lower", "upper", "gap"):
            assert ais[0]["bdmc"][key] == pytest.approx(ais[1]["bdmc"][key], abs=1e-5)


def test_torchrun_diagnose_shares_out_the_nuts_images(tiny_run, mnist_root, tmp_path):
    run = tiny_run
    # 20 images: three groups of q* fits (8, 8, 4) over the two processes
    flags = ["--num-data", "20", "--nuts-data", "3", "--chains", "2", "--warmup", "20"]
    flags += ["--samples", "20", "--gap-steps", "10", "--ais-steps", "5", "--ais-chains", "2"]
    flags += ["--device", "cpu", "--data-root", str(mnist_root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in both runs
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyrovae",
            "diagnose",
            str(run),
            *flags,
            "--out",
            str(tmp_path / "one"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun("-m", "pyrovae", "diagnose", str(run), *flags, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote") == 1
    a = json.loads((tmp_path / "one" / "diagnostics.json").read_text())
    b = json.loads((tmp_path / "two" / "diagnostics.json").read_text())
    assert [e["reference"] for e in b["data"]] == [True] * 3 + [False] * 17
    for x, y in zip(a["data"], b["data"], strict=True):
        assert x["index"] == y["index"]
        if x["reference"]:
            assert y["r_hat_max"] == pytest.approx(x["r_hat_max"], abs=1e-6)
            assert y["mean"] == pytest.approx(x["mean"], abs=1e-6)
            assert y["guide"]["coverage_90_mean"] == pytest.approx(x["guide"]["coverage_90_mean"])
        # the same per-image numbers up to float32 rounding of sums over 784 pixels made in
        # batches of another shape: a few units in the last place of log p(x) (the ulp is
        # 6e-5 nats at -546), in every value and in the gaps made from them
        ulp = float(torch.finfo(torch.float32).eps) * max(abs(v) for v in x["gaps"].values())
        assert y["gaps"] == pytest.approx(x["gaps"], rel=0, abs=4 * ulp)
    names = sorted(p.name for p in (tmp_path / "two").glob("posterior-*.nc"))
    assert names == sorted(f"posterior-{e['index']:05d}.nc" for e in b["data"][:3])
    assert (tmp_path / "two" / "posterior.png").is_file()
