"""Progress off a terminal: timed lines while a step runs, not only one when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from pyrovae.analysis.progress import (
    CLOSING_LINE,
    LineProgress,
    format_seconds,
    progress_interval,
)


def test_status_line_says_done_total_elapsed_and_left():
    bar = LineProgress(200, "log p(x): 2 sources", "image", interval=60)
    bar.start -= 30.0  # 30 s into the step
    bar.update(50)
    line = bar.status()
    bar.close()
    assert line.startswith("log p(x): 2 sources: 50/200 images (25%), ")
    assert "30 s elapsed" in line
    assert "about 1 min 30 s left" in line  # 30 s for a quarter: 90 s for the rest


def test_a_unit_that_takes_long_still_reports_elapsed_time(capsys):
    """The timer writes lines while no unit completes (one slow batch)."""
    with LineProgress(4, "slow step", "batch", interval=0.1) as bar:
        time.sleep(1.0)  # the first batch takes ten intervals
        bar.update()
    lines = capsys.readouterr().err.splitlines()
    running = [line for line in lines if "elapsed" in line]
    assert len(running) >= 1, lines
    assert running[0].startswith("slow step: 0/4 batches (0%)")
    assert lines[-1].startswith("slow step: 1/4 batches, ")


def test_lines_keep_a_cadence_not_one_per_update(capsys):
    """1,000 quick updates in well under an interval write the final line only."""
    with LineProgress(1000, "quick", "item", interval=30) as bar:
        for _ in range(1000):
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("quick: 1000/1000")


def test_share_rule_between_lines(capsys):
    """After the interval, a line waits for 5% more work (or six intervals)."""
    bar = LineProgress(1000, "share", "item", interval=0.05)
    bar._stop.set()  # drive it by hand: no timer
    time.sleep(0.06)
    bar.update(10)  # 1% done, one interval passed: not yet due
    assert capsys.readouterr().err == ""
    bar.update(50)  # 6%: due
    assert "share: 60/1000 items (6%)" in capsys.readouterr().err
    time.sleep(0.31)  # six intervals with no progress: due anyway
    bar.update(1)
    assert "share: 61/1000" in capsys.readouterr().err
    bar.close()


def test_interval_from_environment(monkeypatch):
    monkeypatch.setenv("PYROVAE_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv("PYROVAE_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="PYROVAE_PROGRESS_INTERVAL must be a positive.*'soon'"):
        progress_interval()
    monkeypatch.delenv("PYROVAE_PROGRESS_INTERVAL")
    assert progress_interval() == 10.0


def test_format_seconds():
    assert format_seconds(4.26) == "4.3 s"
    assert format_seconds(42.4) == "42 s"
    assert format_seconds(185) == "3 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"


STEP = textwrap.dedent(
    """
    import torch
    from pyrovae.analysis.likelihood.exact import ppca_vae
    from pyrovae.analysis.likelihood.loglik import estimate_log_likelihood

    torch.manual_seed(0)
    weight, _ = torch.linalg.qr(torch.randn(784, 8))
    vae = ppca_vae(3 * weight, torch.zeros(784), 0.5, widen=1.2)
    with torch.no_grad():
        x = vae.decoder(torch.randn(STEPS, 8)).sample()
    estimate_log_likelihood(vae, x, num_samples=2000, draws_per_pass=2000, progress=True)
    """
)


def test_a_step_of_seconds_writes_progress_lines_to_a_file_before_it_ends(tmp_path):
    """stderr redirected to a file: lines appear while the step still runs."""
    log = tmp_path / "stderr.log"
    env = {**os.environ, "PYROVAE_PROGRESS_INTERVAL": "0.3", "OMP_NUM_THREADS": "1"}
    script = STEP.replace("STEPS", "200")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=err, env=env)
        try:
            seen_while_running = ""
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                text = log.read_text()
                if "elapsed" in text:
                    seen_while_running = text
                    break
                time.sleep(0.05)
        finally:
            proc.kill()  # the step's end does not matter here
            proc.wait()
    assert seen_while_running, f"no progress line before the step ended:\n{log.read_text()}"
    first = next(line for line in seen_while_running.splitlines() if "elapsed" in line)
    assert first.startswith("log p(x): 1 source, 200 images: ")
    assert "/200 images (" in first


def test_closing_line_is_what_close_writes(capsys):
    """The benchmarks read each step's seconds with CLOSING_LINE: it must match close()."""
    with LineProgress(3, "fitting sources to 500 encodings", "source", interval=60) as bar:
        bar.update(3)
    (line,) = capsys.readouterr().err.splitlines()
    match = CLOSING_LINE.match(line)
    assert match is not None, line
    assert match.group("desc") == "fitting sources to 500 encodings"
    assert float(match.group("seconds")) >= 0
