"""Classifier two-sample test: can a classifier tell generated samples from real data?

Revisiting Classifier Two-Sample Tests (Lopez-Paz & Oquab, 2017),
https://arxiv.org/abs/1610.06545. Given n real rows and n generated rows (flat vectors of any
dimension D), each set is split at random into a training part and a held-out part of
``round(test_fraction * n)`` rows. A small MLP (one hidden ReLU layer) is trained to label the
training parts (real 0, generated 1), on inputs standardized by the mean and standard
deviation of the pooled training rows, and its accuracy t = k / m on the m held-out rows (half
real, half generated) is the statistic:

- t near 0.5: the classifier cannot tell the samples from real data (indistinguishable to it);
  t near 1: it tells them apart every time.
- interval: the exact (Clopper-Pearson, 1934) interval of the binomial proportion k / m, the
  ``level`` quantiles of Beta(k, m - k + 1) and Beta(k + 1, m - k), found by bisection on the
  binomial tail; conservative (coverage at least ``level`` for every true accuracy).
- p_value: P(X >= k) for X ~ Binomial(m, 1/2), the one-sided exact test of H0 "the two samples
  come from one distribution" against "the classifier beats chance". Under H0 the held-out
  predictions do not depend on which set a row came from, so each is right with probability
  1/2 on a test set that is half real, half generated; the number right is then a sum of two
  binomials with variance at most m / 4, so the Binomial(m, 1/2) tail is exact or
  conservative.

Decoder means are smoother than real data, so a classifier tells them apart (t near 1) even
when they look right: pass draws x ~ p(x | z), as the evaluation does, compare sources by t,
and read t = 0.5 as "as good as this classifier can see".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.nets import check_positive_int

__all__ = [
    "TwoSampleTest",
    "binomial_tail",
    "classifier_two_sample_test",
    "clopper_pearson_interval",
]

_BISECTIONS = 60  # halvings of [0, 1]: the bounds to about 1e-18, below float64's resolution


def _log_pmf(n: int, p: float) -> torch.Tensor:
    """log P(X = j) for j = 0..n, X ~ Binomial(n, p), float64 (0 < p < 1)."""
    j = torch.arange(n + 1, dtype=torch.float64)
    log_choose = math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    return log_choose + j * math.log(p) + (n - j) * math.log1p(-p)


def binomial_tail(k: int, n: int, p: float = 0.5, upper: bool = True) -> float:
    """P(X >= k) (``upper``) or P(X <= k) for X ~ Binomial(n, p), summed exactly in log space."""
    _check_counts(k, n)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    if p in (0.0, 1.0):  # X is n p for sure
        x = int(n * p)
        return float(x >= k if upper else x <= k)
    log_pmf = _log_pmf(n, p)
    part = log_pmf[k:] if upper else log_pmf[: k + 1]
    return min(1.0, torch.logsumexp(part, 0).exp().item())


def _check_counts(k: int, n: int) -> None:
    check_positive_int("n", n)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in 0..n={n}, got {k!r}")


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact interval of a binomial proportion k / n (Clopper & Pearson, 1934).

    lower: the p with P(X >= k | p) = (1 - level) / 2 (0 for k = 0); upper: the p with
    P(X <= k | p) = (1 - level) / 2 (1 for k = n); X ~ Binomial(n, p). These are the Beta
    quantiles of scipy's ``binomtest(k, n).proportion_ci(level, method="exact")``.
    """
    _check_counts(k, n)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    alpha = (1.0 - level) / 2

    def solve(tail_rises: bool, tail: float) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            value = binomial_tail(k, n, mid, upper=tail_rises)
            if (value < tail) == tail_rises:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    lower = 0.0 if k == 0 else solve(True, alpha)  # P(X >= k | p) rises with p
    upper = 1.0 if k == n else solve(False, alpha)  # P(X <= k | p) falls with p
    return lower, upper


