"""diagnose_run on a small model: which images get NUTS, what is written, staleness."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pyrovae import build_model
from pyrovae.analysis.posterior.diagnose import DiagnoseBudget, diagnose_run, load_diagnostics
from pyrovae.analysis.posterior.inference_quality import inference_conclusions
from pyrovae.analysis.posterior.nuts import FLAG_REASONS, flag_reasons

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


def test_flagged_references_are_counted_by_reason_and_left_out(diagnosed):
    """2 chains of 20 draws: every reference has an ESS below 100 per chain, so each is
    flagged for it, counted, excluded from the coverage, and the sentences say why."""
    _, _, result = diagnosed
    refs = [e for e in result["data"] if e["reference"]]
    for e in refs:
        expected = flag_reasons(
            e["r_hat_max"], e["ess_bulk_min"], e["ess_tail_min"], e["num_divergent"], 2
        )
        assert e["flag_reasons"] == expected and e["flagged"] == bool(expected)
        assert "ess_bulk" in e["flag_reasons"] and e["guide"]["reference_flagged"]
    assert result["thresholds"] == {
        "r_hat_max": 1.01,
        "ess_per_chain": 100,
        "ess_min": 200.0,
        "max_divergent": 0,
    }
    assert result["flag_counts"] == {
        r: sum(r in e["flag_reasons"] for e in refs) for r in FLAG_REASONS
    }
    assert result["flagged"] == result["coverage_excluded"] == 2
    assert result["coverage_90_mean"] is None  # no trusted reference is left
    assert result["num_divergent"] == sum(e["num_divergent"] for e in refs)
    assert result["ess_tail_min"] == min(e["ess_tail_min"] for e in refs)
    said = " ".join(inference_conclusions(result))
    assert "2 flagged (rank-normalized R-hat above 1.01, bulk or tail ESS below 200" in said
    assert "images by reason: " in said and "bulk ESS 2" in said  # both, for their ESS
    assert "The 2 flagged images are left out" in said


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
