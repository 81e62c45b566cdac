"""The README's quick commands, run as the README writes them.

The commands are read from the README's own text (its ```bash and ```python blocks and the
``pyrovae ...`` commands quoted in its prose), so a renamed flag, a removed subcommand or a
broken snippet fails here instead of in a reader's terminal: every ``pyrovae ... --help``
is run, every flag of every ``pyrovae`` command and of ``python docs/readme_figure.py``
must appear in that command's ``--help``, every Python snippet runs (in a fresh directory
beside a copy of the data layout, ``../shared/data``), and every link into ``docs/`` names
a file that exists.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[str]:
    """The contents of the README's fenced blocks in ``lang``, in order."""
    return [body for name, body in FENCE.findall(TEXT) if name == lang]


def shell_commands() -> list[str]:
    """Each command of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for body in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def inline_commands() -> list[str]:
    """The ``pyrovae ...`` commands quoted inline in the prose (a span may wrap a line)."""
    prose = FENCE.sub("", TEXT)
    return [" ".join(span.split()) for span in re.findall(r"`(pyrovae [^`]+)`", prose)]


def argv(command: str) -> list[str]:
    """The command's argv for this interpreter: ``pyrovae`` is ``python -m pyrovae``."""
    words = shlex.split(command)
    if words[0] == "pyrovae":
        return [sys.executable, "-m", "pyrovae", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return words


COMMANDS = shell_commands() + inline_commands()
HELP = [c for c in COMMANDS if c.startswith("pyrovae") and c.endswith("--help")]
WITH_FLAGS = [
    c
    for c in COMMANDS
    if (c.startswith("pyrovae ") or c.startswith("python docs/")) and not c.endswith("--help")
]
SNIPPETS = blocks("python")


def run(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300, check=False
    )


def test_readme_has_the_quick_commands():
    assert "pyrovae --help" in HELP, HELP
    assert len(HELP) >= 2 and WITH_FLAGS and SNIPPETS, (HELP, WITH_FLAGS, len(SNIPPETS))


@pytest.mark.parametrize("command", HELP)
def test_help_command_runs(command: str):
    done = run(argv(command))
    assert done.returncode == 0, f"{command!r} exited {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith("usage: pyrovae"), done.stdout[:200]


@pytest.mark.parametrize("command", WITH_FLAGS)
def test_every_flag_shown_exists(command: str):
    words = shlex.split(command)
    flags = sorted({w.split("=", 1)[0] for w in words if w.startswith("--")})
    head = words[:2]  # pyrovae CMD, or python SCRIPT
    done = run(argv(shlex.join([*head, "--help"])))
    assert done.returncode == 0, f"{shlex.join(head)} --help: {done.stderr[-2000:]}"
    missing = [f for f in flags if not re.search(rf"{re.escape(f)}\b", done.stdout)]
    assert not missing, f"README's {command!r} uses {missing}, unknown to {shlex.join(head)}"


def test_links_into_docs_exist():
    links = re.findall(r"\]\((docs/[^)#\s]+)", TEXT)
    assert links, "the README links into docs/"
    missing = sorted({link for link in links if not (ROOT / link).exists()})
    assert not missing, f"README links to missing files: {missing}"


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_python_snippet_runs(index: int, mnist_root: Path, tmp_path: Path):
    """Each ```python block as written, in a fresh directory ``work`` whose
    ``../shared/data`` is the test data; a snippet that loads ``runs/vae-z50`` first gets a
    one-epoch run there from the README's own train command at a smaller budget."""
    snippet = SNIPPETS[index]
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(mnist_root.resolve(), target_is_directory=True)
    env = {"PYROVAE_DATA": str(mnist_root.resolve())}
    run_dirs = sorted(set(re.findall(r"load_run\(\"([^\"]+)\"\)", snippet)))
    for run_dir in run_dirs:
        train = next(c for c in COMMANDS if c.startswith("pyrovae train") and run_dir in c)
        train = re.sub(r"--epochs \d+", "--epochs 1", train) + " --subset 1000 --quiet"
        done = run(argv(train), cwd=work, **env)
        assert done.returncode == 0, f"{train!r}: {done.stderr[-2000:]}"
    done = run([sys.executable, "-c", snippet], cwd=work, **env)
    assert done.returncode == 0, f"README snippet {index} failed:\n{snippet}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"README snippet {index} printed nothing"
