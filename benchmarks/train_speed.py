"""Seconds per training epoch: pyrovae's SVI loop against the same VAE in plain PyTorch.

VAE z=50, hidden 400 400, batch 128 by default, dynamic binarization, Adam 1e-3, on the 50,000
MNIST training images. They are timed alternately in one process, so all see the same
machine load; the figure that matters is the median ratio (target: <= 1.10).

pyrovae uses Adam's fused kernel; the plain loop is timed twice, with ``torch.optim.Adam``
as people usually write it (the reference of the target) and with ``fused=True`` as well,
so that the second ratio isolates what Pyro's tracing and the library add.

``--compile`` compiles the networks on both sides with ``torch.compile`` (pyrovae's encoder
and decoder networks in place, ``Module.compile()``, so Pyro's tracing is unchanged; the
plain loop's whole ELBO); ``--jit`` is Pyro's JIT ELBO for pyrovae alone.

    python benchmarks/train_speed.py --data-root ../shared/data [--repeats 3] [--device cpu]
    python benchmarks/train_speed.py --device cuda --batch-size 1024 --compile
    # the shape of Burda et al. (2016): z=50, 200 200 tanh, batch 20
    python benchmarks/train_speed.py --hidden-dims 200 200 --activation tanh --batch-size 20 --jit
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import PlainVAE, train_epoch  # noqa: E402

from pyrovae import ModelConfig, TrainConfig, build_model, load_dataset  # noqa: E402
from pyrovae.nets import ACTIVATIONS  # noqa: E402
from pyrovae.train import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--elbo", default="meanfield", choices=["trace", "meanfield", "iwae"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[400, 400])
    parser.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    parser.add_argument("--out", default="/tmp/pyrovae-train-speed")
    args = parser.parse_args()

    device = torch.device(args.device)
    data = load_dataset("mnist", args.data_root, device=device, download=False)
    pyro.set_rng_seed(0)
    model_config = ModelConfig(
        z_dim=args.z_dim, hidden_dims=args.hidden_dims, activation=args.activation
    )
    train_config = TrainConfig(
        epochs=args.repeats + 1,
        batch_size=args.batch_size,
        lr=1e-3,
        elbo=args.elbo,
        device=args.device,
        jit=args.jit,
    )
    trainer = Trainer(
        build_model(model_config), data, train_config, args.out, model_config, progress=False
    )
    trainer.vae.register_params = args.jit
    shape = {"z_dim": args.z_dim, "hidden_dims": args.hidden_dims}
    shape["activation"] = ACTIVATIONS[args.activation]
    plain = PlainVAE(**shape).to(device)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    plain_fused = PlainVAE(**shape).to(device)
    opt_fused = torch.optim.Adam(plain_fused.parameters(), lr=1e-3, fused=True)
    elbo, elbo_fused = plain.elbo, plain_fused.elbo
    if args.compile:
        vae = trainer.vae
        for net in (vae.encoder.trunk, vae.encoder.head, vae.decoder.net):
            net.compile()
        elbo, elbo_fused = torch.compile(elbo), torch.compile(elbo_fused)
    bs = args.batch_size

    # one warm-up epoch each (allocator, compilation, first-step validation)
    trainer.run_epoch(1)
    train_epoch(plain, opt, data.train.x, bs, elbo)
    train_epoch(plain_fused, opt_fused, data.train.x, bs, elbo_fused)
    ours, ref, ref_fused = [], [], []
    for epoch in range(2, args.repeats + 2):
        ours.append(trainer.run_epoch(epoch)[1])
        ref.append(train_epoch(plain, opt, data.train.x, bs, elbo))
        ref_fused.append(train_epoch(plain_fused, opt_fused, data.train.x, bs, elbo_fused))
        print(
            f"epoch {epoch - 1}: pyrovae {ours[-1]:.2f} s, plain PyTorch {ref[-1]:.2f} s, "
            f"plain PyTorch with fused Adam {ref_fused[-1]:.2f} s",
            flush=True,
        )
    ratios = [a / b for a, b in zip(ours, ref, strict=True)]
    ratios_fused = [a / b for a, b in zip(ours, ref_fused, strict=True)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), threads {torch.get_num_threads()}, batch {bs}, "
        f"z {args.z_dim}, hidden {args.hidden_dims} {args.activation}, "
        f"elbo {args.elbo}, jit {args.jit}, compile {args.compile}, torch {torch.__version__}"
    )
    print(
        f"median seconds/epoch: pyrovae {statistics.median(ours):.2f}, "
        f"plain PyTorch {statistics.median(ref):.2f}, "
        f"plain PyTorch with fused Adam {statistics.median(ref_fused):.2f}"
    )
    print(f"median ratio pyrovae / plain PyTorch: {statistics.median(ratios):.3f} (target <= 1.10)")
    print(
        "median ratio pyrovae / plain PyTorch with fused Adam (the library's own overhead): "
        f"{statistics.median(ratios_fused):.3f}"
    )


if __name__ == "__main__":
    main()
