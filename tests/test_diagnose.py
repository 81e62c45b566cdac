"""diagnose_run on a small model: which images get NUTS, what is written, staleness."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pyrovae import build_model
from pyrovae.analysis.diagnose import DiagnoseBudget, diagnose_run, load_diagnostics

BUDGET = DiagnoseBudget(
    num_data=5,
    nuts_data=2,
    chains=2,
    warmup=20,
    samples=20,
    gap_steps=10,
    elbo_draws=50,
    ais_steps=5,
    ais_chains=2,
)


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    torch.manual_seed(0)
    vae = build_model(x_dim=12, z_dim=2, hidden_dims=[8])
    labels = torch.arange(30) % 3
    data = SimpleNamespace(test=SimpleNamespace(x=torch.rand(30, 12), y=labels), num_classes=3)
    out = tmp_path_factory.mktemp("run") / "diagnostics"
    return vae, out, diagnose_run(vae, data, out, BUDGET)


def test_first_images_get_nuts_and_every_image_its_gaps(diagnosed):
    _, out, result = diagnosed
    entries = result["data"]
    assert [e["reference"] for e in entries] == [True, True, False, False, False]
    assert [e["label"] for e in entries] == [0, 1, 2, 0, 1]  # the classes in turn
    assert result["num_reference"] == 2 and result["budget"]["nuts_data"] == 2
    assert all(set(e["gaps"]) >= {"approximation_gap", "amortization_gap"} for e in entries)
    assert sorted(p.name for p in out.glob("posterior-*.nc")) == sorted(
        f"posterior-{e['index']:05d}.nc" for e in entries[:2]
    )


def test_figures_reload_and_other_weights_are_stale(diagnosed):
    vae, out, _ = diagnosed
    loaded = load_diagnostics(out.parent, vae)
    assert loaded["num_data"] == 5 and "stale" not in loaded
    assert [p.name for p in loaded["figure_paths"].values()] == ["posterior.png", "gaps.png"]
    assert load_diagnostics(out.parent / "elsewhere", vae) is None
    with torch.no_grad():
        next(vae.parameters()).add_(1e-3)
    stale = load_diagnostics(out.parent, vae)
    assert "other model weights" in stale["stale"] and "num_data" not in stale


def test_a_second_run_on_fewer_images_leaves_no_stale_posteriors(diagnosed, tmp_path):
    vae, _, _ = diagnosed
    labels = torch.arange(30) % 3
    data = SimpleNamespace(test=SimpleNamespace(x=torch.rand(30, 12), y=labels), num_classes=3)
    out = tmp_path / "diagnostics"
    out.mkdir()
    (out / "posterior-09999.nc").write_text("from an earlier run")
    small = DiagnoseBudget(**{**BUDGET.__dict__, "nuts_data": 1})
    result = diagnose_run(vae, data, out, small, figures=False)
    assert [p.name for p in out.glob("posterior-*.nc")] == [
        f"posterior-{result['data'][0]['index']:05d}.nc"
    ]


def test_more_nuts_images_than_images_is_refused():
    with pytest.raises(ValueError, match="nuts_data \\(6\\) exceeds num_data \\(5\\)"):
        DiagnoseBudget(num_data=5, nuts_data=6)
    with pytest.raises(ValueError, match="nuts_data"):
        DiagnoseBudget(nuts_data=0)
