"""Latent geometry of VAE-DLM: pull-back metrics, the sphere target and the flow.

VAE-DLM embeds local coordinates ``u`` (``d`` of them) and a time ``t`` as a point
``E(u, t)`` of a hypersurface of ``R^(d+1)`` that moves with ``t``. A metric network
``g(u, t)`` is tied to the embedding's pull-back metric ``J^T J`` (``J = dE/du``)
and trained to follow the linear, steady geometric flow

    dg/dt + Lambda g + rate (g - g_S) = 0

towards the round metric ``g_S`` of a sphere; an eigenvalue penalty keeps
``g - g_S`` positive semi-definite. This module computes each term for a batch of
rows; the estimator weighs them (:class:`skgfe.VAEDLMRegressor`).

Derivatives come in two modes that give the same values (the tests compare them
in float64): 'forward' pushes tangents through the networks with
:func:`torch.func.jvp` (``d`` tangents for ``J``, one for ``dg/dt``), 'reverse'
takes one backward pass per output entry, as the author's code does (``d + 1`` for
``J``, ``d (d + 1) / 2`` for ``dg/dt``). Both keep the graph, so the losses can be
differentiated with respect to the networks' weights and to ``u``.
"""

import torch

DERIVATIVE_MODES = ("forward", "reverse")


def _with_time(u, t):
    return torch.cat([u, t.unsqueeze(-1)], dim=-1)


def sphere_metric(u, scale):
    """Diagonal of the round metric of the ``d``-sphere of radius ``sqrt(scale)``.

    In hyperspherical coordinates ``u = (u_1, ..., u_d)``, entry ``i`` is
    ``scale * prod_{k < i} sin(u_k)^2`` (the first entry is ``scale``; ``u_d``
    never appears). Shape ``(n, d)``. It vanishes where some ``sin(u_k) = 0``
    (``u = 0`` included): the chart's singularities, which the method keeps.
    """
    sin2 = torch.sin(u[:, :-1]) ** 2
    ones = torch.ones_like(u[:, :1])
    return scale * torch.cat([ones, torch.cumprod(sin2, dim=1)], dim=1)


def symmetric_square(network, u, t):
    """``A^T A`` of the network's ``(d, d)`` output ``A(u, t)``: PSD by construction."""
    d = u.shape[1]
    a = network(_with_time(u, t)).view(-1, d, d)
    return a.transpose(-1, -2) @ a


def pullback_metric(manifold, u, t, mode="forward"):
    """``J^T J`` with ``J = dE/du`` of the embedding ``E = manifold`` at ``(u, t)``.

    Returns ``(n, d, d)``. ``J`` is the derivative in the latent coordinates only,
    not in ``t``.
    """
    n, d = u.shape
    if mode == "forward":
        # The d tangent directions as one batch of d * n rows: no vmap needed.
        u_rep = u.repeat(d, 1)
        t_rep = t.repeat(d)
        eye = torch.eye(d, dtype=u.dtype, device=u.device)
        tangents = eye.repeat_interleave(n, dim=0)
        _, columns = torch.func.jvp(
            lambda v: manifold(_with_time(v, t_rep)), (u_rep,), (tangents,)
        )
        jac = columns.view(d, n, -1).permute(1, 2, 0)  # (n, d + 1, d)
    else:
        embedded = manifold(_with_time(u, t))
        rows = [
            torch.autograd.grad(embedded[:, k].sum(), u, create_graph=True)[0]
            for k in range(embedded.shape[1])
        ]
        jac = torch.stack(rows, dim=1)
    return jac.transpose(-1, -2) @ jac


def metric_and_time_derivative(metric, u, t, mode="forward"):
    """``g(u, t)`` and ``dg/dt``, each ``(n, d, d)``."""
    if mode == "forward":
        return torch.func.jvp(
            lambda s: symmetric_square(metric, u, s), (t,), (torch.ones_like(t),)
        )
    g = symmetric_square(metric, u, t)
    d = u.shape[1]
    # One backward pass per entry of the upper triangle, mirrored.
    upper = {
        (i, j): torch.autograd.grad(g[:, i, j].sum(), t, create_graph=True)[0]
        for i in range(d)
        for j in range(i, d)
    }
    dg = torch.stack(
        [
            torch.stack([upper[min(i, j), max(i, j)] for j in range(d)], dim=-1)
            for i in range(d)
        ],
        dim=-2,
    )
    return g, dg


def flow_residual(g, dg, operator, target, rate):
    """``dg/dt + Lambda g + rate (g - diag(target))``, all ``d x d`` entries.

    ``Lambda g`` is not symmetric in general, so neither is the residual: every
    entry is penalised (none is symmetrised away).
    """
    return dg + operator @ g + rate * (g - torch.diag_embed(target))


def eigenvalue_penalty(g, target):
    """``relu(-lambda_k(g - diag(target)))^2`` of each eigenvalue, ``(n, d)``.

    Raises :class:`FloatingPointError` when the matrices are not finite (the
    eigen-solver would fail, or return finite values for a partly NaN matrix),
    so that training treats it as a diverged loss.
    """
    difference = g - torch.diag_embed(target)
    if not torch.isfinite(difference).all():
        raise FloatingPointError("The latent metric is not finite.")
    eigenvalues = torch.linalg.eigvalsh(difference)
    return torch.relu(-eigenvalues) ** 2


def geometry_terms(manifold, metric, operator, u, t, *, scale, rate, mode):
    """The three geometric losses (means over entries) and the tensors behind them.

    Parameters
    ----------
    manifold, metric, operator : torch.nn.Module
        ``E``, the metric network (output ``A``, ``g = A^T A``) and the operator
        network (output ``B``, ``Lambda = B^T B``), each taking ``[u | t]``.
    u : torch.Tensor of shape (n, d)
        Latent coordinates (posterior samples, carrying their graph).
    t : torch.Tensor of shape (n,)
        Normalised times.
    scale, rate : float
        The sphere's ``scale`` (squared radius) and the flow's relaxation rate.
    mode : {'forward', 'reverse'}
        How the derivatives are taken.

    Returns
    -------
    losses : dict of torch.Tensor
        ``metric`` (mean squared ``g - J^T J``), ``flow`` (mean squared flow
        residual) and ``eigen`` (mean eigenvalue penalty).
    tensors : dict of torch.Tensor
        ``metric``, ``pullback``, ``target`` (the diagonal of ``g_S``),
        ``residual`` and ``operator``.
    """
    if mode == "reverse":
        if not u.requires_grad:
            u = u.detach().requires_grad_(True)
        t = t.detach().requires_grad_(True)
    pullback = pullback_metric(manifold, u, t, mode)
    g, dg = metric_and_time_derivative(metric, u, t, mode)
    lam = symmetric_square(operator, u, t)
    target = sphere_metric(u, scale)
    residual = flow_residual(g, dg, lam, target, rate)
    losses = {
        "metric": ((g - pullback) ** 2).mean(),
        "flow": (residual**2).mean(),
        "eigen": eigenvalue_penalty(g, target).mean(),
    }
    tensors = {
        "metric": g,
        "pullback": pullback,
        "target": target,
        "residual": residual,
        "operator": lam,
    }
    return losses, tensors
