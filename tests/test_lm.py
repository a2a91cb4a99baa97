"""solver='lm': per-sample Levenberg-Marquardt for the stationary code of the flow."""

import numpy as np
import pytest
import torch
from _helpers import assert_codes_do_not_depend_on_the_batch, fit_quietly, variant
from sklearn.exceptions import ConvergenceWarning

import skgfe._flow.dispatch as dispatch
import skgfe._training as training_module
from skgfe import GradientFlowEncoder
from skgfe._flow import STATUS_NAMES, ReconstructionObjective, lm_solve, run_flow
from skgfe._flow.objective import GaussianCodePrior
from skgfe._flow.result import CONVERGED
from skgfe._gfe import TRAINING_MAX_EVALS
from skgfe._losses import LOSSES
from skgfe._networks import make_mlp


@pytest.fixture(scope="module")
def fitted(digits_split):
    """A non-linear decoder trained with the default solver, PCA init included.

    No early stopping: 30 full epochs, so the decoder has moved well away from the
    (linear) PCA model it starts from.
    """
    X_pool, X_test = digits_split
    gfe = GradientFlowEncoder(
        n_components=3,
        hidden_layer_sizes=(16,),
        max_iter=30,
        early_stopping=False,
        random_state=0,
    )
    fit_quietly(gfe, X_pool[:200])
    assert gfe.solver == "lm" and gfe.decoder_.skip is not None
    # The residual is trained: the decoder is no longer linear.
    assert gfe.decoder_.layers[-1].weight.abs().max() > 1e-2
    return gfe, X_test[:100]


def autograd_loss_and_grad_norm(gfe, X, Z):
    """Each sample's loss and gradient norm at Z, by autograd on the decoder."""
    X_scaled = torch.tensor((X - gfe.mean_) / gfe.scale_)
    z = torch.tensor(Z, requires_grad=True)
    loss = ((gfe.decoder_(z) - X_scaled) ** 2).mean(dim=1)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach().numpy(), grad.norm(dim=1).numpy()


