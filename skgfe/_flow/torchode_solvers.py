"""Latent flows integrated by torchode's solvers, each sample with its own steps.

torchode (https://github.com/martenlienen/torchode) keeps one time, step size,
controller state and status per row of a batch: its step methods and its
controllers' error norms work row by row, so a sample's steps do not depend on
its batch mates. Its ``AutoDiffAdjoint`` loop, however, stops the whole batch as
soon as one row fails (step budget, non-finite error norm), which would couple
the samples again; this module therefore drives torchode's step method and
step-size controller itself and stops every row on its own.

As in :mod:`.torchdiffeq_solvers`, the flow runs in segments ending at the
geometrically spaced checkpoints ``step_size * CHECK_GROWTH**k`` (and ``t_end``);
each segment starts from the step size its row proposed last. After each segment
the gradient norm of every running sample is checked (one evaluation): samples
at or below ``tol`` stop (converged); samples whose state became non-finite,
whose energy rose above the starting loss, whose error norm became non-finite,
stop at their last good checkpoint as 'diverged'; samples that used up
``max_steps`` accepted steps stop at their last checkpoint ('max_steps'). The
checkpoints do not depend on the data, so the code of a sample equals the code
it gets alone. The flows are not differentiated through (inference only).
"""

from typing import NamedTuple

import torch

from .fields import NESTEROV_EPS
from .result import MAX_STEPS
from .torchdiffeq_solvers import _adaptive_segments, start_flow

# Attempted (accepted or rejected) steps per accepted step allowed in a segment
# before a row counts as out of budget.
MAX_ATTEMPTS_PER_STEP = 10


def _import_torchode():
    try:
        import torchode
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The torchode solvers need the optional dependency torchode: "
            "pip install skgfe[torchode]"
        ) from error
    return torchode


class _Integrator(NamedTuple):
    """torchode's module, and the step method and step-size controller of a flow."""

    torchode: object
    method: object
    controller: object


class _RowField:
    """The flow's right-hand side over a flat state, ``f(t, y)`` with ``t`` per row."""

    def __init__(self, objective, rows, momentum, d):
        self.objective = objective
        self.rows = rows
        self.momentum = momentum
        self.d = d
        self.n_calls = 0

    def __call__(self, t, y):
        self.n_calls += 1
        if not self.momentum:
            return -self.objective(y, self.rows)[1]
        z, m = y[:, : self.d], y[:, self.d :]
        grad = self.objective(z, self.rows)[1]
        friction = 3.0 / (t.to(y.dtype)[:, None] + NESTEROV_EPS)
        return torch.cat([m, -friction * m - grad], dim=1)


def _segment(torchode, method, controller, field, y0, t0, t1, dt0, budget):
    """Integrate every row of ``y0`` from ``t0`` to ``t1`` on its own.

    Returns the end states, the step size each row proposed last, the accepted
    steps and the field evaluations per row, and two per-row flags: diverged
    (non-finite error norm) and exhausted (more steps than ``budget`` allows).
    """
    n = y0.shape[0]
    device = y0.device
    t_start = torch.full((n,), t0, dtype=torch.float64, device=device)
    t_end = torch.full((n,), t1, dtype=torch.float64, device=device)
    problem = torchode.InitialValueProblem(y0, t_start, t_end)
    term = torchode.ODETerm(field, with_stats=False)
    stats = {}
    evals_before = field.n_calls
    dt, controller_state, f0 = controller.init(
        term, problem, method.convergence_order(), dt0, stats=stats, args=None
    )
    method_state = method.init(term, problem, f0, stats=stats, args=None)
    n_evals = torch.full((n,), field.n_calls - evals_before, device=device)
    dt = torch.minimum(dt, t_end - t_start)
    t, y = t_start, y0
    dt_proposed = dt.clone()
    running = torch.ones(n, dtype=torch.bool, device=device)
    diverged = torch.zeros(n, dtype=torch.bool, device=device)
    exhausted = torch.zeros(n, dtype=torch.bool, device=device)
    accepted = torch.zeros(n, dtype=torch.long, device=device)
    attempts = torch.zeros(n, dtype=torch.long, device=device)
    while running.any():
        before = field.n_calls
        step_result, _, method_next, _ = method.step(
            term, running, y, t, dt, method_state, stats=stats, args=None
        )
        accept, dt_next, controller_next, status = controller.adapt_step_size(
            t, dt, y, step_result, controller_state, stats
        )
        n_evals += running * (field.n_calls - before)
        update = accept & running
        # Land exactly on the segment's end (t + (t_end - t) may round below it).
        t = torch.where(update, torch.where(dt >= t_end - t, t_end, t + dt), t)
        y = torch.where(update[:, None], step_result.y, y)
        method_state = method.merge_states(update, method_next, method_state)
        accepted += update
        attempts += running
        diverged |= running & (status != 0)
        exhausted |= (
            running
            & ~diverged
            & ((accepted > budget) | (attempts > MAX_ATTEMPTS_PER_STEP * (budget + 1)))
        )
        running = running & ~diverged & ~exhausted & (t < t_end)
        dt_proposed = torch.where(running, dt_next, dt_proposed)
        dt = torch.where(running, dt_next, dt)
        dt = torch.minimum(dt, t_end - t)
        controller_state = controller.merge_states(
            running, controller_next, controller_state
        )
    return y, dt_proposed, accepted, n_evals, diverged, exhausted


