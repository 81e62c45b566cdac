"""Time NUTS reference posteriors per datum, and how often their chains mix.

For each of N test images (the classes in turn, as ``pyrovae diagnose`` picks them),
:func:`~pyrovae.analysis.posterior.nuts.reference_posterior` runs C chains of W warm-up and S
kept NUTS steps. Printed: the wall time per datum (median), the share of data whose
chains pass every check of ``pyrovae diagnose`` (R-hat at most 1.01, bulk and tail ESS at
least 100 per chain, no divergence; target: at least 95% at the defaults), and the number of
log-joint gradient evaluations per datum, counted as decoder forward passes. The
reference, timed in the same run, is the bare work of those evaluations: the decoder's
log-likelihood plus the standard Normal log density at one z requiring grad, and
``torch.autograd.grad`` in z, in a plain loop. The ratio NUTS / reference is Pyro's
overhead per gradient (tracing the model, the tree building, adaptation) on a batch of one.

    python benchmarks/nuts_speed.py --run-dir runs/vae-z10 --num-data 10
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from pyrovae.analysis.posterior.diagnose import diagnosed_indices
from pyrovae.analysis.posterior.nuts import RHAT_THRESHOLD, reference_posterior
from pyrovae.data import fixed_binarization, load_dataset
from pyrovae.runs import load_run
from pyrovae.train import one_hot

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def plain_gradients(vae, x: torch.Tensor, y: torch.Tensor | None, count: int) -> float:
    """Seconds for ``count`` gradients of log p(x | z) + log N(z; 0, I) in z, batch of one."""
    z = torch.zeros(1, vae.z_dim, device=x.device, requires_grad=True)
    normal = torch.distributions.Normal(0.0, 1.0)
    start = time.perf_counter()
    with torch.enable_grad():
        for _ in range(count):
            log_joint = vae.decoder(z, y).log_prob(x).sum() + normal.log_prob(z).sum()
            torch.autograd.grad(log_joint, z)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a trained run")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--num-data", type=int, default=10)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vae = load_run(args.run_dir, device="cpu")
    test = load_dataset("mnist", root=args.data_root, download=False).test
    idx = diagnosed_indices(test, args.num_data, 10)
    x = test.x[idx]
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    y = one_hot(test.y[idx], vae.y_dim) if vae.conditional else None
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(
        f"{args.run_dir}: z_dim={vae.z_dim}, {torch.get_num_threads()} threads; {args.chains} "
        f"chains x ({args.warmup} warm-up + {args.samples}) NUTS steps per datum"
    )
    calls = [0]
    hook = vae.decoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    seconds, evaluations, mixed, reference = [], [], [], []
    for i in range(x.shape[0]):
        yi = None if y is None else y[i]
        calls[0] = 0
        start = time.perf_counter()
        ref = reference_posterior(
            vae,
            x[i],
            yi,
            num_chains=args.chains,
            warmup=args.warmup,
            num_samples=args.samples,
            seed=i,
        )
        seconds.append(time.perf_counter() - start)
        evaluations.append(calls[0])
        mixed.append(not ref.flagged)
        hook.remove()
        reference.append(
            plain_gradients(vae, x[i : i + 1], None if yi is None else yi[None], calls[0])
        )
        hook = vae.decoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        print(
            f"  datum {int(idx[i]):5d}: {seconds[-1]:6.1f} s, {calls[0]:6d} gradients, "
            f"R-hat {ref.r_hat_max:.4f}, bulk ESS {ref.ess_bulk_min:.0f}"
            + (f", flagged: {' '.join(ref.flag_reasons)}" if ref.flagged else "")
        )
    hook.remove()
    ratios = [s / r for s, r in zip(seconds, reference, strict=True)]
    print(
        f"NUTS per datum: median {statistics.median(seconds):.1f} s "
        f"({statistics.median(evaluations):.0f} gradient evaluations); plain-loop reference "
        f"{statistics.median(reference):.2f} s; ratio NUTS / reference, median "
        f"{statistics.median(ratios):.1f}"
    )
    print(
        f"unflagged (R-hat <= {RHAT_THRESHOLD}, ESS, divergences): "
        f"{sum(mixed)} of {len(mixed)} data "
        f"({sum(mixed) / len(mixed):.0%}; target >= 95%)"
    )


if __name__ == "__main__":
    main()
