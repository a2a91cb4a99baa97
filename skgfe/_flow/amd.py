"""AMD ("adaptive minimise distance"): explicit Euler with a per-sample line search.

Integrates the gradient flow ``dz/dt = -grad_z l(z)`` of each sample's loss with an
explicit Euler step whose size is chosen to make the loss go down (an Armijo-like test)
rather than to control truncation error; see ``METHOD.md`` section 3 in the project
documentation. Unlike the research code, every sample keeps its own step size, its own
accept/reject decision and its own stopping flag, and converged samples drop out of the
computation, so a sample's code never depends on the other samples of its batch.
"""

from dataclasses import dataclass

import torch

# Status codes, one per sample.
RUNNING, CONVERGED, STALLED, HORIZON, MAX_STEPS = range(5)
# In float32 a flow can run out of loss resolution with its gradient norm just
# above a tolerance like 1e-4; within this factor that still counts as converged.
STALL_TOL_FACTOR = 10.0
STATUS_NAMES = {
    RUNNING: "running",
    CONVERGED: "converged",
    STALLED: "stalled",
    HORIZON: "horizon",
    MAX_STEPS: "max_steps",
}


@dataclass
class FlowResult:
    """Codes found by a flow and per-sample diagnostics (all tensors, one row each).

    ``status`` holds one of the codes above. ``STALLED`` means that no step down to
    the smallest allowed size (``shrink**max_halvings``) lowers the loss any more:
    usually the loss is flat to working precision (float32) while the gradient is
    still a little above the tolerance. Such a sample counts as converged when its
    gradient norm is within ``STALL_TOL_FACTOR`` times the tolerance (converged to
    working precision), and as not converged otherwise.
    """

    z: torch.Tensor
    loss: torch.Tensor
    grad_norm: torch.Tensor
    n_steps: torch.Tensor
    n_evals: torch.Tensor
    status: torch.Tensor
    tol: float

    @property
    def converged(self):
        precise_enough = (self.status == STALLED) & (
            self.grad_norm <= STALL_TOL_FACTOR * self.tol
        )
        return (self.status == CONVERGED) | precise_enough


def amd_flow(
    objective,
    z0,
    *,
    t_end=1e4,
    step_size=1.0,
    max_step_size=10.0,
    tol=1e-4,
    max_steps=1000,
    shrink=0.5,
    grow=1.1,
    max_halvings=20,
    sigma=1e-5,
):
    """Integrate the gradient flow of every sample with per-sample AMD steps.

    Parameters
    ----------
    objective : callable
        ``objective(z, rows)`` returns the per-sample losses ``(m,)`` and gradients
        ``(m, d)`` at codes ``z`` of shape ``(m, d)`` for the sample indices ``rows``.
    z0 : torch.Tensor of shape (n_samples, d)
        Initial codes.
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

    Returns
    -------
    FlowResult
    """
    n_samples = z0.shape[0]
    device = z0.device
    z = z0.detach().clone()
    all_rows = torch.arange(n_samples, device=device)
    loss, grad = objective(z, all_rows)
    if not (torch.isfinite(loss).all() and torch.isfinite(grad).all()):
        raise FloatingPointError(
            "The reconstruction loss is not finite at the initial code: the decoder "
            "weights or the data contain NaN or infinity."
        )
    grad_norm = torch.linalg.vector_norm(grad, dim=1)
    t = torch.zeros(n_samples, dtype=z.dtype, device=device)
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
        z_try = z[rows] - dt_rows[:, None] * grad[rows]
        loss_try, grad_try = objective(z_try, rows)
        n_evals[rows] += 1
        decrease = loss[rows] - loss_try
        sufficient = sigma * dt_rows * max_step_size * grad_try.pow(2).sum(dim=1)
        # A step into NaN or infinity is a rejected step, never an accepted one.
        accept = (
            (decrease >= sufficient)
            & torch.isfinite(loss_try)
            & torch.isfinite(grad_try).all(dim=1)
        )

        acc, rej = rows[accept], rows[~accept]
        z[acc] = z_try[accept]
        loss[acc] = loss_try[accept]
        grad[acc] = grad_try[accept]
        grad_norm[acc] = torch.linalg.vector_norm(grad_try[accept], dim=1)
        t[acc] += dt[acc]
        n_steps[acc] += 1
        dt[acc] = torch.minimum(
            torch.clamp(grow * dt[acc], min=step_size).clamp(max=max_step_size),
            t_end - t[acc],
        )
        dt[rej] *= shrink

        # Order matters: a sample that meets several criteria at once reports the
        # most favourable one.
        status[rej[dt[rej] < min_step]] = STALLED
        status[acc[n_steps[acc] >= max_steps]] = MAX_STEPS
        status[acc[t[acc] >= t_end]] = HORIZON
        status[acc[grad_norm[acc] <= tol]] = CONVERGED

    return FlowResult(
        z=z,
        loss=loss,
        grad_norm=grad_norm,
        n_steps=n_steps,
        n_evals=n_evals,
        status=status,
        tol=tol,
    )
