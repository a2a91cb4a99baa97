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
from .result import DIVERGED, HORIZON, MAX_STEPS
from .state import FlowState

# Fixed-grid steps between two convergence checks.
CHECK_EVERY = 10
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
    """The objective that checks convergence, and the :class:`FlowState` at ``z0``.

    The state starts from a copy of ``z0`` (and zero velocity for a
    :class:`NesterovField`), with the losses and gradient norms at ``z0``,
    which must be finite.
    """
    objective = ReconstructionObjective(field.decoder, field.loss, field.X)
    z = z0.detach().clone()
    loss, grad = objective(z)
    momentum = isinstance(field, NesterovField)
    return objective, FlowState.start(z, loss, grad, tol=tol, momentum=momentum)


def odeint_flow(
    field,
    z0,
    *,
    method="rk4",
    adaptive=False,
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
        torchdiffeq's name of the method.
    adaptive : bool
        Whether ``method`` is one of torchdiffeq's adaptive solvers (as the
        solver table :data:`~skgfe._flow.dispatch.SOLVERS` says), not a
        fixed-grid one.
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
    check, state = start_flow(field, z0, tol)
    if adaptive:
        segments, end_status = _adaptive_segments(
            t_end, step_size, max_step_size, dense=adjoint
        )
        options = {"max_step": max_step_size}
    else:
        segments, end_status = _fixed_grid_segments(t_end, step_size, max_steps)
        options = {}
    solver = dict(method=method, adaptive=adaptive, adjoint=adjoint, options=options)
    solver.update(rtol=rtol, atol=atol)
    accepted = 0  # adaptive: steps shared by every sample still running
    for times in segments:
        rows = state.running_rows()
        if rows.numel() == 0:
            break
        if adaptive and accepted >= max_steps:
            state.status[rows] = MAX_STEPS
            break
        segment_field = _segment_field(field, rows, adaptive, max_steps - accepted)
        y1 = _integrate_segment(segment_field, state, rows, times, solver)
        if y1 is None:
            break
        if adaptive:
            accepted += segment_field.n_accepted
            state.n_steps[rows] += segment_field.n_accepted
            if segment_field.last_dt is not None:
                options["first_step"] = segment_field.last_dt
        else:
            state.n_steps[rows] += len(times) - 1
        z1, m1 = y1 if state.m is not None else (y1, None)
        loss1, grad1 = check(z1.detach(), rows)
        state.checkpoint(rows, times[-1], z1, m1, loss1, grad1)
    return state.result(end_status)


def _segment_field(field, rows, adaptive, max_accepted):
    """The field of the samples ``rows`` for one segment of the flow."""
    segment_field = field.rows(field.X[rows])
    if adaptive:
        # Set on adaptive fields only: fixed-grid solvers warn about it.
        segment_field.callback_accept_step = segment_field.count_accepted_step
        segment_field.max_accepted = max_accepted
    return segment_field


def _integrate_segment(segment_field, state, rows, times, solver):
    """The state of the samples ``rows`` at the segment's end, or None.

    None when the segment stopped them all: a step budget used up (MAX_STEPS;
    the codes stay at the last checkpoint) or an adaptive solver's step size
    underflowing or its state turning non-finite (DIVERGED). Counts the
    evaluations, and the convergence check that follows a segment that ends.
    """
    y0 = (state.z[rows], state.m[rows]) if state.m is not None else state.z[rows]
    try:
        y1 = _integrate(segment_field, y0, times, **solver)
    except StepBudgetExceeded:
        stopped = MAX_STEPS
    except AssertionError as error:
        # Adaptive solvers assert on non-finite states and on step-size
        # underflow; anything else is a genuine error.
        if not any(s in str(error) for s in ("non-finite", "underflow")):
            raise
        stopped = DIVERGED
    else:
        state.n_evals[rows] += segment_field.n_calls + 1  # + the convergence check
        return y1
    state.n_evals[rows] += segment_field.n_calls
    state.status[rows] = stopped
    return None
