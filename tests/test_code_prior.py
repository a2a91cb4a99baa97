"""The code prior of training's warm solves (``code_prior_weight``)."""

import numpy as np
import pytest
import torch

from skgfe import GradientFlowEncoder
from skgfe._error_bars import PRIOR_RIDGE, code_moments, training_code_prior
from skgfe._flow.lm import lm_solve
from skgfe._flow.objective import GaussianCodePrior, ReconstructionObjective
from skgfe._losses import LOSSES
from skgfe._networks import make_mlp

N_COMPONENTS, N_FEATURES = 3, 9


def test_an_all_rows_prior_gives_complete_rows_their_map_code():
    # Linear decoder, complete rows: the minimiser of |W z + b - x|^2 / p +
    # (z - m)^T A (z - m) / p solves (W^T W + A) z = W^T (x - b) + A m.
    generator = torch.Generator().manual_seed(0)
    decoder = make_mlp(
        N_COMPONENTS, (), N_FEATURES, "tanh", generator=generator, dtype=torch.float64
    )
    X = torch.randn(20, N_FEATURES, generator=generator, dtype=torch.float64)
    mean = torch.randn(N_COMPONENTS, generator=generator, dtype=torch.float64)
    root = torch.randn(N_COMPONENTS, N_COMPONENTS, generator=generator)
    weight = (root @ root.T).double() + 0.1 * torch.eye(N_COMPONENTS)
    start = torch.zeros(20, N_COMPONENTS, dtype=torch.float64)
    W = decoder.layers[0].weight.detach()
    b = decoder.layers[0].bias.detach()
    expected = torch.linalg.solve(
        W.T @ W + weight, (W.T @ (X - b).T) + (weight @ mean)[:, None]
    ).T
    for all_rows, target in ((True, expected), (False, None)):
        prior = GaussianCodePrior(mean, weight, all_rows=all_rows)
        objective = ReconstructionObjective(decoder, LOSSES["mse"], X, prior=prior)
        codes = lm_solve(objective, start, tol=1e-13).z
        if target is None:
            # Without all_rows the prior is the error model's, for rows with
            # missing entries only: complete rows get least squares.
            target = torch.linalg.lstsq(W, (X - b).T).solution.T
        torch.testing.assert_close(codes, target, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_an_all_rows_prior_adds_its_term_to_loss_gradient_and_matrix(loss):
    generator = torch.Generator().manual_seed(1)
    decoder = make_mlp(
        N_COMPONENTS, (8,), N_FEATURES, "tanh", generator=generator, dtype=torch.float64
    )
    X = torch.rand(6, N_FEATURES, generator=generator, dtype=torch.float64)
    X[4, 2] = float("nan")  # a row with a missing entry counts its observed ones
    z = torch.randn(6, N_COMPONENTS, generator=generator, dtype=torch.float64)
    mean = torch.randn(N_COMPONENTS, generator=generator, dtype=torch.float64)
    weight = 0.7 * torch.eye(N_COMPONENTS, dtype=torch.float64)
    plain = ReconstructionObjective(decoder, LOSSES[loss], X).gauss_newton(z)
    prior = GaussianCodePrior(mean, weight, all_rows=True)
    with_prior = ReconstructionObjective(decoder, LOSSES[loss], X, prior=prior)
    values, grad, gn = with_prior.gauss_newton(z)
    count = (~torch.isnan(X)).sum(dim=1).double()
    offset = z - mean
    torch.testing.assert_close(
        values, plain[0] + (offset @ weight * offset).sum(dim=1) / count
    )
    torch.testing.assert_close(grad, plain[1] + 2 * offset @ weight / count[:, None])
    torch.testing.assert_close(gn, plain[2] + 2 * weight / count[:, None, None])
    # The loss and gradient without the matrix agree with it.
    values_only, grad_only = with_prior(z)
    torch.testing.assert_close(values_only, values)
    torch.testing.assert_close(grad_only, grad)


def test_training_code_prior_is_the_scaled_posterior_term():
    generator = torch.Generator().manual_seed(2)
    codes = torch.randn(50, N_COMPONENTS, generator=generator, dtype=torch.float64)
    codes = codes * torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64) + 2.0
    residual = 0.2 * torch.randn(10, N_FEATURES, generator=generator)
    residual = residual.double()
    residual[0, 0] = float("nan")  # a missing entry is left out of the noise
    moments = code_moments(codes)
    prior = training_code_prior(moments, residual, "mse", 0.3, torch.float32)
    covariance = np.cov(codes.numpy().T)
    covariance += PRIOR_RIDGE * np.trace(covariance) / N_COMPONENTS * np.eye(3)
    noise = np.nanmean(residual.numpy() ** 2)
    assert prior.all_rows and prior.weight.dtype == torch.float32
    np.testing.assert_allclose(prior.mean.numpy(), codes.numpy().mean(axis=0))
    np.testing.assert_allclose(
        prior.weight.numpy(), 0.3 * noise * np.linalg.inv(covariance), rtol=1e-6
    )
    bce = training_code_prior(moments, None, "bce", 0.3, torch.float64)
    np.testing.assert_allclose(
        bce.weight.numpy(), 0.15 * np.linalg.inv(covariance), rtol=1e-9
    )