@pytest.mark.parametrize("init", ["auto", "zeros", "random"])
@pytest.mark.parametrize("flow_tol", [1e-3, 1e-6])
def test_lm_codes_are_stationary_points(fitted, init, flow_tol):
    gfe, X = fitted
    gfe = variant(gfe, init=init, flow_tol=flow_tol)
    Z, info = gfe.encode(X, return_info=True)
    assert info["converged"].all(), np.unique(info["status"], return_counts=True)
    loss, grad_norm = autograd_loss_and_grad_norm(gfe, X, Z)
    assert np.all(grad_norm <= flow_tol * (1 + 1e-6))
    np.testing.assert_allclose(grad_norm, info["grad_norm"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(loss, info["loss"], rtol=1e-10)


def test_lm_codes_are_stationary_under_bce(digits_split):
    # 'bce': generalised Gauss-Newton steps (Bernoulli weights); the decoder
    # outputs logits and starts at random ('auto'), the codes at zero.
    X_pool, X_test = digits_split
    gfe = GradientFlowEncoder(
        n_components=3,
        hidden_layer_sizes=(16,),
        loss="bce",
        max_iter=5,
        early_stopping=False,
        flow_tol=1e-5,
        random_state=0,
    )
    fit_quietly(gfe, X_pool[:100] / 16)
    assert gfe.decoder_.skip is None
    X = X_test[:50] / 16
    Z, info = gfe.encode(X, return_info=True)
    assert info["converged"].all() and np.all(info["n_steps"] > 0)
    z = torch.tensor(Z, requires_grad=True)
    loss = LOSSES["bce"](gfe.decoder_(z), torch.tensor(X))
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert np.all(grad.norm(dim=1).numpy() <= gfe.flow_tol * (1 + 1e-6))
    np.testing.assert_allclose(loss.detach().numpy(), info["loss"], rtol=1e-10)


def test_lm_reports_its_diagnostics(fitted):
    gfe, X = fitted
    Z, info = variant(gfe, init="zeros").encode(X, return_info=True)
    assert set(info) == {
        "loss",
        "grad_norm",
        "n_steps",
        "n_evals",
        "time",
        "converged",
        "status",
    }
    assert all(len(v) == len(X) for v in info.values())
    np.testing.assert_array_equal(Z, variant(gfe, init="zeros").transform(X))
    assert set(info["status"]) == {"converged"}
    assert np.array_equal(info["converged"], info["grad_norm"] <= gfe.flow_tol)
    # From z = 0 every sample takes steps; every step is one evaluation, and
    # rejected trials cost evaluations too (the first evaluation is at z0).
    assert np.all(info["n_steps"] > 0)
    assert np.all(info["n_evals"] >= info["n_steps"] + 1)
    # A Gauss-Newton solver needs a handful of evaluations, not hundreds.
    assert np.median(info["n_evals"]) < 50
    # No flow time is integrated.
    assert np.all(np.isnan(info["time"]))


def test_lm_stops_on_max_flow_steps_and_warns(fitted):
    gfe, X = fitted
    gfe = variant(gfe, init="zeros", flow_tol=1e-10, max_flow_steps=2)
    with pytest.warns(ConvergenceWarning, match=f"of {len(X)} samples"):
        Z, info = gfe.encode(X, return_info=True)
    assert np.all(info["n_steps"] <= 2)
    assert set(info["status"]) <= {"max_steps", "converged", "stalled"}
    assert (info["status"] == "max_steps").any()
    assert np.all(np.isfinite(Z))


def test_lm_on_a_linear_decoder_gives_the_least_squares_code(digits_split):
    X_pool, X_test = digits_split
    gfe = GradientFlowEncoder(
        n_components=4,
        hidden_layer_sizes=(),
        decoder_init="random",
        init="zeros",
        max_iter=3,
        early_stopping=False,
        flow_tol=1e-11,
        random_state=0,
    )
    fit_quietly(gfe, X_pool[:100])
    X = X_test[:50]
    Z, info = gfe.encode(X, return_info=True)
    assert info["converged"].all()
    layer = gfe.decoder_.layers[0]
    W, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    X_scaled = (X - gfe.mean_) / gfe.scale_
    expected = np.linalg.lstsq(W, (X_scaled - b).T, rcond=None)[0].T
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(Z, expected, rtol=0, atol=1e-8)
    # Gauss-Newton is Newton for a linear decoder: a few steps from z = 0.
    assert np.all(info["n_steps"] <= 5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lm_codes_do_not_depend_on_the_batch(fitted, digits_split, dtype):
    gfe, _ = fitted
    if dtype == np.float32:
        gfe = fit_quietly(
            variant(gfe, max_iter=3), digits_split[0][:100].astype(np.float32)
        )
    X = digits_split[1][:50].astype(dtype)
    for init in ("auto", "zeros"):
        assert_codes_do_not_depend_on_the_batch(variant(gfe, init=init), X)


def test_lm_chunks_give_the_same_codes(fitted, monkeypatch):
    gfe, X = fitted
    gfe = variant(gfe, init="zeros")
    Z, info = gfe.encode(X, return_info=True)
    monkeypatch.setattr(dispatch, "LM_CHUNK_ROWS", 7)
    Z_chunked, info_chunked = gfe.encode(X, return_info=True)
    np.testing.assert_allclose(Z_chunked, Z, rtol=0, atol=1e-12)
    for key in ("n_steps", "n_evals", "status"):
        np.testing.assert_array_equal(info_chunked[key], info[key])


def test_lm_and_amd_find_the_same_codes_for_most_samples(fitted):
    # Both solve for a stationary point of each sample's loss, from the same start
    # and to the same tolerance. The flow follows the gradient, LM takes
    # Gauss-Newton steps, so where a loss has several minima they may end in
    # different ones. Measured on this decoder: 98 of these 100 samples agree for
    # both inits (593 and 582 of all 597 held-out digits for 'auto' and
    # 'zeros'). The distances are bimodal: at most 6e-4 where the codes agree
    # (flat directions fix a code only to about flow_tol / curvature), at least
    # 0.9 where they reach different minima, so 1e-2 separates them.
    gfe, X = fitted
    # 'linear': the start 'auto' was when these were measured (now 'amortized').
    for init in ("linear", "zeros"):
        lm = variant(gfe, flow_tol=1e-6, init=init)
        amd = variant(gfe, flow_tol=1e-6, init=init, solver="amd", max_flow_steps=5000)
        Z_lm, info_lm = lm.encode(X, return_info=True)
        Z_amd, info_amd = amd.encode(X, return_info=True)
        assert info_lm["converged"].all() and info_amd["converged"].all()
        agree = np.linalg.norm(Z_lm - Z_amd, axis=1) <= 1e-2
        assert agree.mean() >= 0.9, (init, agree.mean())
        # Where they agree, the losses are the same.
        np.testing.assert_allclose(
            info_lm["loss"][agree], info_amd["loss"][agree], rtol=1e-6
        )
        # LM needs far fewer evaluations.
        assert np.median(info_lm["n_evals"]) < np.median(info_amd["n_evals"]) / 5


def tanh_problem(seed, n_rows):
    """A small tanh decoder with a skip path, samples around it, zero starts."""
    generator = torch.Generator().manual_seed(seed)
    decoder = make_mlp(
        2, (8,), 5, "tanh", generator=generator, dtype=torch.float64, skip=True
    )
    X = 3 * torch.randn(n_rows, 5, generator=generator, dtype=torch.float64)
    return decoder, X, torch.zeros(n_rows, 2, dtype=torch.float64)


def test_lm_solve_stops_at_max_evals():
    decoder, X, z0 = tanh_problem(seed=0, n_rows=20)
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X)
    # tol=1e-6: far tighter and the loss of these samples is flat to rounding
    # before the gradient gets there ('stalled').
    full = lm_solve(objective, z0, tol=1e-6)
    assert full.converged.all() and (full.n_evals > 3).all()
    capped = lm_solve(objective, z0, tol=1e-6, max_evals=3)
    assert (capped.n_evals <= 3).all()
    names = {STATUS_NAMES[int(s)] for s in capped.status}
    assert names <= {"max_steps", "converged"} and "max_steps" in names
    # The capped solve made progress, and never more than the full one.
    start_loss = objective(z0)[0]
    assert (capped.loss <= start_loss).all()
    assert (full.loss <= capped.loss + 1e-12).all()
    # Resuming from the capped codes converges.
    resumed = lm_solve(objective, capped.z, tol=1e-6)
    assert resumed.converged.all()


class CountingObjective(ReconstructionObjective):
    """Counts the rows whose Gauss-Newton matrix (a Jacobian each) is formed."""

    gauss_newton_rows = 0

    def evaluate(self, z, rows=None):
        loss, grad, gauss_newton = super().evaluate(z, rows)

        def counted(positions=None):
            self.gauss_newton_rows += len(z) if positions is None else len(positions)
            return gauss_newton(positions)

        return loss, grad, counted


class EagerObjective(CountingObjective):
    """Forms every evaluated row's Gauss-Newton matrix, as a solver that does
    not defer them would."""

    def evaluate(self, z, rows=None):
        loss, grad, gauss_newton = super().evaluate(z, rows)
        gn = gauss_newton()
        return (
            loss,
            grad,
            lambda positions=None: gn if positions is None else gn[positions],
        )


@pytest.mark.parametrize("max_evals", [None, 2, 3, 5])
def test_deferred_gauss_newton_gives_the_same_codes_with_fewer_jacobians(max_evals):
    # Only the samples that step on from an accepted trial need its matrix:
    # those rejected or stopping there (converged, or out of budget) do not.
    # The codes, losses and statuses are those of forming them all.
    decoder, X, z0 = tanh_problem(seed=0, n_rows=20)
    lean = CountingObjective(decoder, LOSSES["mse"], X)
    result = lm_solve(lean, z0, tol=1e-6, max_evals=max_evals)
    eager = EagerObjective(decoder, LOSSES["mse"], X)
    reference = lm_solve(eager, z0, tol=1e-6, max_evals=max_evals)
    for name in ("z", "loss", "grad_norm", "n_steps", "n_evals", "status"):
        assert torch.equal(getattr(result, name), getattr(reference, name)), name
    assert eager.gauss_newton_rows == int(reference.n_evals.sum())
    assert lean.gauss_newton_rows < eager.gauss_newton_rows


@pytest.mark.parametrize("hidden", [(8,), (9,), (9, 7)])
def test_deferred_gauss_newton_matrices_do_not_depend_on_the_rows_asked_with_them(
    hidden,
):
    # Each row's matrix is bit-identical to its row of the full evaluation,
    # alone or asked with others, with missing entries and a prior too. With
    # odd hidden widths and few outputs the batched products round a row
    # differently at another place in its block of rows.
    decoder, X, z0 = tanh_problem(seed=2, n_rows=45)
    generator = torch.Generator().manual_seed(3)
    decoder = make_mlp(
        2, hidden, 5, "tanh", generator=generator, dtype=torch.float64, skip=True
    )
    z0 = torch.randn(z0.shape, generator=generator, dtype=z0.dtype)
    X = X.clone()
    X[::3, 1] = torch.nan
    prior = GaussianCodePrior(
        torch.zeros(z0.shape[1], dtype=z0.dtype),
        0.1 * torch.eye(z0.shape[1], dtype=z0.dtype),
        all_rows=True,
    )
    for objective in (
        ReconstructionObjective(decoder, LOSSES["mse"], X),
        ReconstructionObjective(decoder, LOSSES["mse"], X, prior=prior),
        ReconstructionObjective(decoder, LOSSES["bce"], X.sigmoid()),
    ):
        loss, grad, gn = objective.gauss_newton(z0)
        deferred_loss, deferred_grad, deferred = objective.evaluate(z0)
        assert torch.equal(loss, deferred_loss) and torch.equal(grad, deferred_grad)
        for positions in ([0], [44, 3, 7], list(range(1, 45, 2))):
            positions = torch.tensor(positions)
            assert torch.equal(deferred(positions), gn[positions])


@pytest.mark.parametrize("max_rows", [1, 3, 8, 19])
def test_lm_solve_iterates_at_most_max_rows_with_the_same_results(max_rows):
    decoder, X, z0 = tanh_problem(seed=1, n_rows=40)
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X)
    X[7] = decoder(z0[:1])[0]  # a sample whose start is already its code
    everything = lm_solve(objective, z0, tol=1e-6)
    # Samples stop after different numbers of evaluations, so waiting samples
    # join the running ones mid-way.
    assert len(set(everything.n_evals.tolist())) > 3
    assert everything.n_evals[7] == 1 and everything.status[7] == CONVERGED
    sizes = []
    evaluate = objective.evaluate

    def recording(z, rows):
        sizes.append(len(rows))
        return evaluate(z, rows)

    objective.evaluate = recording
    bounded = lm_solve(objective, z0, tol=1e-6, max_rows=max_rows)
    assert max(sizes) <= max_rows and sum(sizes) == int(everything.n_evals.sum())
    torch.testing.assert_close(bounded.z, everything.z, rtol=0, atol=1e-12)
    for name in ("n_steps", "n_evals", "status"):
        assert torch.equal(getattr(bounded, name), getattr(everything, name)), name


def test_fixed_metric_finds_the_same_stationary_codes_with_one_jacobian():
    # From codes near the stationary points (training's warm codes), a solve
    # that keeps each sample's first Gauss-Newton matrix converges to the same
    # codes as one that evaluates it at every trial, with one Jacobian per
    # sample.
    decoder, X, z0 = tanh_problem(seed=0, n_rows=20)
    exact = lm_solve(ReconstructionObjective(decoder, LOSSES["mse"], X), z0, tol=1e-6)
    assert exact.converged.all()
    generator = torch.Generator().manual_seed(1)
    warm = exact.z + 0.05 * torch.randn(
        exact.z.shape, generator=generator, dtype=exact.z.dtype
    )
    objective = CountingObjective(decoder, LOSSES["mse"], X)
    fixed = lm_solve(objective, warm, tol=1e-6, fixed_metric=True)
    assert fixed.converged.all()
    assert objective.gauss_newton_rows == len(X)
    torch.testing.assert_close(fixed.z, exact.z, rtol=0, atol=1e-4)


@pytest.mark.parametrize("max_rows", [1, 3, 8])
def test_fixed_metric_results_do_not_depend_on_max_rows(max_rows):
    # Samples that join mid-way get their own first Gauss-Newton matrix;
    # nobody else's changes.
    decoder, X, z0 = tanh_problem(seed=1, n_rows=40)
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X)
    everything = lm_solve(objective, z0, tol=1e-6, max_evals=30, fixed_metric=True)
    assert len(set(everything.n_evals.tolist())) > 1
    bounded = lm_solve(
        objective, z0, tol=1e-6, max_evals=30, fixed_metric=True, max_rows=max_rows
    )
    torch.testing.assert_close(bounded.z, everything.z, rtol=0, atol=1e-12)
    for name in ("n_steps", "n_evals", "status"):
        assert torch.equal(getattr(bounded, name), getattr(everything, name)), name


