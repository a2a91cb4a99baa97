"""Initial codes of the flows."""

import hashlib

import numpy as np
import torch

from .._networks import _pad_to_blocks, _unpad

INITS = ("auto", "zeros", "random", "linear", "amortized")


def initial_codes(X, n_components, init="zeros", seed=0):
    """Starting codes ``z0`` of the samples ``X`` (a tensor, one sample per row).

    ``'zeros'`` starts every sample at the origin. ``'random'`` draws each sample's
    start uniformly from ``[-1, 1]^n_components`` with a generator seeded by a hash
    of ``seed`` and of the sample's own values, so that the start of a sample is
    random, yet the same every time that sample is encoded, whatever its batch,
    its position in the batch, or the chunking of the data.
    """
    n_samples = X.shape[0]
    if init not in ("zeros", "random"):
        raise ValueError(f"initial_codes draws 'zeros' or 'random', not {init!r}.")
    if init == "zeros":
        return X.new_zeros((n_samples, n_components))
    key = int(seed).to_bytes(8, "little", signed=False)
    # + 0.0 turns -0.0 into 0.0, so that equal values hash equally.
    rows = np.ascontiguousarray(X.detach().cpu().numpy() + 0.0)
    codes = np.empty((n_samples, n_components))
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        codes[i] = rng.uniform(-1.0, 1.0, n_components)
    return torch.as_tensor(codes, dtype=X.dtype, device=X.device)


def linear_path_codes(decoder, X):
    """Least-squares codes of ``X`` under the decoder's linear path.

    For a decoder with a skip connection ``D(z) = z @ W.T + b + r(z)`` (or an
    affine decoder) it is ``argmin_z |W z + D(0) - x|``: the code the decoder
    would give if its non-linear residual were constant. For a decoder
    initialised from PCA and not yet trained, that is the PCA projection, and
    the exact code. Each row is computed on its own (the decoder's row blocks).

    A row with missing entries (NaN) gets the least-squares code of its observed
    entries (the minimum-norm one where they do not determine it); rows without
    missing entries are computed as if no row missed any.
    """
    if decoder.skip is None and len(decoder.layers) > 1:
        return X.new_zeros((X.shape[0], decoder.layer_sizes[0]))
    linear = decoder.skip if decoder.skip is not None else decoder.layers[-1]
    with torch.no_grad():
        offset = decoder(X.new_zeros((1, decoder.layer_sizes[0])))
        inverse = torch.linalg.pinv(linear.weight.double()).to(X.dtype)
        missing = torch.isnan(X)
        incomplete = missing.any(dim=1)
        X_filled = X.masked_fill(missing, 0.0) if incomplete.any() else X
        codes = _unpad(
            torch.matmul(_pad_to_blocks(X_filled - offset), inverse.T), len(X)
        )
        if incomplete.any():
            rows = incomplete.nonzero().squeeze(1)
            codes[rows] = _observed_least_squares(
                linear.weight, X[rows] - offset, ~missing[rows]
            )
        return codes


def _observed_least_squares(weight, residual, observed):
    """Per row, the minimum-norm ``z`` minimising ``|W_O z - r_O|`` (float64 inside)."""
    W = weight.double()
    mask = observed.double()
    gram = W.T @ (mask[:, :, None] * W)  # (n, k, k): W_O^T W_O per row
    rhs = (mask * residual.double().nan_to_num(0.0)) @ W  # (n, k): W_O^T r_O
    codes = (torch.linalg.pinv(gram, hermitian=True) @ rhs.unsqueeze(-1)).squeeze(-1)
    return codes.to(residual.dtype)
