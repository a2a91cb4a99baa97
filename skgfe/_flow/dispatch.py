"""One entry point for every flow x solver combination, and the table of solvers.

As torchdiffeq's ``SOLVERS`` dict, :data:`SOLVERS` maps each solver's name to how
it runs; it also says what the solver can do, and :func:`run_flow`, the
estimator's parameter checks and the convergence diagnostics ask it rather than
test the name.
"""

from collections.abc import Callable
from dataclasses import dataclass

from .amd import amd_flow
from .fields import GradientField, NesterovField
from .lm import lm_solve
from .objective import ReconstructionObjective
from .torchdiffeq_solvers import odeint_flow
from .torchode_solvers import torchode_flow

FLOWS = {"gradient": GradientField, "nesterov": NesterovField}
# Most rows 'lm' iterates at once (each carries a Jacobian of n_components x
# n_features while it is evaluated).
LM_CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Solver:
    """An entry of the solver table: how a solver runs, and what it can do.

    Attributes
    ----------
    run : callable
        ``run(solver, decoder, loss, X, z0, *, flow, differentiable, **settings)``
        returns the :class:`FlowResult`; ``solver`` is this entry and
        ``settings`` are the keyword arguments of :func:`run_flow`.
    differentiable : bool
        Its codes can carry a graph to the decoder's parameters
        (``training='adjoint'``).
    adaptive : bool
        It chooses its steps by error control, with ``rtol`` and ``atol``.
    batch_invariant : bool
        A sample's code does not depend on the other samples of its batch.
    integrates : bool, default=True
        It integrates the flow; False for a solver of the flow's end point.
    resumable : bool, default=False
        It honours ``max_evals``, and a solve it left inexact resumes from the
        codes it reached: training can warm-start its codes (``warm_codes``).
    method : str or None, default=None
        The backend's name of the method (torchdiffeq's method, torchode's step
        method); None for skgfe's own solvers.
    """

    run: Callable
    differentiable: bool
    adaptive: bool
    batch_invariant: bool
    integrates: bool = True
    resumable: bool = False
    method: str | None = None


def _run_lm(
    solver, decoder, loss, X, z0, *, tol, max_steps, max_evals, prior, max_rows, **_
):
    return lm_solve(
        ReconstructionObjective(decoder, loss, X, prior=prior),
        z0,
        tol=tol,
        max_steps=max_steps,
        max_evals=max_evals,
        max_rows=LM_CHUNK_ROWS if max_rows is None else max_rows,
        # A capped, warm-started solve (training) keeps its first metric.
        fixed_metric=max_evals is not None,
    )


def _run_amd(
    solver,
    decoder,
    loss,
    X,
    z0,
    *,
    flow,
    differentiable,
    t_end,
    step_size,
    max_step_size,
    tol,
    max_steps,
    prior,
    **_,
):
    objective = ReconstructionObjective(
        decoder, loss, X, create_graph=differentiable, prior=prior
    )
    return amd_flow(
        objective,
        z0,
        momentum=FLOWS[flow] is NesterovField,
        t_end=t_end,
        step_size=step_size,
        max_step_size=max_step_size,
        tol=tol,
        max_steps=max_steps,
        differentiable=differentiable,
    )


def _integrator(integrate):
    """The run function of an integrator of the flow's vector field.

    It builds the field and drops the options that only skgfe's own solvers of
    the objective use (``max_evals``, ``prior``, ``max_rows``);
    ``integrate(solver, field, z0, differentiable, integration)`` runs the
    backend.
    """

    def run(
        solver,
        decoder,
        loss,
        X,
        z0,
        *,
        flow,
        differentiable,
        max_evals,
        prior,
        max_rows,
        **integration,
    ):
        field = FLOWS[flow](decoder, loss, X)
        return integrate(solver, field, z0, differentiable, integration)

    return run


def _integrate_torchdiffeq(solver, field, z0, differentiable, integration):
    return odeint_flow(
        field,
        z0,
        method=solver.method,
        adaptive=solver.adaptive,
        adjoint=differentiable,
        **integration,
    )


def _integrate_torchode(solver, field, z0, differentiable, integration):
    return torchode_flow(field, z0, method=solver.method, **integration)


