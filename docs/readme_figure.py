"""Draw the README's picture: samples from the prior, the exact aggregate and a fitted mixture.

Each panel is one latent source r of a trained run, decoded; under its title the held-out
log-likelihood of the decoder paired with r, as the paired difference to the prior
log p_r(x) - log p(x) (mean +- standard error over the test images, importance sampling
with K draws from the adapted proposals; the prior's panel gives log p(x) itself). A
positive difference means r gives the decoder a higher likelihood than the prior.

Usage (from the repository root; see the README)::

    python docs/readme_figure.py runs/readme-z10 --out docs/_static/sources.png
"""

from __future__ import annotations

import argparse
import time

import torch

import pyrovae
from pyrovae.analysis import compare_sources, figures

SOURCES = ("prior", "aggregate", "gmm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory written by `pyrovae train`")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--data-root", default=None, help="directory holding MNIST/raw/")
    parser.add_argument("--num-samples", type=int, default=1000, help="K (default: 1000)")
    parser.add_argument("--num-test", type=int, default=500, help="test images (default: 500)")
    parser.add_argument(
        "--num-train", type=int, default=10_000, help="training encodings (default: 10000)"
    )
    parser.add_argument("--n", type=int, default=36, help="samples per panel (default: 36)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    torch.manual_seed(0)
    vae = pyrovae.load_run(args.run_dir)
    data = pyrovae.load_dataset("mnist", root=args.data_root)
    comparison = compare_sources(
        vae,
        data.train,
        data.test,
        SOURCES,
        num_samples=args.num_samples,
        num_train=args.num_train,
        num_test=args.num_test,
    )
    print(comparison.table())
    fig = figures.plot_samples(vae, {name: comparison.sources[name] for name in SOURCES}, args.n)
    prior = comparison.results["prior"]
    for ax, name in zip(fig.axes, SOURCES, strict=True):
        if name == "prior":
            line = f"log p(x) {prior.mean:.2f} ± {prior.stderr:.2f}"
        else:
            mean, stderr = comparison.difference(name, "prior")
            line = f"vs prior {mean:+.2f} ± {stderr:.2f} nats"
        ax.set_title(f"{name}\n{line}", fontsize=9)
    figures.save_figure(fig, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
