"""The convolutional VAE (--net conv) on MNIST: against the MLP VAE, and against plain PyTorch.

Three models train side by side on the same MNIST training images, one epoch each in turn,
the order reversed every epoch (so a load change on a shared machine hits them alike),
with dynamic binarization, batch 128, Adam 1e-3, z=50, the TraceMeanField ELBO:

- pyrovae's MLP VAE (hidden 400 400, the library's default),
- pyrovae's conv VAE (``--net conv``: :mod:`pyrovae.convnets`, channels ``--channels``,
  one fully connected layer of the last ``--hidden-dims`` width in the encoder, a linear
  map from z in the decoder),
- the same conv networks (the same classes, the same widths) in a plain PyTorch loop with
  the same single-sample ELBO and analytic KL, with ``torch.optim.Adam`` as people usually
  write it (the reference of the <= 1.10 target) and with ``fused=True``, as pyrovae's
  Adam is (that ratio isolates what Pyro's tracing and the library add).

Printed: seconds per epoch of each (and per 50,000 images), the median ratio of pyrovae's
conv epoch to the plain loop's over the epochs after the first (warm-up), and the held-out
log p(x) of both pyrovae models by importance sampling with the guide as proposal
(``pyrovae.analysis.estimate_log_likelihood``) at K draws per image on a fixed random
subset of test images, fixed binarization, with its standard error.

    # small budget (about 2 minutes on two CPU cores)
    python benchmarks/conv_speed.py --data-root ../shared/data --epochs 4 --subset 10000 \
        --num-test 100
    # full size: every training image, 10 epochs, 1,000 test images at K=1000
    python benchmarks/conv_speed.py --epochs 10 --num-test 1000 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import PlainVAE, test_elbo, train_epoch  # noqa: E402

from pyrovae import ModelConfig, TrainConfig, build_model, load_dataset  # noqa: E402
from pyrovae.analysis import estimate_log_likelihood  # noqa: E402
from pyrovae.convnets import DEFAULT_CHANNELS, ConvDecoderNet, ConvEncoderTrunk  # noqa: E402
from pyrovae.data import fixed_binarization  # noqa: E402
from pyrovae.train import Trainer  # noqa: E402


class PlainConvVAE(nn.Module):
    """pyrovae's conv encoder trunk and decoder network, with a linear head to (loc, raw
    scale), trained by hand with :meth:`PlainVAE.elbo` (the same ELBO as pyrovae's
    TraceMeanField_ELBO with a standard Normal prior and Bernoulli likelihood)."""

    elbo = PlainVAE.elbo

    def __init__(self, image_shape, z_dim: int, hidden_dims, channels) -> None:
        super().__init__()
        # the networks build_model makes for net="conv": one fully connected layer of the
        # last hidden width in the encoder, a linear map from z in the decoder
        trunk = ConvEncoderTrunk(image_shape, hidden_dims[-1:], channels=channels)
        self.enc = nn.Sequential(trunk, nn.Linear(trunk.hidden_dim, 2 * z_dim))
        self.dec = ConvDecoderNet(z_dim, image_shape, (), 1, "relu", channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="directory holding MNIST/raw")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each model")
    parser.add_argument("--subset", type=int, default=None, help="training images (default all)")
    parser.add_argument("--num-test", type=int, default=1000, help="test images of log p(x)")
    parser.add_argument("--num-samples", type=int, default=1000, help="K of log p(x)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[400, 400])
    parser.add_argument("--channels", type=int, nargs="+", default=list(DEFAULT_CHANNELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is the timing's warm-up)")

    device = torch.device(args.device)
    data = load_dataset("mnist", args.data_root, device=device, download=False)
    shape = data.image_shape
    n = min(args.subset or len(data.train), len(data.train))
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        elbo="meanfield",
        subset=n,
        device=args.device,
        seed=args.seed,
    )
    common = {"z_dim": args.z_dim, "hidden_dims": args.hidden_dims, "image_shape": list(shape)}
    configs = {
        "mlp": ModelConfig(**common),
        "conv": ModelConfig(**common, net="conv", channels=args.channels),
    }
    out = Path(tempfile.mkdtemp(prefix="pyrovae-conv-speed-"))
    trainers = {}
    for name, config in configs.items():
        pyro.set_rng_seed(args.seed)
        vae = build_model(config).to(device)
        trainers[name] = Trainer(vae, data, train, out / name, config, progress=False)
    plains = {}
    for key, fused in (("plain conv", False), ("plain fused", True)):
        torch.manual_seed(args.seed)
        model = PlainConvVAE(shape, args.z_dim, args.hidden_dims, args.channels).to(device)
        plains[key] = (model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused))
    x_train = data.train.x[:n]

    def run_trainer(name: str, epoch: int) -> float:
        return trainers[name].run_epoch(epoch)[1]

    def run_plain(name: str, epoch: int) -> float:
        model, opt = plains[name]
        return train_epoch(model, opt, x_train, args.batch_size)

    runs = {**dict.fromkeys(trainers, run_trainer), **dict.fromkeys(plains, run_plain)}
    seconds: dict[str, list[float]] = {key: [] for key in runs}
    for epoch in range(1, args.epochs + 1):
        # the order turns around every epoch, so that no model always follows the same one
        for name in list(runs)[:: 1 if epoch % 2 else -1]:
            seconds[name].append(runs[name](name, epoch))
        print(
            f"epoch {epoch}: "
            + ", ".join(f"{name} {times[-1]:.2f} s" for name, times in seconds.items()),
            flush=True,
        )
    timed = {name: times[1:] for name, times in seconds.items()}  # the first is a warm-up
    ratios = [a / b for a, b in zip(timed["conv"], timed["plain conv"], strict=True)]
    ratios_fused = [a / b for a, b in zip(timed["conv"], timed["plain fused"], strict=True)]

    test = data.test.sample(args.num_test)
    x_test = fixed_binarization(test.x)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), threads {torch.get_num_threads()}, {n} training images, "
        f"{args.epochs} epochs, batch {args.batch_size}, z {args.z_dim}, hidden "
        f"{args.hidden_dims}, channels {args.channels}, torch {torch.__version__}"
    )
    for key in seconds:
        median = statistics.median(timed[key])
        print(
            f"{key:>10}: median {median:.2f} s/epoch ({median * 50_000 / n:.1f} s per "
            "50,000 images)"
        )
    print(
        f"median ratio pyrovae conv / plain PyTorch conv: {statistics.median(ratios):.3f} "
        "(target <= 1.10)"
    )
    print(
        "median ratio pyrovae conv / plain PyTorch conv with fused Adam (the library's own "
        f"overhead): {statistics.median(ratios_fused):.3f}"
    )
    with torch.no_grad():
        plain = plains["plain conv"][0].eval()
        print(f"plain conv test ELBO {test_elbo(plain, x_test):.2f} nats (10 draws)")
    per_datum = {}
    for key, trainer in trainers.items():
        vae = trainer.vae.eval()
        start = time.perf_counter()
        result = estimate_log_likelihood(
            vae, x_test, num_samples=args.num_samples, progress=False, seed=args.seed
        )
        took = time.perf_counter() - start
        per_datum[key] = result.per_datum
        print(
            f"{key:>10}: test log p(x) {result.mean:.2f} +- {result.stderr:.2f} nats "
            f"(K={args.num_samples}, {args.num_test} test images, {took:.1f} s)",
            flush=True,
        )

    diff = per_datum["conv"] - per_datum["mlp"]  # the same test images: a paired difference
    print(
        f"conv - mlp: {diff.mean():.2f} +- {diff.std() / len(diff) ** 0.5:.2f} nats per image "
        "(paired over the same test images)"
    )


if __name__ == "__main__":
    main()