_run_torchdiffeq = _integrator(_integrate_torchdiffeq)
_run_torchode = _integrator(_integrate_torchode)


def _torchdiffeq(method, adaptive):
    return Solver(
        _run_torchdiffeq,
        differentiable=True,
        adaptive=adaptive,
        # torchdiffeq's adaptive solvers choose one step size per batch.
        batch_invariant=not adaptive,
        method=method,
    )


def _torchode(method):
    return Solver(
        _run_torchode,
        differentiable=False,
        adaptive=True,
        batch_invariant=True,
        method=method,
    )


SOLVERS = {
    "lm": Solver(
        _run_lm,
        differentiable=False,
        adaptive=False,
        batch_invariant=True,
        integrates=False,
        resumable=True,
    ),
    "amd": Solver(_run_amd, differentiable=True, adaptive=False, batch_invariant=True),
    "euler": _torchdiffeq("euler", adaptive=False),
    "midpoint": _torchdiffeq("midpoint", adaptive=False),
    "heun2": _torchdiffeq("heun2", adaptive=False),
    "heun3": _torchdiffeq("heun3", adaptive=False),
    "rk4": _torchdiffeq("rk4", adaptive=False),
    "dopri5": _torchdiffeq("dopri5", adaptive=True),
    "dopri8": _torchdiffeq("dopri8", adaptive=True),
    "bosh3": _torchdiffeq("bosh3", adaptive=True),
    "fehlberg2": _torchdiffeq("fehlberg2", adaptive=True),
    "adaptive_heun": _torchdiffeq("adaptive_heun", adaptive=True),
    "torchode-dopri5": _torchode("Dopri5"),
    "torchode-tsit5": _torchode("Tsit5"),
}


def run_flow(
    decoder,
    loss,
    X,
    z0,
    *,
    flow="gradient",
    solver="amd",
    t_end=1e4,
    step_size=1.0,
    max_step_size=10.0,
    rtol=1e-4,
    atol=1e-6,
    tol=1e-4,
    max_steps=1000,
    differentiable=False,
    max_evals=None,
    prior=None,
    max_rows=None,
):
    """Encode the scaled samples ``X`` from ``z0``; return a :class:`FlowResult`.

    ``solver`` is a name of :data:`SOLVERS`. ``differentiable=True`` returns
    codes whose graph reaches the decoder's parameters: backpropagation through
    the unrolled accepted steps for 'amd', ``odeint_adjoint`` for torchdiffeq's
    solvers; it raises for a solver that is not differentiable ('lm', which
    solves for the point where either flow ends, a stationary code, and
    torchode's solvers). ``max_evals`` caps the evaluations per sample of a
    resumable solver ('lm', which then keeps each sample's first Gauss-Newton
    matrix for all its steps; the others ignore it). ``prior``, a
    :class:`~.objective.GaussianCodePrior`, adds a Gaussian prior's term to the
    loss of samples with missing entries (NaN in ``X``), or of every sample if
    it says ``all_rows``, for the solvers that descend the objective directly ('lm',
    'amd'); the integrators of a vector field ignore it. ``max_rows`` is the
    most samples 'lm' iterates at once (None: :data:`LM_CHUNK_ROWS`); it bounds
    memory and per-call overhead, not the results.
    """
    if flow not in FLOWS:
        raise ValueError(f"Unknown flow {flow!r}; expected one of {sorted(FLOWS)}.")
    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; expected one of {list(SOLVERS)}.")
    entry = SOLVERS[solver]
    if differentiable and not entry.differentiable:
        raise ValueError(
            f"solver={solver!r} is not differentiable: use solver='amd' or a "
            "torchdiffeq solver for adjoint training."
        )
    return entry.run(
        entry,
        decoder,
        loss,
        X,
        z0,
        flow=flow,
        differentiable=differentiable,
        t_end=t_end,
        step_size=step_size,
        max_step_size=max_step_size,
        rtol=rtol,
        atol=atol,
        tol=tol,
        max_steps=max_steps,
        max_evals=max_evals,
        prior=prior,
        max_rows=max_rows,
    )