def test_lm_refuses_a_non_finite_start():
    decoder = make_mlp(2, (4,), 3, "tanh", dtype=torch.float64)
    X = torch.zeros(3, 3, dtype=torch.float64)
    # inf, not NaN: the objective takes NaN for a missing entry.
    X[1, 0] = float("inf")
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X)
    with pytest.raises(FloatingPointError, match="not finite"):
        lm_solve(objective, torch.zeros(3, 2, dtype=torch.float64))


def test_lm_is_not_differentiable():
    with pytest.raises(ValueError, match="solver='lm'"):
        GradientFlowEncoder(solver="lm", training="adjoint").fit(np.ones((4, 3)))
    decoder = make_mlp(2, (4,), 3, "tanh", dtype=torch.float64)
    X = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not differentiable"):
        run_flow(
            decoder,
            LOSSES["mse"],
            X,
            torch.zeros(3, 2, dtype=torch.float64),
            solver="lm",
            differentiable=True,
        )


# ------------------------------------------------------------- warm codes


def record_lm_calls(monkeypatch):
    calls = []
    original = dispatch.lm_solve

    def recording(objective, z0, **kwargs):
        calls.append(dict(kwargs, n_rows=len(z0), z0=z0.clone()))
        return original(objective, z0, **kwargs)

    monkeypatch.setattr(dispatch, "lm_solve", recording)
    return calls


