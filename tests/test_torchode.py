"""torchode solvers: per-sample steps, so a code does not depend on its batch."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchode")

from _helpers import adaptive_solver_gfe  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from test_flows import integrate, scipy_reference  # noqa: E402

from skgfe import GradientFlowEncoder  # noqa: E402
from skgfe._flow import run_flow  # noqa: E402
from skgfe._flow.result import CONVERGED, MAX_STEPS  # noqa: E402
from skgfe._losses import mse  # noqa: E402
from skgfe._networks import make_mlp  # noqa: E402

SOLVERS = ["torchode-dopri5", "torchode-tsit5"]


@pytest.fixture(scope="module")
def tiny():
    """A fixed 2 -> 3 -> 4 tanh decoder (float64) and three samples."""
    decoder = make_mlp(
        2,
        (3,),
        4,
        "tanh",
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    X = torch.tensor(np.random.RandomState(0).normal(size=(3, 4)))
    return decoder, X


@pytest.fixture(scope="module")
def batch():
    """A 2 -> 8 -> 6 decoder (float64) and 12 samples with varied difficulty."""
    decoder = make_mlp(
        2,
        (8,),
        6,
        "tanh",
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    X = torch.tensor(np.random.RandomState(1).normal(size=(12, 6)))
    X[::3] *= 3.0
    return decoder, X


@pytest.mark.parametrize("flow", ["gradient", "nesterov"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_codes_do_not_depend_on_batch_mates(batch, flow, solver):
    decoder, X = batch
    params = dict(flow=flow, solver=solver, rtol=1e-4, atol=1e-6, tol=1e-4, t_end=100.0)
    z0 = X.new_zeros((len(X), 2))
    with torch.no_grad():
        together = run_flow(decoder, mse, X, z0, **params)
        perm = torch.tensor(np.random.RandomState(0).permutation(len(X)))
        shuffled = run_flow(decoder, mse, X[perm], z0, **params)
        alone = [
            run_flow(decoder, mse, X[i : i + 1], z0[:1], **params)
            for i in range(len(X))
        ]
    for name in ("z", "n_steps", "n_evals", "status", "t"):
        np.testing.assert_allclose(
            getattr(shuffled, name)[torch.argsort(perm)].numpy(),
            getattr(together, name).numpy(),
            rtol=0,
            atol=1e-10,
        )
        np.testing.assert_allclose(
            torch.cat([getattr(r, name) for r in alone]).numpy(),
            getattr(together, name).numpy(),
            rtol=0,
            atol=1e-10,
        )
    # The samples really differ in how they are solved.
    assert len(set(together.n_steps.tolist())) > 1


@pytest.mark.parametrize("flow, atol", [("gradient", 1e-8), ("nesterov", 1e-7)])
@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_match_scipy_reference(tiny, flow, solver, atol):
    decoder, X = tiny
    reference = scipy_reference(decoder, X, flow, 3.0)
    result = integrate(decoder, X, flow=flow, solver=solver, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.z.numpy(), reference, rtol=0, atol=atol)
    assert np.all(result.t.numpy() == 3.0)
    assert np.linalg.norm(reference, axis=1).min() > 0.1


def test_stops_at_tol_and_on_step_budget(batch):
    decoder, X = batch
    z0 = X.new_zeros((len(X), 2))
    with torch.no_grad():
        done = run_flow(
            decoder, mse, X, z0, solver="torchode-dopri5", tol=1e-5, t_end=1e4
        )
        short = run_flow(
            decoder, mse, X, z0, solver="torchode-dopri5", tol=1e-12, max_steps=3
        )
    converged = done.status == CONVERGED
    assert converged.sum() >= len(X) // 2
    assert torch.all(done.grad_norm[converged] <= 1e-5)
    assert torch.all(done.grad_norm[~converged] > 1e-5)
    assert torch.all(short.status == MAX_STEPS)
    assert torch.all(short.n_steps <= 3)


def test_not_differentiable():
    X = np.random.RandomState(0).normal(size=(20, 4))
    gfe = GradientFlowEncoder(
        n_components=2, solver="torchode-dopri5", training="adjoint", max_iter=1
    )
    with pytest.raises(ValueError, match="not differentiable"):
        gfe.fit(X)


# No expected failure: unlike torchdiffeq's adaptive solvers, these pass
# check_methods_subset_invariance.
@parametrize_with_checks([adaptive_solver_gfe("torchode-dopri5")])
def test_sklearn_compatible_torchode_solver(estimator, check):
    check(estimator)
