"""The per-sample state of a flow while it runs, from its start to its result."""

from dataclasses import dataclass

import torch

from .result import CONVERGED, DIVERGED, RUNNING, FlowResult, require_finite_start

# Relative excess of a state's energy over the starting loss that marks it as
# diverged (the exact flows never exceed it; rounding and truncation error can).
ENERGY_SLACK = 1e-3


@dataclass
class FlowState:
    """Codes and bookkeeping of every sample of a running flow, one row each.

    The solvers update the tensors as they go (in place, or out of place where
    ``z`` or ``m`` carries an autograd graph) and :meth:`result` closes them into
    a :class:`FlowResult`.

    Attributes
    ----------
    z : torch.Tensor of shape (n_samples, d)
        The codes.
    m : torch.Tensor of shape (n_samples, d) or None
        The velocity of the second-order flow; None for the gradient flow.
    loss, grad_norm : torch.Tensor of shape (n_samples,)
        The loss at ``z`` and the norm of its gradient.
    t : torch.Tensor of shape (n_samples,)
        The flow time each sample reached.
    n_steps, n_evals, status : torch.Tensor of shape (n_samples,)
        Steps and evaluations so far, and the status codes of :mod:`.result`.
    tol : float
        The gradient norm at which a sample has converged.
    start_loss : torch.Tensor of shape (n_samples,) or None
        The loss at the initial codes, the bound of :meth:`stable`.
    """

    z: torch.Tensor
    m: torch.Tensor | None
    loss: torch.Tensor
    grad_norm: torch.Tensor
    t: torch.Tensor
    n_steps: torch.Tensor
    n_evals: torch.Tensor
    status: torch.Tensor
    tol: float
    start_loss: torch.Tensor | None = None

    @classmethod
    def start(cls, z, loss, grad, *, tol, momentum=False):
        """The state at the codes ``z``, where the loss and gradient were evaluated.

        ``loss`` and ``grad`` (one evaluation, counted) must be finite; samples
        whose gradient norm is already at most ``tol`` start CONVERGED, the
        others RUNNING, at flow time 0 and from zero velocity when ``momentum``.
        """
        require_finite_start(loss, grad)
        n_samples, device = z.shape[0], z.device
        grad_norm = torch.linalg.vector_norm(grad.detach(), dim=1)
        status = torch.full((n_samples,), RUNNING, dtype=torch.long, device=device)
        status[grad_norm <= tol] = CONVERGED
        return cls(
            z=z,
            m=torch.zeros_like(z) if momentum else None,
            loss=loss,
            grad_norm=grad_norm,
            t=torch.zeros(n_samples, dtype=z.dtype, device=device),
            n_steps=torch.zeros(n_samples, dtype=torch.long, device=device),
            n_evals=torch.ones(n_samples, dtype=torch.long, device=device),
            status=status,
            tol=tol,
            start_loss=loss.detach().clone(),
        )

    @classmethod
    def waiting(cls, z0, *, tol):
        """The state of samples not evaluated yet: codes ``z0``, NaN losses and times.

        For solvers that admit samples later (or integrate no flow time).
        """
        n_samples, device, dtype = z0.shape[0], z0.device, z0.dtype

        def nan():
            return torch.full((n_samples,), float("nan"), dtype=dtype, device=device)

        return cls(
            z=z0.detach().clone(),
            m=None,
            loss=nan(),
            grad_norm=nan(),
            t=nan(),
            n_steps=torch.zeros(n_samples, dtype=torch.long, device=device),
            n_evals=torch.zeros(n_samples, dtype=torch.long, device=device),
            status=torch.full((n_samples,), RUNNING, dtype=torch.long, device=device),
            tol=tol,
        )

    def running_rows(self):
        """Indices of the samples still RUNNING."""
        return torch.nonzero(self.status == RUNNING).squeeze(1)

    def stable(self, rows, z1, m1, loss1, grad1):
        """Which rows of an integrated checkpoint are finite and physically possible.

        Neither flow can raise its energy above the starting loss (the gradient
        flow lowers the loss, the second-order flow from m = 0 the energy
        ``l + |m|^2 / 2``), so a state above it shows a numerically unstable
        solver. ``m1`` is None for the gradient flow.
        """
        energy = loss1
        if m1 is not None:
            energy = energy + 0.5 * m1.detach().pow(2).sum(dim=1)
        return (
            torch.isfinite(z1.detach()).all(dim=1)
            & torch.isfinite(grad1).all(dim=1)
            & (energy <= self.start_loss[rows] * (1 + ENERGY_SLACK))
        )

    def checkpoint(self, rows, t, z1, m1, loss1, grad1, ok=None):
        """Move the samples ``rows`` to the checkpoint they were integrated to.

        Rows that are :meth:`stable` (and ``ok``, when given) take the state
        ``(z1, m1)`` at time ``t`` and converge where its gradient norm is at
        most ``tol``; the others keep their last good state, DIVERGED.
        """
        good_rows = self.stable(rows, z1, m1, loss1, grad1)
        if ok is not None:
            good_rows = ok & good_rows
        good = rows[good_rows]
        # Out of place: z and m carry the adjoint's graph.
        self.z = self.z.index_copy(0, good, z1[good_rows])
        if self.m is not None:
            self.m = self.m.index_copy(0, good, m1[good_rows])
        self.loss[good] = loss1[good_rows]
        self.grad_norm[good] = torch.linalg.vector_norm(grad1[good_rows], dim=1)
        self.t[good] = t
        self.status[rows[~good_rows]] = DIVERGED
        self.status[good[self.grad_norm[good] <= self.tol]] = CONVERGED

    def result(self, end_status=None):
        """The :class:`FlowResult`; samples still RUNNING get ``end_status``."""
        if end_status is not None:
            self.status[self.status == RUNNING] = end_status
        return FlowResult(
            z=self.z,
            loss=self.loss.detach(),
            grad_norm=self.grad_norm,
            n_steps=self.n_steps,
            n_evals=self.n_evals,
            status=self.status,
            t=self.t,
            tol=self.tol,
        )
