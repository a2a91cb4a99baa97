"""Latent flows integrated by torchdiffeq's solvers, with per-sample stopping.

The flow runs in segments. After each segment the gradient norm of every sample
that is still running is checked (one decoder evaluation, counted); samples at or
below the tolerance stop there and drop out of the later segments, samples whose
state became non-finite, or whose energy rose above the starting loss (which the
exact flows never do: the solver is unstable), stop at their last good checkpoint
with the status 'diverged'. The code of a sample
is its state at the checkpoint where it stopped.

- Fixed-grid solvers ('euler', 'midpoint', 'heun2', 'heun3', 'rk4') step on the grid
  ``0, h, 2h, ...`` (``h = step_size``) up to ``t_end`` or ``max_steps`` steps,
  whichever comes first, and check every :data:`CHECK_EVERY` steps. The grid and the
  checkpoints do not depend on the data, and each row of the state is integrated
  on its own, so a code does not depend on its batch mates.
- Adaptive solvers ('dopri5', 'dopri8', 'bosh3', 'fehlberg2', 'adaptive_heun')
  control the error with ``rtol``/``atol`` and check at geometrically spaced times
  ``step_size * CHECK_GROWTH**k`` (and ``t_end``); each segment starts with the last
  accepted step of the previous one. torchdiffeq chooses ONE step size for the
  whole batch from an error norm over all its rows, so with these solvers a code
  depends on its batch mates, within the solver tolerance.

With ``adjoint=True`` each segment is integrated by ``torchdiffeq.odeint_adjoint``
with the decoder's parameters as adjoint parameters, and the returned codes carry a
graph. The state is stored at every grid point (fixed grid) or every
``max_step_size`` time units (adaptive): the backward pass re-integrates the state
backwards in time, which is unstable for a contracting flow, so it must restart
from a stored state over short intervals.
"""

import math

import torch
from torchdiffeq import odeint, odeint_adjoint

from .fields import NesterovField, StepBudgetExceeded
from .objective import ReconstructionObjective
from .result import (
    CONVERGED,
    DIVERGED,
    HORIZON,
    MAX_STEPS,
    RUNNING,
    FlowResult,
    require_finite_start,
)

FIXED_GRID_SOLVERS = ("euler", "midpoint", "heun2", "heun3", "rk4")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
# Fixed-grid steps between two convergence checks.
CHECK_EVERY = 10
# Relative excess of a state's energy over the starting loss that marks it as
# diverged (the exact flows never exceed it; rounding and truncation error can).
ENERGY_SLACK = 1e-3
# Ratio of the times of two consecutive convergence checks of adaptive solvers.
CHECK_GROWTH = 1.5


def _fixed_grid_segments(t_end, step_size, max_steps):
    """Grid points of each segment, and the status of a flow that runs to the end."""
    n_to_end = max(1, math.ceil(round(t_end / step_size, 9)))
    n_total = min(n_to_end, max_steps)
    times = [min(j * step_size, t_end) for j in range(n_total + 1)]
    segments = [
        times[begin : begin + CHECK_EVERY + 1]
        for begin in range(0, n_total, CHECK_EVERY)
    ]
    return segments, HORIZON if n_total == n_to_end else MAX_STEPS


def _adaptive_segments(t_end, step_size, max_step_size, dense):
    """Checkpoint intervals; ``dense`` adds points every ``max_step_size``."""
    checkpoints = [0.0]
    while checkpoints[-1] < t_end:
        last = checkpoints[-1]
        t_next = step_size if last == 0 else last * CHECK_GROWTH
        checkpoints.append(min(t_next, t_end))
    segments = []
    for start, end in zip(checkpoints[:-1], checkpoints[1:]):
        n_sub = max(1, math.ceil((end - start) / max_step_size)) if dense else 1
        segments.append([start + (end - start) * k / n_sub for k in range(n_sub)])
        segments[-1].append(end)
    return segments, HORIZON


