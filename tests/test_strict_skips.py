"""PYROVAE_STRICT_SKIPS=1 (set by .ci/run): a test skipped for missing data, a missing
browser or a missing package fails; a skip for CUDA stays a skip; without the variable
all of them are skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = """
import pytest

def test_mnist(mnist_root):
    pass

def test_render(chromium):
    pass

def test_package():
    pytest.importorskip("no_such_package_pyrovae", reason="pip install no_such_package")

def test_cuda():
    pytest.skip("PYROVAE_TEST_DEVICE=cuda but CUDA is not available here")
"""


def run_suite(tmp_path: Path, strict: bool) -> subprocess.CompletedProcess[str]:
    """The four tests above with the suite's conftest, MNIST pointed at an empty directory
    and no Chromium on the PATH."""
    (tmp_path / "empty").mkdir(exist_ok=True)
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "PYROVAE_STRICT_SKIPS"}
    env |= {"PYROVAE_TEST_DATA": str(tmp_path / "empty"), "PATH": str(tmp_path / "empty")}
    if strict:
        env["PYROVAE_STRICT_SKIPS"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull]
    return subprocess.run(
        [*command, "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_strict_mode_fails_skips_for_missing_data_browser_and_packages(tmp_path):
    result = run_suite(tmp_path, strict=True)
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 failed, 1 skipped, 2 errors" in out, out  # the fixtures' skips fail at setup
    assert "PYROVAE_STRICT_SKIPS=1 makes this skip a failure" in out, out
    assert "MNIST not found at" in out and "Chromium not found" in out, out
    assert "skips (PYROVAE_STRICT_SKIPS=1)" in out and "1 tests skipped" in out, out
    assert "CUDA is not available here" in out, out


def test_without_strict_mode_they_are_skips(tmp_path):
    result = run_suite(tmp_path, strict=False)
    assert result.returncode == 0, result.stdout
    assert "4 skipped" in result.stdout, result.stdout
    assert "PYROVAE_STRICT_SKIPS" not in result.stdout, result.stdout
