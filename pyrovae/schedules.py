"""Learning-rate schedules of a training run: the rate of each epoch.

- ``constant``: the base rate ``lr`` throughout.
- ``burda``: the schedule of Burda, Grosse & Salakhutdinov (2016), "Importance Weighted
  Autoencoders", section 5: stage i = 0, 1, ..., 7 lasts 3^i epochs at lr * 10^(-i/7),
  3,280 epochs in all (with their lr = 1e-3, batch 20 and Adam's epsilon 1e-4). Epochs
  beyond the last stage keep its rate.

A rate is a function of the epoch alone, so a resumed run follows the schedule exactly.
"""

from __future__ import annotations

from pyrovae.nets import check_positive_int

__all__ = ["BURDA_EPOCHS", "BURDA_STAGES", "LR_SCHEDULES", "burda_stage", "learning_rate"]

LR_SCHEDULES = ("constant", "burda")
BURDA_STAGES = 8
BURDA_EPOCHS = sum(3**i for i in range(BURDA_STAGES))  # 3,280


def burda_stage(epoch: int) -> int:
    """The stage i of (1-based) ``epoch``: the i with sum_{j<i} 3^j < epoch <= sum_{j<=i}
    3^j, and the last stage (7) after epoch 3,280."""
    check_positive_int("epoch", epoch)
    stage, end = 0, 1
    while epoch > end and stage < BURDA_STAGES - 1:
        stage += 1
        end += 3**stage
    return stage


def learning_rate(schedule: str, lr: float, epoch: int) -> float:
    """The learning rate of (1-based) ``epoch`` under ``schedule`` with base rate ``lr``."""
    if schedule == "constant":
        check_positive_int("epoch", epoch)
        return lr
    if schedule == "burda":
        return lr * 10.0 ** (-burda_stage(epoch) / 7)
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid names are {sorted(LR_SCHEDULES)}")
