"""Which latent source gives the decoder the best held-out log-likelihood? z = 2, 5, 10.

Trains one VAE per latent size with ``pyrovae.train`` (a run directory per model under
``--out``; an existing run is loaded instead of retrained), fits every registered latent
source to the training encodings and estimates log p_r(x) on test images with shared
guide draws. Prints one table per model and writes ``--out/latent_sources.json``.
Training matches ``pyrovae study`` (meanfield ELBO, seed 0), so the VAE runs of a study
can be reused by pointing ``--out`` at a directory whose ``z2``, ``z5``, ``z10`` are them.

    python benchmarks/latent_sources.py --data-root ../shared/data            # full budget
    python benchmarks/latent_sources.py --data-root ../shared/data --epochs 1 \\
        --num-samples 50 --train-subset 2000 --num-test 200 --out /tmp/ls-smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pyrovae import ModelConfig, TrainConfig, load_dataset, load_run, train_model
from pyrovae.analysis.evaluation.compare import DEFAULT_SOURCES, compare_sources
from pyrovae.train import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data-root", default=None, help="directory holding MNIST/raw")
    parser.add_argument("--num-samples", type=int, default=1000, help="guide draws per datum")
    parser.add_argument("--out", default="runs/latent_sources")
    parser.add_argument("--z-dims", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[400, 400])
    parser.add_argument("--train-subset", type=int, default=None, help="train on the first N")
    parser.add_argument("--num-train", type=int, default=None, help="fit sources on first N")
    parser.add_argument("--num-test", type=int, default=1000, help="test images evaluated")
    parser.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_dataset("mnist", root=args.data_root, download=False)
    device = resolve_device(args.device)
    out = Path(args.out)
    report = {
        "budget": {
            "epochs": args.epochs,
            "train_subset": args.train_subset,
            "num_samples": args.num_samples,
            "num_train": args.num_train or len(data.train),
            "num_test": args.num_test,
            "hidden_dims": args.hidden_dims,
        },
        "models": {},
    }
    for z_dim in args.z_dims:
        run_dir = out / f"z{z_dim}"
        start = time.perf_counter()
        if (run_dir / "checkpoint.pt").exists():
            vae = load_run(run_dir, device=device)
            action = f"loaded {run_dir}"
        else:
            train_model(
                ModelConfig(z_dim=z_dim, hidden_dims=args.hidden_dims),
                TrainConfig(
                    epochs=args.epochs,
                    subset=args.train_subset,
                    device=args.device,
                    seed=args.seed,
                    elbo="meanfield",  # as `pyrovae train` and `pyrovae study`
                ),
                data,
                run_dir,
                progress=False,
            )
            vae = load_run(run_dir, device=device)
            action = f"trained {args.epochs} epochs into {run_dir}"
        trained = time.perf_counter()
        comparison = compare_sources(
            vae,
            data.train,
            data.test,
            names=args.sources,
            num_samples=args.num_samples,
            num_train=args.num_train,
            num_test=args.num_test,
            seed=args.seed,
        )
        done = time.perf_counter()
        seconds = f"({trained - start:.0f} s), compared in {done - trained:.0f} s"
        print(f"\nz_dim={z_dim}: {action} {seconds}")
        print(comparison.table())
        report["models"][f"z{z_dim}"] = {
            "z_dim": z_dim,
            "run_dir": str(run_dir),
            "seconds_compare": done - trained,
            "sources": comparison.to_dict(),
        }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latent_sources.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
