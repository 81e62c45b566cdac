"""Mutation score of the estimator modules: do the tests catch a wrong estimator?

Each mutant is the module with one small change (``+`` for ``-``, ``<`` for ``<=``, a
constant, a dropped loop, ...) made by cosmic-ray; the module's own tests then run on it.
A mutant the tests pass on *survives*: either it changes no number (an equivalent mutant,
e.g. a rewrite of an error message) or the tests miss a wrong estimator. The score is
killed / (killed + survived) per module, with every survivor's diff written out so that
each can be read and either killed by a new test or shown to be equivalent.

Mutants are made and tested in a copy of the working tree (the checkout is never
touched); the copy is put first on ``PYTHONPATH`` so ``pyrovae`` imports from it even
when the checkout is installed in editable mode. One mutant runs its tests in a fresh
process (about 5 s of imports), so a whole module takes hours on two cores:
``--sample`` tests a seeded random share of the mutants.

    pip install -e ".[mutation]"
    python benchmarks/mutation_score.py --modules analysis/stats.py
    python benchmarks/mutation_score.py --sample 0.1 --out mutation  # every estimator module

Mutation testing: Mutation Testing Advances: An Analysis and Survey (Papadakis et al.,
2019), https://doi.org/10.1016/bs.adcom.2018.03.015.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULE_TESTS: dict[str, list[str]] = {
    "analysis/likelihood/annealing.py": ["tests/test_ais.py"],
    "analysis/likelihood/ais.py": ["tests/test_ais.py", "tests/test_progress.py"],
    "analysis/likelihood/bdmc.py": [
        "tests/test_bdmc_sources.py",
        "tests/test_ais.py",
        "tests/test_progress.py",
        "tests/test_sharding.py",
    ],
    "analysis/likelihood/loglik.py": [
        "tests/test_loglik.py",
        "tests/test_proposals.py",
        "tests/test_progress.py",
        "tests/test_objectives.py",
    ],
    "analysis/likelihood/proposals.py": ["tests/test_proposals.py", "tests/test_loglik.py"],
    "analysis/sources/mixture_pruning.py": ["tests/test_mixture_pruning.py"],
    "analysis/sources.py": ["tests/test_sources.py", "tests/test_mixture_pruning.py"],
    "analysis/posterior/gaps.py": ["tests/test_gaps.py"],
    "analysis/sources/surgery.py": ["tests/test_surgery.py"],
    "analysis/stats.py": ["tests/test_stats.py"],
    "analysis/likelihood/evidence.py": ["tests/test_evidence.py"],
    "analysis/likelihood/datum_noise.py": ["tests/test_datum_noise.py"],
}
"""The estimator modules and the test files that should catch a wrong number in each."""

EXCLUDED_OPERATORS = [
    # bit and shift operators stand in for + - * / only by accident; integer division and
    # modulo of floats are rare here; these make mostly incompetent mutants
    r"core/ReplaceBinaryOperator_.*_(BitAnd|BitOr|BitXor|LShift|RShift|MatMult)",
    r"core/ReplaceBinaryOperator_(BitAnd|BitOr|BitXor|LShift|RShift|MatMult)_.*",
    # exception types and variable shuffles: not a wrong number
    r"core/ExceptionReplacer",
    r"core/VariableInserter",
    r"core/VariableReplacer",
    r"core/RemoveDecorator",
]
"""cosmic-ray operators left out (regular expressions on the operator name)."""

PACKAGE_DIRS = {"models": "models", "guides": "guides", "analysis": "analysis"}
"""The folders installed inside the ``pyrovae`` namespace (pyproject's package-dir)."""


def tool(name: str) -> str:
    """A console script of this interpreter's environment (a virtual environment need not
    be activated), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else name


def copy_tree(dest: Path) -> Path:
    """A copy of the tracked and untracked (not ignored) files of the checkout, laid out as
    the installed ``pyrovae`` package: ``pyrovae/analysis`` and its siblings are symlinks to
    the copy's ``analysis/`` etc., so a mutation of ``analysis/x.py`` is what
    ``pyrovae.analysis.x`` imports with the copy first on the path."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    tree = dest / "tree"
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    for name, folder in PACKAGE_DIRS.items():
        (tree / "pyrovae" / name).symlink_to(tree / folder)
    return tree


def config_text(module: str, tests: list[str], timeout: float) -> str:
    command = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"
    excluded = ", ".join(json.dumps(e) for e in EXCLUDED_OPERATORS)
    return (
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = [{excluded}]\n"
    )


def sample_jobs(session: Path, fraction: float, seed: int) -> None:
    """Mark all but a seeded random ``fraction`` of the pending mutants as skipped."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    def place(item) -> tuple:  # job ids are random: order by what each mutant changes
        m = item.mutations[0]
        return (str(m.module_path), tuple(m.start_pos), m.operator_name, m.occurrence)

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = [item.job_id for item in sorted(db.pending_work_items, key=place)]
        keep = set(random.Random(seed).sample(pending, round(fraction * len(pending))))
        for job_id in pending:
            if job_id not in keep:
                db.set_result(
                    job_id,
                    WorkResult(output="not sampled", worker_outcome=WorkerOutcome.SKIPPED),
                )


def summarize(session: Path) -> dict:
    """Counts of the tested mutants by outcome, and the survivors' diffs."""
    dump = subprocess.run(
        [tool("cosmic-ray"), "dump", str(session)], check=True, capture_output=True, text=True
    ).stdout
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "timeout": 0}
    survivors = []
    for line in filter(None, dump.split("\n")):
        item, result = json.loads(line)
        if not result or result.get("worker_outcome") == "skipped":
            continue
        if result["worker_outcome"] == "timeout":
            counts["timeout"] += 1
        elif result["test_outcome"] == "incompetent":
            counts["incompetent"] += 1
        elif result["test_outcome"] == "survived":
            counts["survived"] += 1
            mutation = item["mutations"][0]
            survivors.append(
                {
                    "line": mutation["start_pos"][0],
                    "operator": mutation["operator_name"],
                    "function": mutation.get("definition_name"),
                    "diff": result.get("diff", ""),
                }
            )
        else:
            counts["killed"] += 1
    # a mutant that hangs or cannot import is caught too: it counts as killed
    caught = counts["killed"] + counts["timeout"] + counts["incompetent"]
    tested = caught + counts["survived"]
    return {
        **counts,
        "tested": tested,
        "score": caught / tested if tested else None,
        "survivors": sorted(survivors, key=lambda s: s["line"]),
    }


