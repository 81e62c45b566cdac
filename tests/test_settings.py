"""Plain-data names and settings: equal to the registries, comparable when stored."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyrovae import settings as S


def test_names_equal_the_registries():
    from pyrovae.analysis.evaluation.evaluate import SPLITS
    from pyrovae.analysis.likelihood.loglik import PROPOSALS
    from pyrovae.analysis.sources import SOURCES
    from pyrovae.data import DATASETS
    from pyrovae.guides import GUIDES
    from pyrovae.models import LIKELIHOODS, PRIORS
    from pyrovae.nets import ACTIVATIONS
    from pyrovae.schedules import LR_SCHEDULES
    from pyrovae.train import ELBOS

    assert S.SOURCE_NAMES == tuple(SOURCES)
    assert S.PRIOR_NAMES == tuple(PRIORS)
    assert S.GUIDE_NAMES == tuple(GUIDES)
    assert S.LIKELIHOOD_NAMES == tuple(LIKELIHOODS)
    assert S.DATASET_NAMES == tuple(DATASETS)
    assert S.ELBO_NAMES == tuple(ELBOS)
    assert S.ACTIVATION_NAMES == tuple(ACTIVATIONS)
    assert S.LR_SCHEDULE_NAMES == LR_SCHEDULES
    assert S.SPLIT_NAMES == tuple(SPLITS)
    assert set(S.PROPOSAL_NAMES) == set(PROPOSALS)


def test_parsing_imports_no_torch():
    code = (
        "import sys; from pyrovae.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules, 'pyro' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_settings_differences_name_both_values():
    asked = S.EvaluationSettings(num_test=500, sources=("gmm",))
    saved = S.EvaluationSettings(num_test=2000, sources=("gmm",)).to_dict()
    assert asked.differences(saved) == ["num_test: saved 2000, asked 500"]
    assert asked.differences(saved, keys={"num_samples"}) == []
    assert asked.differences(asked.to_dict()) == []
    # 'prior' is always evaluated, and sources keep the registry order
    assert asked.sources == ("prior", "gmm")
    assert S.EvaluationSettings(sources=("gmm", "prior", "gmm")).sources == ("prior", "gmm")
    assert "settings: none stored" in asked.differences(None)[0]
    old = {k: v for k, v in saved.items() if k != "proposal"}
    assert asked.differences(old, keys={"proposal"}) == ["proposal: not stored, asked 'adapted'"]


def test_unused_settings_never_differ():
    """AIS settings without AIS, and quality samples without quality, are stored as None."""
    a = S.EvaluationSettings(ais_steps=10, quality=False, num_quality_samples=5)
    b = S.EvaluationSettings()
    assert a.differences(S.EvaluationSettings(quality=False).to_dict()) == []
    assert b.to_dict()["ais_steps"] is None
    assert S.EvaluationSettings(ais_num_test=5).to_dict()["ais_steps"] == 500


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="unknown sources \\['vamp'\\]"):
        S.EvaluationSettings(sources=("vamp",))


def test_study_budget_evaluation_settings():
    settings = S.QUICK.evaluation_settings()
    assert (settings.num_samples, settings.num_test, settings.num_train) == (20, 200, 2000)
    assert settings.sources == S.SOURCE_NAMES
