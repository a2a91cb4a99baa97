"""AMD ("adaptive minimise distance"): explicit Euler with a per-sample line search.

Integrates the flow of each sample's loss with an explicit step whose size is chosen
to make the loss go down (an Armijo-like test) rather than to control truncation
error; see ``METHOD.md`` section 3 in the project documentation. Unlike the research
code, every sample keeps its own step size, its own accept/reject decision and its
own stopping flag, and converged samples drop out of the computation, so a sample's
code never depends on the other samples of its batch.

Two flows are supported:

- ``momentum=False``, the gradient flow ``dz/dt = -grad l(z)``: a step is
  ``z' = z - dt * grad l(z)``;
- ``momentum=True``, the second-order (Nesterov) flow ``dz/dt = m``,
  ``dm/dt = -3/s m - grad l(z)``, stepped semi-implicitly:
  ``m' = ((s + eps) / (s + dt + eps))**3 * m - dt * grad l(z)``, then
  ``z' = z + dt * m'``. The damping factor is the exact decay of ``m`` under the
  ``3/s`` friction over the step, so it stays in (0, 1) for any ``dt`` (plain
  explicit Euler would flip the sign of ``m`` whenever ``dt > s/3``), and updating
  ``z`` with the new momentum makes the very first step (from ``m = 0``) move.
  A trial that fails the decrease test restarts the momentum (``m = 0``, ``s = 0``:
  the clock ``s`` of the friction is the time since the last restart) and, if the
  momentum was already zero, shrinks ``dt``; this is restarted Nesterov descent
  with a function-value restart (O'Donoghue and Candes, 2015). Each accepted step
  therefore lowers the loss, exactly as with the gradient flow.

With ``differentiable=True`` the unrolled accepted steps keep their autograd graph
(the gradient in latent space is taken with ``create_graph=True``), so that the
returned codes can be backpropagated to the decoder's parameters: the exact
gradient of the discrete procedure (accept/reject decisions and step sizes are
piecewise constant in the parameters). Updates are then out of place, never
in-place index assignments on tensors that carry a graph.
"""

import torch

from .fields import NESTEROV_EPS
from .result import (
    CONVERGED,
    HORIZON,
    MAX_STEPS,
    RUNNING,
    STALL_TOL_FACTOR,
    STALLED,
    STATUS_NAMES,
    FlowResult,
    require_finite_start,
)

__all__ = ["STALL_TOL_FACTOR", "STATUS_NAMES", "FlowResult", "amd_flow"]


def _friction(s, dt):
    """Exact decay of ``dm/dt = -3/(s + eps) m`` over ``[s, s + dt]``."""
    return ((s + NESTEROV_EPS) / (s + dt + NESTEROV_EPS)) ** 3


