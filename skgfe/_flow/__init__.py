"""Latent-space flows that encode a sample as its decoder's best code.

One module per solver family (as torchdiffeq lays out its solvers): ``lm`` (the
per-sample Levenberg-Marquardt solver of the flow's end point), ``amd`` (the
per-sample AMD solver), ``torchdiffeq_solvers`` (torchdiffeq's fixed-grid and
adaptive solvers with per-sample stopping), ``torchode_solvers`` (torchode's
adaptive solvers, a step size per sample; optional dependency). Beside them:
``fields`` (the vector fields as ``nn.Module``), ``objective`` (the per-sample
loss and its derivatives), ``state`` (the per-sample state every solver keeps
while it runs), ``result`` (what a flow returns), ``dispatch`` (the solver
table :data:`SOLVERS` and :func:`run_flow`, one entry point for all) and
``diagnostics`` (the estimator's convergence reports).
"""

from .amd import amd_flow
from .dispatch import FLOWS, SOLVERS, Solver, run_flow
from .fields import GradientField, NesterovField
from .initial import INITS, initial_codes, linear_path_codes
from .lm import lm_solve
from .objective import ReconstructionObjective
from .result import STATUS_NAMES, FlowResult
from .state import FlowState
from .torchdiffeq_solvers import odeint_flow
from .torchode_solvers import torchode_flow

__all__ = [
    "FLOWS",
    "INITS",
    "SOLVERS",
    "STATUS_NAMES",
    "FlowResult",
    "FlowState",
    "GradientField",
    "NesterovField",
    "ReconstructionObjective",
    "Solver",
    "amd_flow",
    "initial_codes",
    "linear_path_codes",
    "lm_solve",
    "odeint_flow",
    "run_flow",
    "torchode_flow",
]