def _integrate(field, y0, times, *, method, adaptive, adjoint, options, rtol, atol):
    """State at ``times[-1]`` of ``field`` started from ``y0`` at ``times[0]``."""
    grid = torch.tensor(times, dtype=torch.float64, device=field.X.device)
    options = dict(options)
    if adaptive or adjoint:
        t = grid
    else:
        # Only the endpoint is stored; the solver still steps on the full grid.
        t = grid[[0, -1]]
        options["grid_constructor"] = lambda func, y0, t: grid
    kwargs = dict(method=method, options=options)
    if adaptive:
        kwargs.update(rtol=rtol, atol=atol)
    if adjoint:
        kwargs.update(
            adjoint_params=tuple(field.decoder.parameters()),
            adjoint_options={k: v for k, v in options.items() if k != "first_step"},
        )
        solution = odeint_adjoint(field, y0, t, **kwargs)
    else:
        solution = odeint(field, y0, t, **kwargs)
    if isinstance(solution, tuple):
        return tuple(s[-1] for s in solution)
    return solution[-1]


def start_flow(field, z0, tol):
    """The state every integrated flow starts from.

    Returns the objective that checks convergence, the codes (a copy of ``z0``),
    the zero velocity of the second-order flow (None for the gradient flow), the
    losses and gradient norms at ``z0`` (which must be finite), and per-sample
    flow times, step and evaluation counters and statuses (CONVERGED where
    ``z0`` is already stationary).
    """
    n_samples, device = z0.shape[0], z0.device
    objective = ReconstructionObjective(field.decoder, field.loss, field.X)
    z = z0.detach().clone()
    m = torch.zeros_like(z) if isinstance(field, NesterovField) else None
    loss, grad = objective(z)
    require_finite_start(loss, grad)
    grad_norm = torch.linalg.vector_norm(grad, dim=1)
    t_reached = torch.zeros(n_samples, dtype=z.dtype, device=device)
    n_steps = torch.zeros(n_samples, dtype=torch.long, device=device)
    n_evals = torch.ones(n_samples, dtype=torch.long, device=device)
    status = torch.full((n_samples,), RUNNING, dtype=torch.long, device=device)
    status[grad_norm <= tol] = CONVERGED
    return objective, z, m, loss, grad_norm, t_reached, n_steps, n_evals, status


def stable_checkpoint(z1, m1, loss1, grad1, start_loss):
    """Which rows of an integrated checkpoint are finite and physically possible.

    Neither flow can raise its energy above the starting loss (the gradient
    flow lowers the loss, the second-order flow from m = 0 the energy
    ``l + |m|^2 / 2``), so a state above it shows a numerically unstable solver.
    ``m1`` is None for the gradient flow.
    """
    energy = loss1
    if m1 is not None:
        energy = energy + 0.5 * m1.detach().pow(2).sum(dim=1)
    return (
        torch.isfinite(z1.detach()).all(dim=1)
        & torch.isfinite(grad1).all(dim=1)
        & (energy <= start_loss * (1 + ENERGY_SLACK))
    )


