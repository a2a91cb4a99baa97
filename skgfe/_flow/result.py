"""What every flow returns: the codes and per-sample diagnostics."""

from dataclasses import dataclass

import torch

# Status codes, one per sample.
RUNNING, CONVERGED, STALLED, HORIZON, MAX_STEPS, DIVERGED = range(6)
# In float32 a flow can run out of loss resolution with its gradient norm just
# above a tolerance like 1e-4; within this factor that still counts as converged.
STALL_TOL_FACTOR = 10.0
STATUS_NAMES = {
    RUNNING: "running",
    CONVERGED: "converged",
    STALLED: "stalled",
    HORIZON: "horizon",
    MAX_STEPS: "max_steps",
    DIVERGED: "diverged",
}


@dataclass
class FlowResult:
    """Codes found by a flow and per-sample diagnostics (all tensors, one row each).

    ``status`` holds one of the codes above:

    - ``CONVERGED``: the gradient norm of the sample's loss fell to the tolerance;
    - ``STALLED`` (AMD): no step down to the smallest allowed size lowers the loss
      any more, usually because the loss is flat to working precision (float32)
      while the gradient is still a little above the tolerance. Such a sample
      counts as converged when its gradient norm is within ``STALL_TOL_FACTOR``
      times the tolerance, and as not converged otherwise;
    - ``HORIZON``: the flow reached its final time ``t_end``;
    - ``MAX_STEPS``: the flow used up its step budget;
    - ``DIVERGED`` (torchdiffeq solvers): the solver produced non-finite values;
      the code is the last finite state that was checked.

    ``z`` carries an autograd graph when the flow ran in differentiable (adjoint)
    mode; the diagnostics never do. ``t`` is the flow time each sample reached.
    """

    z: torch.Tensor
    loss: torch.Tensor
    grad_norm: torch.Tensor
    n_steps: torch.Tensor
    n_evals: torch.Tensor
    status: torch.Tensor
    t: torch.Tensor
    tol: float

    @property
    def converged(self):
        precise_enough = (self.status == STALLED) & (
            self.grad_norm <= STALL_TOL_FACTOR * self.tol
        )
        return (self.status == CONVERGED) | precise_enough


def keep_better_solves(first, second, rows):
    """``first`` with its ``rows`` replaced by ``second``'s where that ends lower.

    ``second`` solved the samples ``rows`` of ``first`` again, from other
    starts. Per row, the end point of lower (finite) loss is kept with its
    diagnostics; ``n_evals`` counts the evaluations of both solves.
    """
    better = torch.isfinite(second.loss) & ~(second.loss >= first.loss[rows])
    fields = {}
    for name in ("z", "loss", "grad_norm", "n_steps", "status", "t"):
        merged = getattr(first, name).clone()
        chosen = torch.where(
            better.view(-1, *[1] * (merged.dim() - 1)),
            getattr(second, name),
            merged[rows],
        )
        merged[rows] = chosen
        fields[name] = merged
    n_evals = first.n_evals.clone()
    n_evals[rows] += second.n_evals
    return FlowResult(**fields, n_evals=n_evals, tol=first.tol)


def require_finite_start(loss, grad):
    """Raise when the loss or its gradient at the initial codes is not finite."""
    if not (torch.isfinite(loss).all() and torch.isfinite(grad).all()):
        raise FloatingPointError(
            "The reconstruction loss is not finite at the initial code: the decoder "
            "weights or the data contain NaN or infinity."
        )
