"""Make the shipped MNIST classifier: the default recipe, seed 0, on the CPU, one thread.

``pyrovae.analysis.quality.classifier.load_classifier()`` returns the weights this script writes
(``analysis/weights/mnist-cnn-v1.pt``) instead of training them on the user's machine. It
trains :class:`~pyrovae.analysis.quality.classifier.ClassifierConfig` () on the 50,000 training
images, rounds the weights to ``--dtype`` (float16 unless that costs more than 0.1% of
test accuracy), scores both precisions on the 10,000 test images, and prints the test
accuracy, the file's sha256 (for ``SHIPPED_SHA256``), the weights' sha256 and the time.
The same CPU and torch give the same weights bit for bit (one thread: the order of the
sums changes with the thread count); the file's own sha256 differs between runs, since its
metadata records the training time, so compare ``weights sha256``. With ``--out`` at the
shipped path it replaces the shipped file (then update ``SHIPPED_SHA256``).

    python benchmarks/train_classifier.py --data-root ../shared/data [--out FILE.pt]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pyrovae.analysis.quality.classifier import (
    SHIPPED_PATH,
    ClassifierConfig,
    MNISTClassifier,
    evaluate_accuracy,
    file_sha256,
    read_classifier,
    save_classifier,
    train_classifier,
    weights_sha256,
)
from pyrovae.data import load_dataset

TOLERANCE = 0.001  # float16 is stored when it keeps the float32 test accuracy to 0.1%


def rounded(net: MNISTClassifier, dtype: torch.dtype) -> MNISTClassifier:
    """A float32 copy of ``net`` whose weights went through ``dtype`` (what a load gives)."""
    copy = MNISTClassifier()
    copy.load_state_dict({k: v.to(dtype) for k, v in net.state_dict().items()})
    copy.metadata = dict(net.metadata)
    return copy.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default="runs/classifier/mnist-cnn-v1.pt")
    parser.add_argument("--dtype", choices=["auto", "float16", "float32"], default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: reproducible)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("mnist", args.data_root, download=False)
    start = time.perf_counter()
    net = train_classifier(data, ClassifierConfig(), device="cpu", progress=True)
    accuracy = {
        name: evaluate_accuracy(rounded(net, dtype), data.test)
        for name, dtype in (("float32", torch.float32), ("float16", torch.float16))
    }
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in accuracy:
            save_classifier(Path(tmp) / name, net, getattr(torch, name))
            sizes[name] = (Path(tmp) / name).stat().st_size
    if args.dtype == "auto":
        keep16 = accuracy["float32"] - accuracy["float16"] <= TOLERANCE
        args.dtype = "float16" if keep16 else "float32"
    dtype = getattr(torch, args.dtype)
    stored = rounded(net, dtype)
    stored.metadata.update(
        test_accuracy=accuracy[args.dtype],
        test_accuracy_float32=accuracy["float32"],
        weights_dtype=args.dtype,
        weights_sha256=weights_sha256(stored),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        command="python benchmarks/train_classifier.py",
    )
    out = Path(args.out)
    save_classifier(out, stored, dtype)
    seconds = time.perf_counter() - start
    back = read_classifier(out)
    assert weights_sha256(back) == stored.metadata["weights_sha256"]
    meta = back.metadata

    print(
        f"test accuracy on {len(data.test):,} images: float32 {accuracy['float32']:.4f} "
        f"({sizes['float32'] / 1e3:.0f} kB), float16 {accuracy['float16']:.4f} "
        f"({sizes['float16'] / 1e3:.0f} kB); stored {args.dtype}"
    )
    print(f"val accuracy by epoch: {', '.join(f'{a:.4f}' for a in meta['val_accuracy'])}")
    print(
        f"training {meta['train_seconds']:.1f} s on {meta['torch_threads']} thread(s) "
        f"(torch {meta['torch_version']}, {meta['cpu_capability']}), {seconds:.1f} s in all"
    )
    print(f"wrote {out}: sha256 {file_sha256(out)}")
    print(f"weights sha256 {meta['weights_sha256']}")
    if SHIPPED_PATH.is_file() and out.resolve() != SHIPPED_PATH:
        shipped = read_classifier(SHIPPED_PATH).metadata.get("weights_sha256")
        same = "the same weights as" if shipped == meta["weights_sha256"] else "NOT the weights of"
        print(f"{same} the shipped {SHIPPED_PATH}")


if __name__ == "__main__":
    main()
