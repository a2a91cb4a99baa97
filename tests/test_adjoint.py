"""training='adjoint': the exact gradient of the training loss through the encoding."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skgfe import GradientFlowEncoder

# Adjoint training differentiates through the paper's flows: AMD (or torchdiffeq)
# from z = 0 on a randomly initialised decoder, trained without early stopping
# ('lm' is a solver of the end point and is not differentiable).
PAPER_SETTINGS = dict(
    solver="amd", decoder_init="random", init="zeros", early_stopping=False
)


def tiny_gfe(**params):
    """A fitted 2 -> 3 -> 4 decoder (float64) and its six scaled samples."""
    X = np.random.RandomState(0).normal(size=(6, 4))
    defaults = dict(
        n_components=2,
        hidden_layer_sizes=(3,),
        activation="tanh",
        max_iter=1,
        random_state=0,
        **PAPER_SETTINGS,
    )
    gfe = GradientFlowEncoder(**{**defaults, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe.fit(X)
    return gfe, gfe._scale(gfe._to_tensor(X))


def training_gradient(gfe, X_t):
    """Gradient of the minibatch training loss, as fit computes it."""
    parameters = list(gfe.decoder_.parameters())
    for p in parameters:
        p.grad = None
    loss, _ = gfe._batch_loss(X_t, None)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in parameters])


def finite_difference_gradient(gfe, X_t, h=1e-6):
    """Central differences of the training loss, the codes re-solved each time."""
    gradient = []
    for p in gfe.decoder_.parameters():
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            original = flat[i].item()
            values = []
            for sign in (1, -1):
                flat[i] = original + sign * h
                with torch.no_grad():
                    values.append(gfe._batch_loss(X_t, None)[0].item())
            flat[i] = original
            gradient.append((values[0] - values[1]) / (2 * h))
    return torch.tensor(gradient, dtype=torch.float64)


# flow_tol=0: the flows never stop on convergence, so the training loss is a
# smooth function of the weights (a stop decision could flip under a perturbation).
# The flows are short, so the codes are far from stationary and the approximate
# gradient is far from the exact one.
@pytest.mark.parametrize(
    "params",
    [
        dict(solver="amd", max_flow_steps=8),
        dict(flow="nesterov", solver="amd", max_flow_steps=8),
        dict(solver="rk4", step_size=0.2, flow_time=4.0),
        dict(flow="nesterov", solver="rk4", step_size=0.1, flow_time=4.0),
    ],
    ids=["amd", "nesterov-amd", "rk4", "nesterov-rk4"],
)
def test_adjoint_gradient_matches_finite_differences(params):
    gfe, X_t = tiny_gfe(training="adjoint", flow_tol=0.0, **params)
    exact = training_gradient(gfe, X_t)
    reference = finite_difference_gradient(gfe, X_t)
    approximate = training_gradient(gfe.set_params(training="approximate"), X_t)

    def error(g):
        return ((g - reference).norm() / reference.norm()).item()

    assert error(exact) < 1e-4
    assert error(approximate) > 1e-2  # the codes are not stationary


def test_approximate_gradient_is_exact_at_stationary_codes():
    # Envelope theorem: when the codes are stationary points, the gradient
    # through the flow adds nothing to the gradient through the decoder.
    gfe, _ = tiny_gfe()
    gfe.set_params(
        training="adjoint",
        flow="nesterov",
        flow_tol=1e-8,
        flow_time=1e6,
        max_flow_steps=20000,
    )
    # Samples near the decoder's image, so that every code has a finite optimum.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        codes = torch.randn(6, 2, generator=generator, dtype=torch.float64)
        noise = torch.randn(6, 4, generator=generator, dtype=torch.float64)
        X_t = gfe.decoder_(codes) + 0.1 * noise
    with torch.no_grad():
        assert gfe._flow(X_t).converged.all()
    exact = training_gradient(gfe, X_t)
    approximate = training_gradient(gfe.set_params(training="approximate"), X_t)
    assert ((exact - approximate).norm() / exact.norm()).item() < 1e-4


@pytest.mark.parametrize(
    "params",
    [
        dict(solver="amd"),
        dict(flow="nesterov", solver="amd"),
        dict(solver="rk4", step_size=2.0),
        dict(solver="bosh3"),
    ],
    ids=["amd", "nesterov-amd", "rk4", "bosh3"],
)
def test_adjoint_training_fits(digits_split, params):
    X_pool, _ = digits_split
    gfe = GradientFlowEncoder(
        **{
            **PAPER_SETTINGS,
            **params,
            "n_components": 2,
            "hidden_layer_sizes": (8,),
            "training": "adjoint",
            "max_iter": 3,
            "batch_size": 20,
            "flow_tol": 1e-3,
            "tol": 0,
            "random_state": 0,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe.fit(X_pool[:40])
    assert gfe.n_iter_ == 3
    assert gfe.loss_curve_[-1] < gfe.loss_curve_[0]
    assert all(p.grad is not None for p in gfe.decoder_.parameters())
    assert np.all(np.isfinite(gfe.transform(X_pool[:5])))


def test_lm_solver_refuses_adjoint_training():
    with pytest.raises(ValueError, match="solver='lm'"):
        GradientFlowEncoder(solver="lm", training="adjoint").fit(np.ones((4, 3)))
