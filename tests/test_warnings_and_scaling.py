"""Warnings that say what is wrong, features on different scales, interrupted fits."""

import re
import warnings

import numpy as np
import pytest
import torch
from _helpers import fit_quietly
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import skgfe._torch_estimator  # the optimiser is made there (was _base, issue 21)
from skgfe import Autoencoder, GradientFlowEncoder
from skgfe._flow.result import MAX_STEPS


def tiny_gfe(**params):
    defaults = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=2, random_state=0)
    return GradientFlowEncoder(**{**defaults, **params})


def curved_data(n_samples=40, n_features=4, seed=0):
    rng = np.random.RandomState(seed)
    t = rng.uniform(-2, 2, size=(n_samples, 2))
    mix = rng.randn(2, n_features)
    return np.sin(t @ mix) + 0.05 * rng.randn(n_samples, n_features)


# --------------------------------------------------------------- stalled advice
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stalled_advice_fits_the_precision(dtype):
    X = curved_data().astype(dtype)
    gfe = fit_quietly(tiny_gfe(decoder_init="random"), X)
    # Far below what the loss resolves in either precision: every flow stalls.
    gfe.set_params(flow_tol=1e-20)
    with pytest.warns(ConvergenceWarning, match="stalled") as record:
        _, info = gfe.encode(X, return_info=True)
    assert np.all(info["status"] == "stalled")
    message = str(record[0].message)
    if dtype == np.float32:
        assert "fit and transform float64 data" in message
        return
    assert "float64 data" not in message
    assert "flat at float64 precision" in message
    # The tolerance it suggests does accept every flow.
    gfe.set_params(flow_tol=float(re.search(r"flow_tol=(\S+) accepts", message)[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        _, info = gfe.encode(X, return_info=True)
    assert info["converged"].all()


# ------------------------------------------------------- training flow warnings
def training_flow_warnings(record):
    return [w for w in record if "training samples stopped" in str(w.message)]


@pytest.mark.parametrize(
    "params",
    [
        dict(solver="amd", max_flow_steps=5),
        dict(solver="lm", warm_codes=False, max_flow_steps=1),
    ],
)
def test_training_flows_out_of_steps_warn_once(params):
    X = curved_data()
    gfe = tiny_gfe(decoder_init="random", max_iter=3, early_stopping=False, **params)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gfe.fit(X)
    found = training_flow_warnings(record)
    assert len(found) == 1  # once per fit, not per epoch or minibatch
    assert issubclass(found[0].category, ConvergenceWarning)
    message = str(found[0].message)
    n_short, n_solves = map(
        int, re.search(r"(\d+) of (\d+) training", message).groups()
    )
    assert n_solves == len(X) and 0 < n_short <= n_solves
    assert f"{n_short} max_steps: raise max_flow_steps" in message


def test_capped_warm_training_solves_do_not_warn(monkeypatch):
    # With warm codes, 'lm' stops training solves after TRAINING_MAX_EVALS
    # evaluations on purpose (status 'max_steps'); they resume next epoch.
    capped = []
    flow = GradientFlowEncoder._flow

    def spy(self, X, differentiable=False, z0=None, max_evals=None, **kwargs):
        result = flow(self, X, differentiable, z0, max_evals, **kwargs)
        if max_evals is not None:
            capped.append(int((result.status == MAX_STEPS).sum()))
        return result

    monkeypatch.setattr(GradientFlowEncoder, "_flow", spy)
    X = curved_data()
    gfe = tiny_gfe(decoder_init="random", max_iter=3, early_stopping=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gfe.fit(X)
    assert sum(capped) > 0
    assert training_flow_warnings(record) == []


def test_partial_fit_reports_its_own_epoch():
    X = curved_data()
    gfe = tiny_gfe(solver="amd", decoder_init="random", max_flow_steps=5)
    for _ in range(2):
        with pytest.warns(ConvergenceWarning, match=f"of {len(X)} training samples"):
            gfe.partial_fit(X)


# -------------------------------------------------- features on different scales
def test_standard_scaler_rescues_a_small_feature():
    # The internal scaling is one global scale: a feature 1e9 times smaller than
    # another hardly counts in the loss. The user guide's remedy is a
    # StandardScaler in front, as for PCA.
    rng = np.random.RandomState(0)
    t1, t2 = rng.uniform(-1.5, 1.5, size=(2, 100))
    scales = np.array([1e6, 1e3, 1e-3])
    X = np.column_stack([np.sin(t1), np.cos(2 * t1), t2])
    X = (X + 0.01 * rng.randn(*X.shape)) * scales

    def relative_errors(model):
        X_hat = model.inverse_transform(model.transform(X))
        return np.mean((X - X_hat) ** 2, axis=0) / X.var(axis=0)

    gfe_params = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    raw = fit_quietly(GradientFlowEncoder(2, **gfe_params), X)
    scaled = fit_quietly(
        make_pipeline(StandardScaler(), GradientFlowEncoder(2, **gfe_params)), X
    )
    scaled_pca = make_pipeline(StandardScaler(), PCA(2)).fit(X)
    assert relative_errors(raw)[-1] > 0.5
    assert relative_errors(scaled)[-1] < 1.5 * relative_errors(scaled_pca)[-1]


# ------------------------------------------------------------ interrupted fits
@pytest.mark.parametrize("Estimator", [GradientFlowEncoder, Autoencoder])
@pytest.mark.parametrize("refit", [False, True])
def test_interrupt_while_building_the_optimiser_leaves_unfitted(
    Estimator, refit, monkeypatch
):
    # The first torch optimiser of a process imports torch._dynamo (seconds).
    X = curved_data()
    model = Estimator(n_components=2, hidden_layer_sizes=(8,), max_iter=2)
    if refit:
        fit_quietly(model, X)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skgfe._torch_estimator, "make_optimizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    monkeypatch.undo()
    assert fit_quietly(model, X).transform(X).shape == (len(X), 2)


def test_interrupt_at_the_first_step_keeps_a_usable_model(monkeypatch):
    class Interrupted(torch.optim.Adam):
        def step(self, closure=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(
        skgfe._torch_estimator,
        "make_optimizer",
        lambda name, params, lr: Interrupted(params),
    )
    X = curved_data()
    gfe = tiny_gfe()
    with pytest.warns(UserWarning, match="interrupted after 0 epochs"):
        gfe.fit(X)
    check_is_fitted(gfe)
    assert gfe.n_iter_ == 0
    assert np.all(np.isfinite(gfe.transform(X)))


# ------------------------------------------------- partial_fit's frozen scaling
def scaling_warnings(record):
    return [
        str(w.message) for w in record if "partial_fit block lies" in str(w.message)
    ]


@pytest.mark.parametrize("factor", [100.0, 0.001])
def test_partial_fit_warns_on_a_block_far_off_the_first(factor):
    X = curved_data(n_samples=60)
    first, later = X[:30], X[30:]
    gfe = tiny_gfe()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe.partial_fit(first)
        gfe.partial_fit(later)  # the same distribution: silent
        # A few samples can sit at the mean by chance.
        gfe.partial_fit(first.mean(axis=0, keepdims=True))
    assert gfe.scale_ == pytest.approx(np.sqrt(first.var(axis=0).mean()))
    spread_out = gfe.mean_ + (later - gfe.mean_) * factor
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gfe.partial_fit(spread_out)
    (message,) = scaling_warnings(record)
    assert "first partial_fit block represents all the data" in message


def test_partial_fit_warns_on_an_offset_block():
    X = curved_data(n_samples=60)
    gfe = tiny_gfe().partial_fit(X[:30])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gfe.partial_fit(X[30:] + 20 * gfe.scale_)
    assert len(scaling_warnings(record)) == 1
