"""One entry point for every flow x solver combination."""

from .amd import amd_flow
from .fields import GradientField, NesterovField
from .lm import lm_solve
from .objective import ReconstructionObjective
from .torchdiffeq_solvers import ADAPTIVE_SOLVERS, FIXED_GRID_SOLVERS, odeint_flow
from .torchode_solvers import TORCHODE_SOLVERS, torchode_flow

FLOWS = {"gradient": GradientField, "nesterov": NesterovField}
# Most rows 'lm' iterates at once (each carries a Jacobian of n_components x
# n_features while it is evaluated).
LM_CHUNK_ROWS = 1024
SOLVERS = ("lm", "amd", *FIXED_GRID_SOLVERS, *ADAPTIVE_SOLVERS, *TORCHODE_SOLVERS)


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
):
    """Encode the scaled samples ``X`` from ``z0``; return a :class:`FlowResult`.

    ``differentiable=True`` returns codes whose graph reaches the decoder's
    parameters: backpropagation through the unrolled accepted steps for 'amd',
    ``odeint_adjoint`` for torchdiffeq's solvers. 'lm' solves for the point where
    either flow ends (a stationary code) and is never differentiable, nor are
    torchode's solvers ('torchode-dopri5', 'torchode-tsit5');
    ``max_evals`` caps its evaluations per sample (other solvers ignore it).
    """
    if flow not in FLOWS:
        raise ValueError(f"Unknown flow {flow!r}; expected one of {sorted(FLOWS)}.")
    if solver == "lm":
        if differentiable:
            raise ValueError(
                "solver='lm' is not differentiable: use solver='amd' or a "
                "torchdiffeq solver for adjoint training."
            )
        return lm_solve(
            ReconstructionObjective(decoder, loss, X),
            z0,
            tol=tol,
            max_steps=max_steps,
            max_evals=max_evals,
            max_rows=LM_CHUNK_ROWS,
        )
    if solver == "amd":
        objective = ReconstructionObjective(
            decoder, loss, X, create_graph=differentiable
        )
        return amd_flow(
            objective,
            z0,
            momentum=flow == "nesterov",
            t_end=t_end,
            step_size=step_size,
            max_step_size=max_step_size,
            tol=tol,
            max_steps=max_steps,
            differentiable=differentiable,
        )
    integration = dict(
        method=solver,
        t_end=t_end,
        step_size=step_size,
        max_step_size=max_step_size,
        rtol=rtol,
        atol=atol,
        tol=tol,
        max_steps=max_steps,
    )
    field = FLOWS[flow](decoder, loss, X)
    if solver in TORCHODE_SOLVERS:
        if differentiable:
            raise ValueError(
                f"solver={solver!r} is not differentiable: use solver='amd' or a "
                "torchdiffeq solver for adjoint training."
            )
        return torchode_flow(field, z0, **integration)
    return odeint_flow(field, z0, adjoint=differentiable, **integration)
