"""The semi-supervised M2 (``--model m2``) on MNIST: test error of q(y | x) by label count.

For each number of labels (``--labels``, the paper's 100, 600, 1,000 and 3,000 by default)
and each label draw (``--draws``, label seeds 0, 1, ...), two classifiers of the same
network (pyrovae's :class:`~pyrovae.guides.LabelClassifier`, ``--hidden-dims``) are trained
in turn on the same labelled images:

- M2, the label enumerated on the other training images (``TraceEnum_ELBO``) with
  Kingma et al.'s classification term (``--aux-weight``, default 15 N / labels), its best
  checkpoint by validation accuracy;
- the plain classifier on the labelled images alone (cross-entropy, Adam at ``--lr``, the
  same number of epochs over the labelled images as M2's steps see them), its best epoch by
  validation accuracy.

Printed per label count: the test error of each over the draws (mean and standard
deviation; each draw's own error with its 95% Clopper-Pearson interval on the 10,000 test
images, and the share of 1,000 validation images that the generative model itself labels
right, argmax_y L(x, y)), their ratio, and the reference figures: Pyro's SS-VAE tutorial
(accuracy 93.19%, 94.37%, 94.87%, 95.82% at 100, 600, 1,000, 3,000 labels) and Kingma et
al. 2014's M2 (test error 4.94%, 3.60%, 3.92% at 600, 1,000, 3,000 labels).

``--tutorial-recipe`` also trains, on the same labelled images for the same number of
epochs, Pyro's SS-VAE tutorial recipe written in plain Pyro (benchmarks/_ssvae_recipe.py:
softplus, grey pixels under the Bernoulli cross-entropy, Adam 4.2e-4 with beta1 0.95, one
batch per step, the classification term as a separate step with the tutorial's multiplier
46, or ``--aux-weight``), so that pyrovae's M2 is measured against the recipe behind the
tutorial's figures at the same budget, in the same run.

``--m1-epochs E`` runs the paper's M1+M2 instead: an M1 VAE trained first, and both
classifiers on the means of its q(z1 | x) (see :func:`m1_features`).

    # small budget (one label count, two draws, 5 epochs on 20,000 images; CPU)
    python benchmarks/semi_supervised.py --data-root ../shared/data --labels 100 --draws 2 \
        --epochs 5 --subset 20000
    # the paper's protocol on a GPU: all 50,000 training images, 5 draws, many epochs
    python benchmarks/semi_supervised.py --draws 5 --epochs 300 --device cuda
    python benchmarks/semi_supervised.py --draws 5 --epochs 300 --m1-epochs 300 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ssvae_recipe import TUTORIAL_AUX_WEIGHT, train_recipe  # noqa: E402

from pyrovae import ModelConfig, TrainConfig, load_dataset, load_run, train_model  # noqa: E402
from pyrovae.analysis.quality.label_classifier import label_error  # noqa: E402
from pyrovae.analysis.sources.encodings import Encodings  # noqa: E402
from pyrovae.analysis.sources.helpers import seeded  # noqa: E402
from pyrovae.data import Split, Splits, binarize_with, fixed_binarization  # noqa: E402
from pyrovae.guides import LabelClassifier  # noqa: E402
from pyrovae.semi_supervised import choose_labelled, default_aux_weight  # noqa: E402

TUTORIAL_ACCURACY = {100: 0.9319, 600: 0.9437, 1000: 0.9487, 3000: 0.9582}
PAPER_M2_ERROR = {600: 0.0494, 1000: 0.0360, 3000: 0.0392}


def plain_classifier_error(
    data,
    labelled: torch.Tensor,
    hidden: list[int],
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    binarize: bool = True,
) -> dict:
    """The classifier network trained on the labelled images alone; its test error at the
    epoch of best validation accuracy. Its inputs are those M2's classifier sees: pixels
    binarized (dynamically in training, once for validation and test) when ``binarize``,
    else as they are."""
    torch.manual_seed(seed)
    net = LabelClassifier(data.train.x.shape[1], 10, hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    x, y = data.train.x[labelled], data.train.y[labelled]
    val_x, val_y = (fixed_binarization(data.val.x) if binarize else data.val.x), data.val.y
    best, state = -1.0, None
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            xb = binarize_with(x[idx], torch.rand(x[idx].shape)) if binarize else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = float((net(val_x).argmax(-1) == val_y).float().mean())
        if accuracy > best:
            best, state = accuracy, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)

    class _Wrapped(torch.nn.Module):  # label_error reads vae.classify
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def classify(self, x):
            return self.net(x).argmax(-1)

    return label_error(_Wrapped(), data.test, binarize=binarize)


def m1_features(data: Splits, n: int, epochs: int, lr: float, device: str) -> Splits:
    """Kingma et al.'s M1 under their M2 ("M1+M2", section 3.2): a VAE (z1 = 50, two hidden
    layers of 600, Bernoulli) trained on the first ``n`` training images, then every image
    replaced by the mean of q(z1 | x) (the grey pixels given to the encoder), standardized
    with the training features' mean and deviation. Validation and test keep all their
    images."""
    model = ModelConfig(model="vae", z_dim=50, hidden_dims=[600, 600], likelihood="bernoulli")
    config = TrainConfig(epochs=epochs, batch_size=100, lr=lr, subset=n, seed=0, device=device)
    with tempfile.TemporaryDirectory() as out:
        train_model(model, config, data, out, progress=False)
        vae = load_run(out, device=device)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return Encodings(vae, x.to(device)).means().cpu()

    train = encode(data.train.x[:n])
    mean, sd = train.mean(0), train.std(0).clamp_min(1e-6)
    scaled = {
        name: (encode(split.x) - mean) / sd
        for name, split in (("val", data.val), ("test", data.test))
    }
    return Splits(
        train=Split((train - mean) / sd, data.train.y[:n]),
        val=Split(scaled["val"], data.val.y),
        test=Split(scaled["test"], data.test.y),
        name="mnist-m1",
        num_classes=10,
        kind="real",
    )


@torch.no_grad()
def generative_accuracy(vae, x: torch.Tensor, labels: torch.Tensor, draws: int = 50) -> float:
    """The share of ``x`` whose label maximizes the generative model's labelled bound
    L(x, y), the classification the unlabelled bound pulls q(y | x) toward. L is estimated
    with ``draws`` z per label from the same standard-normal numbers for every label (common
    random numbers): the bounds of the labels differ by a few nats, less than the noise of
    independent estimates."""
    device = next(vae.parameters()).device
    x, labels = x.to(device), labels.to(device)
    bounds = []
    for c in range(vae.y_dim):
        y = F.one_hot(torch.full((x.shape[0],), c, device=device), vae.y_dim).to(x.dtype)
        q = vae.encoder(x, y)
        with seeded(0, device):
            z = q.sample((draws,))
        log_w = vae.decoder(z, y).log_prob(x) + vae.prior(None).log_prob(z) - q.log_prob(z)
        bounds.append(log_w.mean(0))
    return float((torch.stack(bounds, -1).argmax(-1) == labels).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--draws", type=int, default=5, help="label draws per count (seeds 0..)")
    p.add_argument("--epochs", type=int, default=10, help="epochs over the unlabelled images")
    p.add_argument("--subset", type=int, default=None, help="first N training images")
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[500])
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--aux-weight",
        type=float,
        default=None,
        help="alpha per labelled image, for M2 (default 15 N / labels) and the tutorial "
        f"recipe (default {TUTORIAL_AUX_WEIGHT:g})",
    )
    p.add_argument(
        "--likelihood",
        default="bernoulli",
        help="bernoulli (dynamically binarized pixels) or continuous-bernoulli (the pixels "
        "as they are)",
    )
    p.add_argument(
        "--m1-epochs",
        type=int,
        default=0,
        help="M1+M2: train Kingma et al.'s M1 VAE for this many epochs first and run M2 "
        "(Gaussian likelihood) and the plain classifier on its features (0: off)",
    )
    p.add_argument(
        "--tutorial-recipe",
        action="store_true",
        help="also train Pyro's SS-VAE tutorial recipe in plain Pyro on the same labels "
        f"(alpha {TUTORIAL_AUX_WEIGHT:g} unless --aux-weight, its own optimizer settings; "
        "pixels only)",
    )
    p.add_argument("--jit", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_dataset("mnist", args.data_root)
    n = args.subset or len(data.train)
    stacked = args.m1_epochs > 0
    if stacked and args.tutorial_recipe:
        p.error("--tutorial-recipe runs on the pixels; drop it or --m1-epochs")
    if stacked:
        start = time.perf_counter()
        data = m1_features(data, n, args.m1_epochs, args.lr, args.device)
        print(f"M1: {args.m1_epochs} epochs on {n} images, {time.perf_counter() - start:.0f} s")
        args.likelihood = "gaussian"
    print(
        f"{'M1+M2' if stacked else 'M2'} on MNIST: {n} training images, z={args.z_dim}, "
        f"hidden {args.hidden_dims}, "
        f"batch {args.batch_size}, Adam {args.lr}, {args.epochs} epochs, {args.draws} label "
        f"draws per count, {args.likelihood} likelihood, device {args.device}"
    )
    rows = []
    for count in args.labels:
        m2_errors, plain_errors, recipe_errors = [], [], []
        alpha = args.aux_weight if args.aux_weight is not None else default_aux_weight(n, count)
        for draw in range(args.draws):
            start = time.perf_counter()
            model = ModelConfig(
                model="m2",
                z_dim=args.z_dim,
                hidden_dims=args.hidden_dims,
                y_dim=10,
                x_dim=data.train.x.shape[1],
                likelihood=args.likelihood,
            )
            config = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                labels=count,
                label_seed=draw,
                aux_weight=args.aux_weight,
                subset=None if stacked else args.subset,
                seed=draw,
                device=args.device,
                jit=args.jit,
                elbo="trace",
            )
            with tempfile.TemporaryDirectory() as out:
                train_model(model, config, data, out, progress=False)
                vae = load_run(out, device=args.device)  # best.pt: best validation accuracy
                m2 = label_error(vae, data.test)
                val = 1.0 - label_error(vae, data.val)["error"]
                val_x = data.val.x[:1000]
                val_x = fixed_binarization(val_x) if vae.decoder.binarize else val_x
                generative = generative_accuracy(vae, val_x, data.val.y[:1000])
            seconds = time.perf_counter() - start
            labelled = choose_labelled(data.train.y[:n], count, 10, draw)
            steps = args.epochs * -(-(n - count) // args.batch_size)
            plain_epochs = max(1, steps * min(args.batch_size, count) // count)
            plain = plain_classifier_error(
                data,
                labelled,
                args.hidden_dims,
                min(plain_epochs, 2000),
                args.lr,
                100,
                draw,
                binarize=args.likelihood == "bernoulli",
            )
            m2_errors.append(m2["error"])
            plain_errors.append(plain["error"])
            recipe_line = ""
            if args.tutorial_recipe:
                start = time.perf_counter()
                recipe = train_recipe(
                    data,
                    labelled,
                    n,
                    args.epochs,
                    z_dim=args.z_dim,
                    hidden=args.hidden_dims[0],
                    aux_weight=TUTORIAL_AUX_WEIGHT if args.aux_weight is None else args.aux_weight,
                    batch=args.batch_size,
                    seed=draw,
                    device=args.device,
                )
                recipe_errors.append(recipe["error"])
                recipe_line = (
                    f"; tutorial recipe {_error_with_interval(recipe)} (val accuracy "
                    f"{100 * recipe['val_accuracy']:.2f}%, best epoch {recipe['best_epoch']}, "
                    f"{time.perf_counter() - start:.0f} s)"
                )
            print(
                f"  labels {count:5d} draw {draw}: M2 {_error_with_interval(m2)} (val accuracy "
                f"{100 * val:.2f}%, argmax_y L(x, y) {100 * generative:.1f}% of 1,000 val, "
                f"alpha {alpha:.2f}, {seconds:.0f} s); plain classifier "
                f"{_error_with_interval(plain)} ({plain_epochs} epochs){recipe_line}",
                flush=True,
            )
        rows.append((count, m2_errors, plain_errors, recipe_errors))
    print(
        "\nlabels  draws  M2 error (mean, sd)  plain classifier  M2/plain"
        + ("  tutorial recipe  M2/recipe" if args.tutorial_recipe else "")
        + "  tutorial  paper M2"
    )
    for count, m2_errors, plain_errors, recipe_errors in rows:
        mean, pmean = statistics.mean(m2_errors), statistics.mean(plain_errors)
        recipe_columns = ""
        if recipe_errors:
            rmean = statistics.mean(recipe_errors)
            recipe_columns = f"  {_mean_sd(recipe_errors):>15}  {mean / rmean:9.3f}"
        tutorial = TUTORIAL_ACCURACY.get(count)
        paper = PAPER_M2_ERROR.get(count)
        print(
            f"{count:6d}  {len(m2_errors):5d}  {_mean_sd(m2_errors):>19}  "
            f"{_mean_sd(plain_errors):>16}  {mean / pmean:8.3f}{recipe_columns}  "
            f"{'-' if tutorial is None else f'{100 * (1 - tutorial):.2f}%':>8}  "
            f"{'-' if paper is None else f'{100 * paper:.2f}%':>8}"
        )


def _error_with_interval(entry: dict) -> str:
    """``4.12% [3.74, 4.53]``: a test error and its 95% Clopper-Pearson interval."""
    low, high = entry["interval"]
    return f"{100 * entry['error']:.2f}% [{100 * low:.2f}, {100 * high:.2f}]"


def _mean_sd(errors: list[float]) -> str:
    """``4.12% +- 0.31``: the mean of the draws' errors and their standard deviation."""
    sd = statistics.stdev(errors) if len(errors) > 1 else float("nan")
    return f"{100 * statistics.mean(errors):.2f}% +- {100 * sd:.2f}"


if __name__ == "__main__":
    main()