@dataclass(frozen=True)
class TwoSampleTest:
    """Result of :func:`classifier_two_sample_test` (see the module docstring).

    Attributes:
        accuracy: held-out accuracy t = num_correct / num_test (0.5: indistinguishable).
        low, high: its exact (Clopper-Pearson) interval at ``level``.
        p_value: P(X >= num_correct), X ~ Binomial(num_test, 1/2) (one-sided).
        num_correct, num_test: held-out rows classified right, and in all (half real).
        num_train: rows the classifier was trained on (half real).
        level: the interval's confidence level.
    """

    accuracy: float
    low: float
    high: float
    p_value: float
    num_correct: int
    num_test: int
    num_train: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        """``{"accuracy", "low", "high", "p_value", "num_correct", "num_test", "num_train",
        "level"}``: the evaluation's ``"c2st"`` entry."""
        return {
            "accuracy": self.accuracy,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "num_correct": self.num_correct,
            "num_test": self.num_test,
            "num_train": self.num_train,
            "level": self.level,
        }


def _check_rows(name: str, x: torch.Tensor, min_rows: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < min_rows:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} must be a tensor of shape (N, D) with N >= {min_rows}, got {shape}; "
            "flatten rows with x.reshape(len(x), -1)"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; drop those rows first")
    return x.detach().float().cpu()


def classifier_two_sample_test(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    test_fraction: float = 0.5,
    hidden_dim: int = 128,
    num_steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    level: float = 0.95,
    seed: int = 0,
) -> TwoSampleTest:
    """Train a classifier to tell ``generated`` rows from ``real`` ones; score it held out.

    Args:
        real: real rows (e.g. held-out data), shape (N, D), any units.
        generated: generated rows (e.g. decoder means), shape (M, D). The first
            n = min(N, M) rows of each are used, so the test set is half real, half
            generated and chance is exactly 1/2: pass random subsets.
        test_fraction: share of each set held out for the accuracy.
        hidden_dim: width of the MLP's hidden layer.
        num_steps: Adam steps on minibatches of ``batch_size`` (drawn without replacement,
            epoch after epoch).
        lr, weight_decay: Adam's learning rate and L2 penalty.
        level: confidence level of the accuracy's interval.
        seed: seeds the split, the initialization and the minibatches (the global RNG is
            left alone); the same arguments give the same result on one machine.

    Returns:
        A :class:`TwoSampleTest`; ``.to_dict()`` for the evaluation's ``"c2st"`` entry.
    """
    real = _check_rows("real", real, 2)
    generated = _check_rows("generated", generated, 2)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(
            f"real rows have {real.shape[1]} values but generated rows {generated.shape[1]}; "
            "give both in the same flat space"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    for name, value in (("hidden_dim", hidden_dim), ("num_steps", num_steps)):
        check_positive_int(name, value)
    check_positive_int("batch_size", batch_size)
    n = min(len(real), len(generated))
    n_test = min(n - 1, max(1, math.floor(test_fraction * n + 0.5)))
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for x in (real[:n], generated[:n]):
        order = torch.randperm(n, generator=gen)
        parts.append((x[order[n_test:]], x[order[:n_test]]))
    (real_train, real_test), (gen_train, gen_test) = parts
    x_train = torch.cat([real_train, gen_train])
    y_train = torch.cat([torch.zeros(len(real_train)), torch.ones(len(gen_train))])
    x_test = torch.cat([real_test, gen_test])
    y_test = torch.cat([torch.zeros(n_test), torch.ones(n_test)])
    mean = x_train.mean(0)
    std = x_train.std(0)
    std = torch.where(std > 1e-8 * (1 + mean.abs()), std, torch.ones_like(std))
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Linear(x_train.shape[1], hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1)
        )
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    order = torch.randperm(len(x_train), generator=gen)
    position = 0
    for _ in range(num_steps):
        if position >= len(order):
            order, position = torch.randperm(len(x_train), generator=gen), 0
        idx = order[position : position + batch_size]
        position += batch_size
        loss = F.binary_cross_entropy_with_logits(net(x_train[idx]).squeeze(-1), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        predicted = (net(x_test).squeeze(-1) > 0).float()
    m = len(y_test)
    k = int((predicted == y_test).sum())
    low, high = clopper_pearson_interval(k, m, level)
    return TwoSampleTest(
        accuracy=k / m,
        low=low,
        high=high,
        p_value=binomial_tail(k, m, 0.5),
        num_correct=k,
        num_test=m,
        num_train=len(x_train),
        level=level,
    )