def run_module(module: str, tests: list[str], tree: Path, args: argparse.Namespace) -> dict:
    name = module.replace("/", "_").removesuffix(".py")
    config = tree / f".mutation-{name}.toml"
    session = tree / f".mutation-{name}.sqlite"
    config.write_text(config_text(module, tests, args.timeout))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), "tests"]))
    env.setdefault("OMP_NUM_THREADS", "1")

    def cosmic(*words: str) -> None:
        subprocess.run(words, cwd=tree, env=env, check=True, capture_output=True)

    cosmic(tool("cosmic-ray"), "init", config.name, session.name)
    cosmic(tool("cr-filter-operators"), session.name, config.name)
    if args.sample < 1:
        sample_jobs(session, args.sample, args.seed)
    start = time.perf_counter()
    cosmic(tool("cosmic-ray"), "exec", config.name, session.name)
    summary = summarize(session)
    summary.update(module=module, tests=tests, seconds=time.perf_counter() - start)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(MODULE_TESTS), metavar="PATH")
    parser.add_argument("--sample", type=float, default=1.0, help="share of mutants tested")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--out", type=Path, default=None, help="write JSON results here")
    args = parser.parse_args()
    if shutil.which(tool("cosmic-ray")) is None:
        parser.error('cosmic-ray is not installed; run `pip install -e ".[mutation]"`')
    if not 0 < args.sample <= 1:
        parser.error(f"--sample must be in (0, 1], got {args.sample}")
    unknown = [m for m in args.modules if m not in MODULE_TESTS]
    if unknown:
        parser.error(f"--modules {unknown} have no tests listed; choose from {list(MODULE_TESTS)}")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"pyrovae-mutation-{os.getpid()}"
    tree = copy_tree(work)
    try:
        run_all(args, tree, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, tree: Path, work: Path) -> None:
    check = subprocess.run(
        [sys.executable, "-c", "import pyrovae.analysis as a; print(a.__file__)"],
        env=dict(os.environ, PYTHONPATH=str(tree)),
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not check.startswith(str(work)):
        sys.exit(f"the copy does not shadow the installed pyrovae ({check}); nothing tested")
    results = []
    for module in args.modules:
        summary = run_module(module, MODULE_TESTS[module], tree, args)
        results.append(summary)
        score = "n/a" if summary["score"] is None else f"{summary['score']:.1%}"
        print(
            f"{module}: score {score} ({summary['tested']} tested: {summary['killed']} "
            f"killed, {summary['timeout']} timed out, {summary['incompetent']} "
            f"incompetent, {summary['survived']} survived) in {summary['seconds']:.0f} s",
            flush=True,
        )
        for survivor in summary["survivors"]:
            print(f"    survived: line {survivor['line']} {survivor['operator']}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mutation.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
