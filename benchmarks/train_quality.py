"""Test ELBO and log-likelihood after a fixed training budget: pyrovae against plain PyTorch.

The default configuration of ``pyrovae train`` (VAE, z=50, hidden 400 400, batch 128,
Adam 1e-3, dynamic binarization, meanfield ELBO) and the same network in a plain PyTorch
loop, both trained for ``--epochs`` on the 50,000 training images from the same seed;
then on the fixed-seed binarized test set: the ELBO (mean of 10 single-sample draws) and
the importance-sampled log-likelihood with K guide draws (the library's estimator for
pyrovae, a hand-written one for the reference).

Targets (30 epochs): test ELBO >= -101.5; log-likelihood at least as good as plain PyTorch.

    python benchmarks/train_quality.py --data-root ../shared/data [--epochs 30] [--num-samples 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import log_likelihood, test_elbo, train_plain  # noqa: E402

from pyrovae import ModelConfig, TrainConfig, load_dataset, load_run, train_model  # noqa: E402
from pyrovae.analysis.likelihood.loglik import estimate_log_likelihood  # noqa: E402
from pyrovae.data import fixed_binarization  # noqa: E402
from pyrovae.train import elbo_per_datum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-samples", type=int, default=1000, help="K for log p(x)")
    parser.add_argument("--num-test", type=int, default=10_000, help="test images for log p(x)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/benchmark-quality")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both models")
    args = parser.parse_args()

    data = load_dataset("mnist", args.data_root, device=args.device, download=False)
    x_test = fixed_binarization(data.test.x)
    x_ll = x_test[: args.num_test]

    start = time.perf_counter()
    if not (Path(args.out) / "checkpoint.pt").exists():
        train_model(
            ModelConfig(),
            TrainConfig(epochs=args.epochs, device=args.device, elbo="meanfield", seed=args.seed),
            data,
            args.out,
            progress=False,
        )
    vae = load_run(args.out, device=args.device, checkpoint="last")
    ours_train = time.perf_counter() - start
    torch.manual_seed(1)
    ours_elbo = torch.stack([elbo_per_datum(vae, x_test) for _ in range(10)]).mean().item()
    start = time.perf_counter()
    ours_ll = estimate_log_likelihood(vae, x_ll, num_samples=args.num_samples, seed=1)
    ours_ll_seconds = time.perf_counter() - start

    start = time.perf_counter()
    plain = train_plain(data.train.x, args.epochs, seed=args.seed)
    plain_train = time.perf_counter() - start
    torch.manual_seed(1)
    plain_elbo = test_elbo(plain, x_test)
    plain_ll = log_likelihood(plain, x_ll, args.num_samples)

    print(
        f"budget: {args.epochs} epochs, batch 128, Adam 1e-3, z=50, hidden 400 400, "
        f"seed {args.seed}, device {args.device}"
    )
    print(f"{'':<16}{'test ELBO':>12}{f'log p(x) K={args.num_samples}':>22}{'train s':>10}")
    print(
        f"{'pyrovae':<16}{ours_elbo:>12.2f}{ours_ll.mean:>16.2f} +- {ours_ll.stderr:.2f}"
        f"{ours_train:>10.0f}"
    )
    print(f"{'plain PyTorch':<16}{plain_elbo:>12.2f}{plain_ll:>22.2f}{plain_train:>10.0f}")
    print(
        f"difference pyrovae - plain: ELBO {ours_elbo - plain_elbo:+.2f}, "
        f"log p(x) {ours_ll.mean - plain_ll:+.2f} nats (on {len(x_ll)} test images)"
    )
    print(
        f"log p(x) estimate took {ours_ll_seconds:.0f} s; PSIS k-hat > 0.7 for "
        f"{ours_ll.khat_fraction():.1%} of the data"
    )
    print(f"target: test ELBO >= -101.5: {'met' if ours_elbo >= -101.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
