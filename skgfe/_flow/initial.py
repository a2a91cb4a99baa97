"""Initial codes of the flows."""

import hashlib

import numpy as np
import torch

INITS = ("zeros", "random")


def initial_codes(X, n_components, init="zeros", seed=0):
    """Starting codes ``z0`` of the samples ``X`` (a tensor, one sample per row).

    ``'zeros'`` starts every sample at the origin. ``'random'`` draws each sample's
    start uniformly from ``[-1, 1]^n_components`` with a generator seeded by a hash
    of ``seed`` and of the sample's own values, so that the start of a sample is
    random, yet the same every time that sample is encoded, whatever its batch,
    its position in the batch, or the chunking of the data.
    """
    n_samples = X.shape[0]
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
