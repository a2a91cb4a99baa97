"""Per-sample reconstruction losses.

Each returns one value per row (the mean over features), so that the loss of a batch
is a sum of independent per-sample terms and the gradient with respect to one
sample's code depends on that sample alone.
"""

import torch.nn.functional as F


def mse(output, target):
    """Mean squared error of each row."""
    return ((output - target) ** 2).mean(dim=1)


def bce_with_logits(output, target):
    """Binary cross-entropy of each row, ``output`` being logits."""
    return F.binary_cross_entropy_with_logits(output, target, reduction="none").mean(
        dim=1
    )


LOSSES = {"mse": mse, "bce": bce_with_logits}
