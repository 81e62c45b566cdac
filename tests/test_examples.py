"""The example notebooks run top to bottom on a small budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("notebook", sorted(EXAMPLES.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(notebook, mnist_root, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' for nbformat")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' for nbclient")
    budget = {
        "PYROVAE_DATA": str(mnist_root),
        "PYROVAE_EXAMPLE_OUT": str(tmp_path / "run"),
        "PYROVAE_EXAMPLE_EPOCHS": "1",
        "PYROVAE_EXAMPLE_SUBSET": "2000",
        "PYROVAE_EXAMPLE_NUM_SAMPLES": "20",
        "PYROVAE_EXAMPLE_NUM_TEST": "200",
        # posterior_diagnostics.ipynb: NUTS and the gaps on three images
        "PYROVAE_EXAMPLE_NUM_DATA": "3",
        "PYROVAE_EXAMPLE_CHAINS": "2",
        "PYROVAE_EXAMPLE_WARMUP": "30",
        "PYROVAE_EXAMPLE_DRAWS": "40",
        "PYROVAE_EXAMPLE_GAP_STEPS": "20",
        "PYROVAE_EXAMPLE_AIS_STEPS": "10",
        "PYROVAE_EXAMPLE_AIS_CHAINS": "2",
        # inline figures, as in Jupyter (a plain Agg backend would show none)
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    for key, value in budget.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert errors == []
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= 6
    assert os.path.isdir(tmp_path / "run")