def torchode_flow(
    field,
    z0,
    *,
    method="Dopri5",
    t_end=1e4,
    step_size=1.0,
    max_step_size=10.0,
    rtol=1e-4,
    atol=1e-6,
    tol=1e-4,
    max_steps=1000,
):
    """Integrate ``field`` from ``z0`` with a torchode solver, per-sample steps.

    Parameters are those of :func:`.torchdiffeq_solvers.odeint_flow` (without
    ``adaptive`` and ``adjoint``); ``method`` is the name of one of torchode's
    adaptive step methods ('Dopri5', 'Tsit5'). A sample's code, status and
    statistics do not depend on the other samples of the batch.

    Returns
    -------
    FlowResult
    """
    torchode = _import_torchode()
    objective, state = start_flow(field, z0, tol)
    integrator = _Integrator(
        torchode,
        getattr(torchode, method)(term=None),
        torchode.IntegralController(
            atol=atol, rtol=rtol, term=None, dt_max=max_step_size
        ),
    )
    # The step size each row proposed last (NaN before its first segment).
    dt_last = torch.full((z0.shape[0],), float("nan"), dtype=torch.float64)
    dt_last = dt_last.to(z0.device)
    segments, end_status = _adaptive_segments(
        t_end, step_size, max_step_size, dense=False
    )
    with torch.no_grad():
        for times in segments:
            rows = state.running_rows()
            if rows.numel() == 0:
                break
            _checkpoint_segment(
                integrator, objective, state, rows, times, dt_last, max_steps
            )
    state.n_steps.clamp_(max=max_steps)
    return state.result(end_status)


def _checkpoint_segment(integrator, objective, state, rows, times, dt_last, max_steps):
    """Integrate the samples ``rows`` over one segment and check where they are."""
    momentum, d = state.m is not None, state.z.shape[1]
    y0 = torch.cat([state.z[rows], state.m[rows]], dim=1) if momentum else state.z[rows]
    dt0 = dt_last[rows]
    # Every row starts the same way (torchode's initial step guess, or its own
    # last proposal), so that the first segment does not mix rows.
    dt0 = None if torch.isnan(dt0).all() else dt0
    y1, dt_next, accepted, evals, diverged, exhausted = _segment(
        *integrator,
        _RowField(objective, rows, momentum, d),
        y0,
        times[0],
        times[-1],
        dt0,
        max_steps - state.n_steps[rows],
    )
    state.n_evals[rows] += evals + 1  # + the convergence check
    state.n_steps[rows] += accepted
    dt_last[rows] = dt_next
    z1, m1 = (y1[:, :d], y1[:, d:]) if momentum else (y1, None)
    loss1, grad1 = objective(z1, rows)
    state.checkpoint(rows, times[-1], z1, m1, loss1, grad1, ok=~diverged & ~exhausted)
    state.status[rows[exhausted]] = MAX_STEPS