@pytest.mark.parametrize("warm_codes", [True, False])
def test_warm_codes_fit_and_cap_the_training_solves(
    digits_split, monkeypatch, warm_codes
):
    X_pool, X_test = digits_split
    calls = record_lm_calls(monkeypatch)
    gfe = GradientFlowEncoder(
        n_components=3,
        hidden_layer_sizes=(16,),
        max_iter=4,
        batch_size=35,
        warm_codes=warm_codes,
        random_state=0,
    )
    fit_quietly(gfe, X_pool[:100])
    assert gfe.n_iter_ == 4
    assert np.all(np.isfinite(gfe.loss_curve_))
    # The first full solve of all 90 training rows is the PCA start's training
    # loss, which early stopping's kept weights must not exceed.
    start = [i for i, c in enumerate(calls) if c["n_rows"] == 90]
    assert start and calls[start[0]]["max_evals"] is None
    del calls[start[0]]
    # Training solves versus those of the 10 validation samples. Warm codes
    # are solved for a group of minibatches at once (here the whole epoch:
    # 3 minibatches of 30 rows, far fewer than MINIBATCH_GROUP_ROWS); without
    # them every minibatch is solved on its own.
    # After training, the start encoder's targets (init='amortized'): one full
    # solve of the 90 training rows, from their warm codes; then the error
    # model's solve of the 10 held-out rows.
    assert [c["n_rows"] for c in calls[-2:]] == [90, 10]
    assert all(c["max_evals"] is None for c in calls[-2:])
    del calls[-2:]
    training = [c for c in calls if c["n_rows"] != 10]
    validation = [c for c in calls if c["n_rows"] == 10]
    if warm_codes:
        assert [c["n_rows"] for c in training] == [90] * 4
        assert all(c["fixed_metric"] for c in training)
    else:
        assert [c["n_rows"] for c in training] == [30] * (4 * 3)
    assert len(validation) >= 2
    expected_cap = TRAINING_MAX_EVALS if warm_codes else None
    assert TRAINING_MAX_EVALS == 3
    assert all(c["max_evals"] == expected_cap for c in training)
    # The validation loss and transform always solve in full, from init.
    assert all(c["max_evals"] is None for c in validation)
    calls.clear()
    Z = gfe.transform(X_test[:30])
    assert np.all(np.isfinite(Z)) and np.isfinite(gfe.score(X_test[:30]))
    assert calls and all(c["max_evals"] is None for c in calls)
    assert not hasattr(gfe, "_train_codes") or gfe._train_codes is None