def amd_flow(
    objective,
    z0,
    *,
    momentum=False,
    t_end=1e4,
    step_size=1.0,
    max_step_size=10.0,
    tol=1e-4,
    max_steps=1000,
    shrink=0.5,
    grow=1.1,
    max_halvings=20,
    sigma=1e-5,
    differentiable=False,
):
    """Integrate the flow of every sample with per-sample AMD steps.

    Parameters
    ----------
    objective : callable
        ``objective(z, rows)`` returns the per-sample losses ``(m,)`` and gradients
        ``(m, d)`` at codes ``z`` of shape ``(m, d)`` for the sample indices ``rows``
        (differentiable ones when ``differentiable`` is True, see
        :class:`ReconstructionObjective`).
    z0 : torch.Tensor of shape (n_samples, d)
        Initial codes.
    momentum : bool
        Integrate the second-order (Nesterov) flow instead of the gradient flow.
    t_end : float
        Integration horizon tau.
    step_size : float
        Initial (and minimum accepted) step dt0.
    max_step_size : float
        Largest step dt_max.
    tol : float
        A sample has converged once the Euclidean norm of its gradient is ``<= tol``.
    max_steps : int
        Largest number of accepted steps per sample.
    shrink, grow : float
        Factors applied to a sample's step on rejection and on acceptance.
    max_halvings : int
        A sample stalls when its step falls below ``shrink**max_halvings`` without
        an accepted step.
    sigma : float
        Sufficient-decrease constant of the acceptance test
        ``l(z) - l(z') >= sigma * dt * dt_max * |grad l(z')|^2``.
    differentiable : bool
        Keep the autograd graph of the accepted steps (for adjoint training).

    Returns
    -------
    FlowResult
    """
    n_samples = z0.shape[0]
    device = z0.device
    z = z0.detach().clone()
    all_rows = torch.arange(n_samples, device=device)
    loss, grad = objective(z, all_rows)
    require_finite_start(loss, grad)
    grad_norm = torch.linalg.vector_norm(grad.detach(), dim=1)
    m = torch.zeros_like(z) if momentum else None
    t = torch.zeros(n_samples, dtype=z.dtype, device=device)
    since_restart = torch.zeros_like(t)
    dt = torch.full_like(t, step_size)
    # Absolute, as in the research code: a huge initial step may take many
    # halvings before it first lowers the loss, and must not stall for that.
    min_step = shrink**max_halvings
    n_steps = torch.zeros(n_samples, dtype=torch.long, device=device)
    n_evals = torch.ones(n_samples, dtype=torch.long, device=device)
    status = torch.full((n_samples,), RUNNING, dtype=torch.long, device=device)
    status[grad_norm <= tol] = CONVERGED

    while True:
        rows = torch.nonzero(status == RUNNING).squeeze(1)
        if rows.numel() == 0:
            break
        dt_rows = dt[rows]
        step = dt_rows[:, None]
        if momentum:
            m_try = _friction(since_restart[rows], dt_rows)[:, None] * m[rows]
            m_try = m_try - step * grad[rows]
            z_try = z[rows] + step * m_try
        else:
            z_try = z[rows] - step * grad[rows]
        loss_try, grad_try = objective(z_try, rows)
        n_evals[rows] += 1
        with torch.no_grad():
            decrease = loss[rows] - loss_try
            sufficient = sigma * dt_rows * max_step_size * grad_try.pow(2).sum(dim=1)
            # A step into NaN or infinity is a rejected step, never an accepted one.
            finite = torch.isfinite(loss_try) & torch.isfinite(grad_try).all(dim=1)
            accept = (decrease >= sufficient) & finite

        acc, rej = rows[accept], rows[~accept]
        z_acc, loss_acc, grad_acc = z_try[accept], loss_try[accept], grad_try[accept]
        if differentiable and not finite.all():
            # Rejected rows get a zero gradient, but backpropagating that zero
            # through a decoder evaluation that overflowed gives 0 * inf = nan in
            # the weight gradients: rebuild the accepted rows' graph on its own.
            loss_acc, grad_acc = objective(z_acc, acc)
        z = z.index_copy(0, acc, z_acc)
        loss = loss.index_copy(0, acc, loss_acc)
        grad = grad.index_copy(0, acc, grad_acc)
        grad_norm[acc] = torch.linalg.vector_norm(grad_acc.detach(), dim=1)
        t[acc] += dt[acc]
        n_steps[acc] += 1
        if momentum:
            m = m.index_copy(0, acc, m_try[accept])
            since_restart[acc] += dt[acc]
            # A rejected trial with momentum restarts it and keeps the step; one
            # without momentum (a plain gradient step) shrinks the step.
            had_momentum = since_restart[rej] > 0
            m = m.index_fill(0, rej[had_momentum], 0.0)
            since_restart[rej] = 0.0
            dt[rej[~had_momentum]] *= shrink
        else:
            dt[rej] *= shrink
        dt[acc] = torch.minimum(
            torch.clamp(grow * dt[acc], min=step_size).clamp(max=max_step_size),
            t_end - t[acc],
        )

        # Order matters: a sample that meets several criteria at once reports the
        # most favourable one.
        status[rej[dt[rej] < min_step]] = STALLED
        status[acc[n_steps[acc] >= max_steps]] = MAX_STEPS
        status[acc[t[acc] >= t_end]] = HORIZON
        status[acc[grad_norm[acc] <= tol]] = CONVERGED

    return FlowResult(
        z=z,
        loss=loss.detach(),
        grad_norm=grad_norm,
        n_steps=n_steps,
        n_evals=n_evals,
        status=status,
        t=t,
        tol=tol,
    )
