"""Laplace approximation of a code's posterior: error bars on codes and outputs.

With Gaussian noise of variance ``s_j^2`` on feature ``j`` and a Gaussian prior
``N(m, P^-1)`` on the code, the log-posterior of a sample's code is, near its
optimum ``z*``, the quadratic whose precision is the Gauss-Newton matrix of the
observed entries plus the prior's:

    Sigma_z = (J_O^T diag(1 / s_O^2) J_O + P)^-1,

``J = dD/dz`` at ``z*``. The decoder output's variance from the code's
uncertainty is ``diag(J^T Sigma_z J)``; a new measurement of entry ``j`` adds
``s_j^2``. With a linear decoder this is exact (probabilistic PCA's posterior
covariance for ``P = I``). Rows are evaluated over the decoder's fixed row blocks,
so a row's result does not depend on its batch mates.
"""

import torch

from .._networks import _pad_to_blocks
from .derivatives import _forward, _hidden_tangents, _jacobian, _plan, _rows


def _jacobian_blocks(decoder, z):
    """``dD/dz`` over the decoder's row blocks, ``(b, R, k, p)``."""
    plan = _plan(decoder)
    output, cache = _forward(plan, z.detach())
    t_h = _hidden_tangents(plan, cache, z.dtype)
    shape = (*output.shape[:2], z.shape[1], output.shape[-1])
    return _jacobian(plan, t_h, shape, z.dtype)


def decoder_jacobian(decoder, z):
    """Each sample's Jacobian ``dD/dz`` at its code, ``(n_samples, k, p)``.

    Row ``j`` of a sample's matrix is the derivative in ``z_j``; rows are
    evaluated over the decoder's fixed row blocks, as everywhere in skgfe.
    """
    with torch.no_grad():
        return _rows(_jacobian_blocks(decoder, z), len(z))


def laplace_covariance(decoder, z, entry_precision, prior_precision=None):
    """Per-sample code covariances and the output variances they imply.

    Parameters
    ----------
    decoder : torch.nn.Module
        One of skgfe's decoders (:class:`~skgfe._networks.MLP` or
        :class:`~skgfe._networks.ModifiedMLP`).
    z : torch.Tensor of shape (n_samples, k)
        The codes (the optimum of each sample's loss).
    entry_precision : torch.Tensor of shape (n_samples, n_features)
        The weight of each entry in the Gauss-Newton matrix: ``1 / s_j^2`` for an
        observed entry under Gaussian noise, 0 for a missing one.
    prior_precision : torch.Tensor of shape (k, k) or None, default=None
        The prior's precision ``P``; None for no prior (then a row whose
        observed entries do not determine every direction of its code has no
        finite covariance, and its entries are inf).

    Returns
    -------
    covariance : torch.Tensor of shape (n_samples, k, k)
    output_variance : torch.Tensor of shape (n_samples, n_features)
        ``diag(J Sigma_z J^T)``: the variance of the decoded sample due to the
        code's uncertainty (without the noise).
    """
    n_rows, k = z.shape
    with torch.no_grad():
        jac = _jacobian_blocks(decoder, z)
        weights = _pad_to_blocks(entry_precision.to(z.dtype)).unsqueeze(-2)
        precision = (jac * weights) @ jac.transpose(-1, -2)
        if prior_precision is not None:
            precision = precision + prior_precision.to(z.dtype)
        factor, info = torch.linalg.cholesky_ex(precision)
        singular = (info != 0)[..., None, None]
        # The identity stands in for a failed factor (and for the padding rows,
        # which observe nothing) so that the inverse stays defined; a singular
        # precision leaves some direction of the code unknown: inf says so.
        eye = torch.eye(k, dtype=z.dtype, device=z.device)
        covariance = torch.cholesky_inverse(torch.where(singular, eye, factor))
        covariance = covariance.masked_fill(singular, float("inf"))
        output_variance = ((covariance @ jac) * jac).sum(dim=-2)
        output_variance = output_variance.masked_fill(singular[..., 0], float("inf"))
    return _rows(covariance, n_rows), _rows(output_variance, n_rows)
