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

from dataclasses import dataclass

import torch

from .fields import NESTEROV_EPS
from .result import (
    CONVERGED,
    HORIZON,
    MAX_STEPS,
    STALL_TOL_FACTOR,
    STALLED,
    STATUS_NAMES,
    FlowResult,
)
from .state import FlowState

__all__ = ["STALL_TOL_FACTOR", "STATUS_NAMES", "FlowResult", "amd_flow"]


def _friction(s, dt):
    """Exact decay of ``dm/dt = -3/(s + eps) m`` over ``[s, s + dt]``."""
    return ((s + NESTEROV_EPS) / (s + dt + NESTEROV_EPS)) ** 3


@dataclass
class _Steps:
    """AMD's own per-sample state besides the flow's: the gradient at the codes,
    the next step size, and the time since the momentum last restarted."""

    grad: torch.Tensor
    dt: torch.Tensor
    since_restart: torch.Tensor


@dataclass(frozen=True)
class _Rule:
    """The settings of :func:`amd_flow` that choose the steps and stop the flows."""

    t_end: float
    step_size: float
    max_step_size: float
    max_steps: int
    shrink: float
    grow: float
    min_step: float
    sigma: float


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
    z = z0.detach().clone()
    loss, grad = objective(z, torch.arange(z.shape[0], device=z.device))
    state = FlowState.start(z, loss, grad, tol=tol, momentum=momentum)
    steps = _Steps(
        grad=grad,
        dt=torch.full_like(state.t, step_size),
        since_restart=torch.zeros_like(state.t),
    )
    rule = _Rule(
        t_end=t_end,
        step_size=step_size,
        max_step_size=max_step_size,
        max_steps=max_steps,
        shrink=shrink,
        grow=grow,
        # Absolute, as in the research code: a huge initial step may take many
        # halvings before it first lowers the loss, and must not stall for that.
        min_step=shrink**max_halvings,
        sigma=sigma,
    )
    while (rows := state.running_rows()).numel():
        _step(objective, state, steps, rows, rule, differentiable)
    return state.result()


def _step(objective, state, steps, rows, rule, differentiable):
    """Try one step of every sample ``rows``; move those whose loss falls enough."""
    z_try, m_try = _trial(state, steps, rows)
    loss_try, grad_try = objective(z_try, rows)
    state.n_evals[rows] += 1
    with torch.no_grad():
        decrease = state.loss[rows] - loss_try
        sufficient = rule.sigma * steps.dt[rows] * rule.max_step_size
        sufficient = sufficient * grad_try.pow(2).sum(dim=1)
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
    _move(state, steps, acc, z_acc, loss_acc, grad_acc)
    _adapt(state, steps, acc, rej, None if m_try is None else m_try[accept], rule)
    # Order matters: a sample that meets several criteria at once reports the
    # most favourable one.
    state.status[rej[steps.dt[rej] < rule.min_step]] = STALLED
    state.status[acc[state.n_steps[acc] >= rule.max_steps]] = MAX_STEPS
    state.status[acc[state.t[acc] >= rule.t_end]] = HORIZON
    state.status[acc[state.grad_norm[acc] <= state.tol]] = CONVERGED


def _trial(state, steps, rows):
    """The trial codes of the samples ``rows`` (and their momentum, or None)."""
    dt = steps.dt[rows]
    step = dt[:, None]
    if state.m is None:
        return state.z[rows] - step * steps.grad[rows], None
    m_try = _friction(steps.since_restart[rows], dt)[:, None] * state.m[rows]
    m_try = m_try - step * steps.grad[rows]
    return state.z[rows] + step * m_try, m_try


def _move(state, steps, acc, z_acc, loss_acc, grad_acc):
    """Advance the accepted samples ``acc`` to their trial codes."""
    # Out of place: in differentiable mode these tensors carry a graph.
    state.z = state.z.index_copy(0, acc, z_acc)
    state.loss = state.loss.index_copy(0, acc, loss_acc)
    steps.grad = steps.grad.index_copy(0, acc, grad_acc)
    state.grad_norm[acc] = torch.linalg.vector_norm(grad_acc.detach(), dim=1)
    state.t[acc] += steps.dt[acc]
    state.n_steps[acc] += 1


def _adapt(state, steps, acc, rej, m_acc, rule):
    """Adapt the step sizes (and the momentum) after an accept/reject decision.

    A rejected trial with momentum restarts it and keeps the step; one without
    momentum (a plain gradient step) shrinks the step. An accepted one keeps its
    momentum ``m_acc`` and grows the step, up to the horizon.
    """
    if state.m is not None:
        state.m = state.m.index_copy(0, acc, m_acc)
        steps.since_restart[acc] += steps.dt[acc]
        had_momentum = steps.since_restart[rej] > 0
        state.m = state.m.index_fill(0, rej[had_momentum], 0.0)
        steps.since_restart[rej] = 0.0
        steps.dt[rej[~had_momentum]] *= rule.shrink
    else:
        steps.dt[rej] *= rule.shrink
    grown = torch.clamp(rule.grow * steps.dt[acc], min=rule.step_size)
    steps.dt[acc] = torch.minimum(
        grown.clamp(max=rule.max_step_size), rule.t_end - state.t[acc]
    )