def odeint_flow(
    field,
    z0,
    *,
    method="rk4",
    t_end=1e4,
    step_size=1.0,
    max_step_size=10.0,
    rtol=1e-4,
    atol=1e-6,
    tol=1e-4,
    max_steps=1000,
    adjoint=False,
):
    """Integrate ``field`` from ``z0`` with a torchdiffeq solver, per-sample stops.

    Parameters
    ----------
    field : GradientField or NesterovField
        The vector field, over all samples; a :class:`NesterovField` integrates the
        state ``(z, m)`` from ``m = 0``.
    z0 : torch.Tensor of shape (n_samples, d)
        Initial codes.
    method : str
        A name of :data:`FIXED_GRID_SOLVERS` or :data:`ADAPTIVE_SOLVERS`.
    t_end : float
        Integration horizon.
    step_size : float
        Grid step of fixed-grid solvers; first checkpoint of adaptive ones.
    max_step_size : float
        Largest step of adaptive solvers.
    rtol, atol : float
        Tolerances of adaptive solvers.
    tol : float
        A sample stops once the norm of its loss gradient is ``<= tol`` at a check.
    max_steps : int
        Largest number of steps per sample: grid steps (fixed grid) or accepted
        steps (adaptive; a flow that exceeds it keeps its last checkpoint).
    adjoint : bool
        Integrate with ``odeint_adjoint`` so that the codes carry a graph to the
        decoder's parameters.

    Returns
    -------
    FlowResult
    """
    adaptive = method in ADAPTIVE_SOLVERS
    if not adaptive and method not in FIXED_GRID_SOLVERS:
        raise ValueError(f"Unknown torchdiffeq solver {method!r}.")
    momentum = isinstance(field, NesterovField)
    (check, z, m, loss, grad_norm, t_reached, n_steps, n_evals, status) = start_flow(
        field, z0, tol
    )
    start_loss = loss.clone()

    if adaptive:
        segments, end_status = _adaptive_segments(
            t_end, step_size, max_step_size, dense=adjoint
        )
        options = {"max_step": max_step_size}
    else:
        segments, end_status = _fixed_grid_segments(t_end, step_size, max_steps)
        options = {}
    accepted = 0  # adaptive: steps shared by every sample still running
    for times in segments:
        rows = torch.nonzero(status == RUNNING).squeeze(1)
        if rows.numel() == 0:
            break
        if adaptive and accepted >= max_steps:
            status[rows] = MAX_STEPS
            break
        segment_field = field.rows(field.X[rows])
        y0 = (z[rows], m[rows]) if momentum else z[rows]
        if adaptive:
            # Set on adaptive fields only: fixed-grid solvers warn about it.
            segment_field.callback_accept_step = segment_field.count_accepted_step
            segment_field.max_accepted = max_steps - accepted
        try:
            y1 = _integrate(
                segment_field,
                y0,
                times,
                method=method,
                adaptive=adaptive,
                adjoint=adjoint,
                options=options,
                rtol=rtol,
                atol=atol,
            )
        except StepBudgetExceeded:
            n_evals[rows] += segment_field.n_calls
            status[rows] = MAX_STEPS  # the codes stay at the last checkpoint
            break
        except AssertionError as error:
            # Adaptive solvers assert on non-finite states and on step-size
            # underflow; anything else is a genuine error.
            if not any(s in str(error) for s in ("non-finite", "underflow")):
                raise
            n_evals[rows] += segment_field.n_calls
            status[rows] = DIVERGED
            break
        n_evals[rows] += segment_field.n_calls + 1  # + the convergence check
        if adaptive:
            accepted += segment_field.n_accepted
            n_steps[rows] += segment_field.n_accepted
            if segment_field.last_dt is not None:
                options["first_step"] = segment_field.last_dt
        else:
            n_steps[rows] += len(times) - 1
        z1, m1 = y1 if momentum else (y1, None)
        loss1, grad1 = check(z1.detach(), rows)
        finite = stable_checkpoint(z1, m1, loss1, grad1, start_loss[rows])
        good = rows[finite]
        z = z.index_copy(0, good, z1[finite])
        if momentum:
            m = m.index_copy(0, good, m1[finite])
        loss[good] = loss1[finite]
        grad_norm[good] = torch.linalg.vector_norm(grad1[finite], dim=1)
        t_reached[good] = times[-1]
        status[rows[~finite]] = DIVERGED
        status[good[grad_norm[good] <= tol]] = CONVERGED
    status[status == RUNNING] = end_status

    return FlowResult(
        z=z,
        loss=loss,
        grad_norm=grad_norm,
        n_steps=n_steps,
        n_evals=n_evals,
        status=status,
        t=t_reached,
        tol=tol,
    )