def test_warm_codes_resume_from_the_previous_epoch(digits_split, monkeypatch):
    # Each training sample's solve starts where its solve of the previous epoch
    # stopped (the first epoch from init).
    # The codes of a group of minibatches (here 2 of 25 rows) are solved
    # together, before the group's optimiser steps.
    X_pool, _ = digits_split
    records = []
    original = GradientFlowEncoder._prepare_minibatches

    def recording(self, X_train, rows):
        before = self._train_codes[rows].clone()
        original(self, X_train, rows)
        records.append((rows.clone(), before, self._train_codes[rows].clone()))

    monkeypatch.setattr(GradientFlowEncoder, "_prepare_minibatches", recording)
    monkeypatch.setattr(training_module, "MINIBATCH_GROUP_ROWS", 50)
    gfe = GradientFlowEncoder(
        n_components=3,
        hidden_layer_sizes=(16,),
        max_iter=3,
        batch_size=25,
        early_stopping=False,
        random_state=0,
    )
    fit_quietly(gfe, X_pool[:100])
    assert [len(rows) for rows, _, _ in records] == [50] * (3 * 2)
    last = {}
    for epoch in range(3):
        for rows, before, after in records[2 * epoch : 2 * (epoch + 1)]:
            for row, b, a in zip(rows.tolist(), before, after):
                if epoch > 0:
                    assert torch.equal(b, last[row])
                last[row] = a
        assert len(last) == 100
    # The codes moved between epochs: the solves really resumed.
    assert any(not torch.equal(b, a) for _, b, a in records[-2:])


def test_warm_codes_are_ignored_by_other_solvers(digits_split, monkeypatch):
    X_pool, _ = digits_split
    calls = record_lm_calls(monkeypatch)
    gfe = GradientFlowEncoder(
        n_components=2,
        hidden_layer_sizes=(8,),
        solver="amd",
        max_iter=2,
        warm_codes=True,
        early_stopping=False,
        random_state=0,
    )
    fit_quietly(gfe, X_pool[:60])
    assert calls == [] and np.all(np.isfinite(gfe.loss_curve_))
