"""Missing entries (NaN) in the data: checks and the PCA start.

See the user guide's section on missing entries. Every loss leaves missing
entries out (:mod:`skgfe._losses`, :class:`skgfe._flow.ReconstructionObjective`);
this module holds what comes before training: the input checks and the principal
axes of data with missing entries, for the decoder's PCA start.
"""

import numpy as np
import torch


def check_observed_rows(X, estimator_name):
    """Raise a ValueError if a row of ``X`` (an array) observes no entry."""
    empty = np.flatnonzero(np.isnan(X).all(axis=1))
    if len(empty):
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        raise ValueError(
            f"{estimator_name} needs at least one observed (non-NaN) entry in every "
            f"sample; {len(empty)} sample(s) have none (rows {shown}). Drop them "
            "first, e.g. X[~np.isnan(X).all(axis=1)]."
        )


def iterative_pca(X, n_components, *, max_iter=200, tol=1e-8):
    """Principal axes and column means of ``X`` with missing entries (NaN).

    Hard-rank iterative SVD (the EM algorithm of PCA with missing values, without
    noise; Ilin & Raiko, 2010): fill the missing entries with their column
    means, then repeat {fit the rank-``n_components`` PCA of the filled matrix;
    replace the missing entries by its reconstruction} until the filled values
    change by less than ``tol`` (relative, squared). Without missing entries it
    is PCA: one SVD of the centred data.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        The data, NaN for a missing entry; every column should observe one entry
        at least (a column observing none is filled with 0).
    n_components : int
        The rank of the reconstruction.
    max_iter : int, default=200
    tol : float, default=1e-8

    Returns
    -------
    mean : torch.Tensor of shape (n_features,)
    components : torch.Tensor of shape (min(n_components, *X.shape), n_features)
        The principal axes, as rows (PCA's ``components_``).
    filled : torch.Tensor of shape (n_samples, n_features)
        ``X`` with its missing entries replaced by the reconstruction.
    """
    missing = torch.isnan(X)
    n_axes = min(n_components, *X.shape)
    observed = (~missing).sum(dim=0).clamp(min=1)
    mean = X.masked_fill(missing, 0.0).sum(dim=0) / observed
    filled = torch.where(missing, mean, X)
    for _ in range(max_iter if missing.any() else 1):
        mean = filled.mean(dim=0)
        u, s, vh = torch.linalg.svd(filled - mean, full_matrices=False)
        reconstruction = (u[:, :n_axes] * s[:n_axes]) @ vh[:n_axes] + mean
        previous = filled[missing]
        filled = torch.where(missing, reconstruction, X)
        change = (filled[missing] - previous).pow(2).sum()
        if change <= tol * filled.pow(2).sum():
            break
    mean = filled.mean(dim=0)
    _, _, vh = torch.linalg.svd(filled - mean, full_matrices=False)
    return mean, vh[:n_axes], filled