def _record_priors(monkeypatch):
    """The priors ``GradientFlowEncoder._flow`` receives from now on, by
    whether the solve was a capped warm one ('warm') or not ('other')."""
    seen = {"warm": [], "other": []}
    flow = GradientFlowEncoder._flow

    def recording(self, X, *args, max_evals=None, prior=None, **kwargs):
        seen["warm" if max_evals is not None else "other"].append(prior)
        return flow(self, X, *args, max_evals=max_evals, prior=prior, **kwargs)

    monkeypatch.setattr(GradientFlowEncoder, "_flow", recording)
    return seen


def _priors_of_a_fit(monkeypatch, **params):
    """The priors ``_flow`` received in a small fit (see _record_priors),
    plus the fitted model."""
    seen = _record_priors(monkeypatch)
    X = np.random.RandomState(0).normal(size=(120, 6))
    model = GradientFlowEncoder(
        n_components=2, hidden_layer_sizes=(8,), max_iter=3, random_state=0, **params
    ).fit(X)
    return seen, model


def test_warm_training_solves_use_the_prior_and_nothing_else_does(monkeypatch):
    seen, model = _priors_of_a_fit(monkeypatch, code_prior_weight=0.3)
    assert seen["warm"]
    assert all(p is not None and p.all_rows for p in seen["warm"])
    # Validation, the start encoder's targets, the error model: no training
    # prior (transform finds the decoder's own best code).
    assert not any(p is not None and p.all_rows for p in seen["other"])
    assert model._train_prior is None  # not kept after fit
    assert model._start_code_moments is None
    seen["other"].clear()
    model.transform(np.random.RandomState(1).normal(size=(5, 6)))
    # Only the error model's prior, for rows with missing entries.
    assert seen["other"] and not any(p.all_rows for p in seen["other"] if p)


def test_code_prior_weight_zero_turns_the_prior_off(monkeypatch):
    seen, _ = _priors_of_a_fit(monkeypatch)  # the default
    assert seen["warm"] and all(p is None for p in seen["warm"])


def test_the_prior_is_fitted_to_the_start_codes_and_kept(monkeypatch):
    # Refitted to the codes it shrinks, the prior would feed on itself: its
    # mean and covariance are those of the codes training starts from.
    seen, _ = _priors_of_a_fit(monkeypatch, code_prior_weight=0.3)
    first, last = seen["warm"][0], seen["warm"][-1]
    assert first is not last
    torch.testing.assert_close(first.mean, last.mean, rtol=0, atol=0)
    # The weight changes with the residual's noise estimate only.
    ratio = last.weight / first.weight
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()))
    assert ratio[0, 0] != 1.0


def test_the_prior_shrinks_training_codes_towards_their_mean():
    # One warm solve of the same codes with and without the prior: the
    # prior's MAP codes lie closer to the codes' mean, most in the direction
    # of least variance.
    X = np.random.RandomState(0).normal(size=(200, 6))
    X[:, 0] *= 5.0
    model = GradientFlowEncoder(
        n_components=3, hidden_layer_sizes=(8,), max_iter=1, random_state=0
    ).fit(X)
    X_t = model._scale(model._to_tensor(X))
    codes = model.transform(X)
    codes_t = torch.as_tensor(codes, dtype=X_t.dtype)
    residual = X_t - model.decoder_(codes_t).detach()
    prior = training_code_prior(
        code_moments(codes_t), residual, "mse", 1.0, codes_t.dtype
    )
    with torch.no_grad():
        shrunk = model._flow(X_t, z0=codes_t, prior=prior).z.numpy()
    spread = lambda Z: ((Z - codes.mean(axis=0)) ** 2).mean(axis=0)  # noqa: E731
    assert (spread(shrunk) < spread(codes)).all()


@pytest.mark.parametrize("case", ["missing entries", "bce", "partial_fit"])
def test_the_prior_trains_with_missing_entries_bce_and_partial_fit(case, monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(80, 6))
    params = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=3)
    if case == "missing entries":
        X[rng.uniform(size=X.shape) < 0.2] = np.nan
    if case == "bce":
        params["loss"] = "bce"
    seen = _record_priors(monkeypatch)["warm"]
    model = GradientFlowEncoder(**params, code_prior_weight=0.3, random_state=0)
    if case == "partial_fit":
        model.partial_fit(X[:40]).partial_fit(X[40:])
    else:
        model.fit(X)
    if case == "bce":
        # init='zeros' (a random decoder): the codes start equal, and the
        # prior waits until every training code has been solved once (the
        # first epoch's one group of rows).
        assert seen[0] is None
        seen = seen[1:]
    assert seen and all(p is not None and p.all_rows for p in seen)
    assert all(torch.isfinite(p.weight).all() for p in seen)
    assert np.isfinite(model.transform(X)).all()


def test_a_warm_start_fit_keeps_the_prior_of_the_first(monkeypatch):
    # The resumed codes were solved under the prior; refitting it to them
    # would tighten it with every warm-start fit.
    seen = _record_priors(monkeypatch)["warm"]
    X = np.random.RandomState(0).normal(size=(120, 6))
    model = GradientFlowEncoder(
        n_components=2,
        hidden_layer_sizes=(8,),
        max_iter=3,
        random_state=0,
        warm_start=True,
        early_stopping=False,  # the same training samples: their codes resume
        code_prior_weight=0.3,
    )
    model.fit(X)
    first = seen[0]
    seen.clear()
    model.fit(X)
    torch.testing.assert_close(seen[0].mean, first.mean, rtol=0, atol=0)
    # A new model would fit the prior to the resumed, shrunk codes instead.
    assert not torch.equal(
        code_moments(model._last_train_codes[1])[0].to(first.mean.dtype), first.mean
    )
