"""A conv VAE on 8-bit colour images, in bits per dimension, beside published figures.

Trains pyrovae's conv VAE (``--net conv``, the discretized logistic likelihood of 8-bit
values, standardized inputs) on CIFAR-10 (or SVHN, or any 8-bit data given with ``--data``)
and prints its held-out -log p(x) / (D log 2) by importance sampling at K draws per image on
a fixed random subset of the test split, with its standard error over the images, and the
validation ELBO of each epoch, with seconds per epoch.

The published figures printed beside it are of models much larger than this one and trained
for days on GPUs: the IAF VAE (ResNet, 3.11 bits/dim; Kingma et al., 2016, Table 3) and
NVAE (2.91; Vahdat & Kautz, 2020), both VAEs with a discretized logistic (mixture)
likelihood like this one; PixelCNN++ (2.92; Salimans et al., 2017) for the autoregressive
state of the art of its time. A small conv VAE trained for minutes is expected far above
them; the benchmark says how far, with the budget beside the number.

CIFAR-10's files: ``DIR/cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
``test_batch``) or ``DIR/cifar-10-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/,
with ``--data-root DIR``; SVHN's ``train_32x32.mat`` and ``test_32x32.mat`` in
``DIR/svhn/``. When online they are downloaded into DIR.

    # small budget on a CPU (about 10 minutes)
    python benchmarks/colour_bits.py --data-root DIR --epochs 2 --subset 5000 --num-test 200
    # a longer run on a GPU
    python benchmarks/colour_bits.py --data-root DIR --epochs 100 --num-test 2000 --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time

import torch

from pyrovae import TrainConfig, load_dataset, train_model
from pyrovae.analysis import estimate_log_likelihood
from pyrovae.data import DataNotFoundError
from pyrovae.models import bits_per_dim
from pyrovae.run_data import model_config_for
from pyrovae.runs import read_metrics

PUBLISHED = {
    "cifar10": [
        ("IAF VAE, ResNet (Kingma et al., 2016)", 3.11),
        ("NVAE (Vahdat & Kautz, 2020)", 2.91),
        ("PixelCNN++ (Salimans et al., 2017)", 2.92),
    ],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", help="a built-in 8-bit data set")
    p.add_argument("--data", help="your own 8-bit data instead (a file or image folder)")
    p.add_argument("--data-root", help="the directory holding the data set's files")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--subset", type=int, default=None, help="training images used")
    p.add_argument("--num-test", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=100, help="K of importance sampling")
    p.add_argument("--z-dim", type=int, default=64)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[256])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        data = load_dataset(args.data or args.dataset, args.data_root, device=args.device)
    except DataNotFoundError as err:
        print(f"{err}", file=sys.stderr)
        return 2
    if data.kind != "8-bit":
        print(f"{data.name} holds {data.kind} values, not 8-bit ones", file=sys.stderr)
        return 2
    config, notes = model_config_for(
        data,
        {
            "z_dim": args.z_dim,
            "net": "conv",
            "channels": args.channels,
            "hidden_dims": args.hidden_dims,
        },
    )
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        subset=args.subset,
        seed=args.seed,
        device=args.device,
    )
    dims = math.prod(config.image_shape or [config.x_dim])
    print(
        f"{data.name}: {len(data.train)} training images ({args.subset or 'all'} used), "
        f"shape {tuple(config.image_shape or ())}, {args.epochs} epochs, batch "
        f"{args.batch_size}, z {args.z_dim}, channels {args.channels}, hidden "
        f"{args.hidden_dims}, likelihood {config.likelihood}, standardized "
        f"{config.standardize}, device {args.device}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        vae = train_model(config, train, data, out, progress=False)
        total = time.perf_counter() - start
        rows = read_metrics(out)
    for row in rows:
        print(
            f"epoch {row['epoch']}: val ELBO {bits_per_dim(row['val_elbo'], dims):.3f} "
            f"bits/dim, {row['seconds']:.1f} s"
        )
    per_epoch = statistics.median(row["seconds"] for row in rows)
    print(f"training: {total:.0f} s in all, median {per_epoch:.1f} s per epoch")
    test = data.test.sample(args.num_test)
    vae.eval()
    start = time.perf_counter()
    result = estimate_log_likelihood(
        vae, test.x, num_samples=args.num_samples, seed=args.seed, progress=False
    )
    seconds = time.perf_counter() - start
    bits = bits_per_dim(result.mean, dims)
    stderr = result.stderr / (dims * math.log(2))
    print(
        f"test -log p(x): {bits:.3f} +- {stderr:.3f} bits/dim (K={args.num_samples}, "
        f"{len(test)} test images, {seconds:.0f} s); "
        f"ELBO {bits_per_dim(result.elbo_mean, dims):.3f}"
    )
    for name, figure in PUBLISHED.get(data.name, []):
        print(f"  published: {name}: {figure:.2f} bits/dim (ratio ours/theirs {bits / figure:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
