"""Per-sample reconstruction losses.

Each returns one value per row (the mean over features), so that the loss of a batch
is a sum of independent per-sample terms and the gradient with respect to one
sample's code depends on that sample alone.

A missing entry of the target (NaN) is left out: the row's value is the mean over
its observed entries, and no gradient flows to the output's missing entries. A
target without NaN takes exactly the computation it took before missing entries
were supported.
"""

import torch
import torch.nn.functional as F


def _observed_mean(entries, missing):
    """Each row's mean of ``entries`` over its observed (not ``missing``) ones."""
    n_observed = (~missing).sum(dim=1).clamp(min=1).to(entries.dtype)
    return entries.masked_fill(missing, 0.0).sum(dim=1) / n_observed


def mse(output, target):
    """Mean squared error of each row, over its observed entries."""
    missing = torch.isnan(target)
    if not missing.any():
        return ((output - target) ** 2).mean(dim=1)
    return _observed_mean((output - target.masked_fill(missing, 0.0)) ** 2, missing)


def bce_with_logits(output, target):
    """Binary cross-entropy of each row, ``output`` being logits, over its
    observed entries."""
    missing = torch.isnan(target)
    if not missing.any():
        return F.binary_cross_entropy_with_logits(
            output, target, reduction="none"
        ).mean(dim=1)
    entries = F.binary_cross_entropy_with_logits(
        output, target.masked_fill(missing, 0.0), reduction="none"
    )
    return _observed_mean(entries, missing)


LOSSES = {"mse": mse, "bce": bce_with_logits}
