"""Reliability of fitted models (issue 10).

Parameters fixed by fitting, warm starts that change the networks, the 'bce' range
at every entry point, overcomplete codes, and results that are never silently
non-finite.
"""

import contextlib
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

ESTIMATORS = [GradientFlowEncoder, Autoencoder, VariationalAutoencoder]
AUTOENCODERS = [Autoencoder, VariationalAutoencoder]

# Parameters that shape the networks of every estimator, and new values for them.
NETWORK_CHANGES = [
    {"n_components": 3},
    {"loss": "bce"},
    {"hidden_layer_sizes": (4,)},
    {"activation": "tanh"},
    {"architecture": "modified_mlp"},
]
# (estimator, parameters of the first fit, change of parameters).
CHANGES = [(cls, {}, change) for cls in ESTIMATORS for change in NETWORK_CHANGES] + [
    # Initial codes drawn with n_components columns.
    (GradientFlowEncoder, {"init": "zeros"}, {"n_components": 3}),
    # 'auto' init follows the decoder's initialisation.
    (GradientFlowEncoder, {}, {"decoder_init": "random"}),
    (Autoencoder, {}, {"code_activation": "sigmoid"}),
]


def change_id(case):
    cls, fit_params, change = case
    return "-".join([cls.__name__, *map(str, fit_params.values()), *change])


# Few epochs on purpose: reaching max_iter is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def X():
    # In [0, 1], so valid for both losses.
    return load_digits().data[:80] / 16


def small(cls, **params):
    defaults = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    return cls(**{**defaults, **params})


@pytest.fixture(scope="module")
def fitted(X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {cls: small(cls).fit(X) for cls in ESTIMATORS}


@contextlib.contextmanager
def no_user_warning():
    """Make a UserWarning (other than a ConvergenceWarning) an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# ------------------------------------------------- parameters fixed by fitting


@pytest.mark.parametrize(
    "cls, fit_params, change", CHANGES, ids=[change_id(c) for c in CHANGES]
)
def test_set_params_after_fit_keeps_the_fitted_model(cls, fit_params, change, X):
    model = small(cls, **fit_params).fit(X)
    Z = model.transform(X[:10])
    X_hat = model.inverse_transform(Z)
    scores = model.score_samples(X[:10])
    names = model.get_feature_names_out()
    model.set_params(**change)
    assert model.n_components_ == 2
    np.testing.assert_array_equal(model.transform(X[:10]), Z)
    np.testing.assert_array_equal(model.inverse_transform(Z), X_hat)
    np.testing.assert_array_equal(model.score_samples(X[:10]), scores)
    np.testing.assert_array_equal(model.get_feature_names_out(), names)
    assert len(names) == Z.shape[1]


# ------------------------------------------------------------- warm starts

WARM_CHANGES = [(cls, change) for cls, fit_params, change in CHANGES if not fit_params]


@pytest.mark.parametrize(
    "cls, change", WARM_CHANGES, ids=[change_id((c, {}, p)) for c, p in WARM_CHANGES]
)
def test_warm_start_with_changed_networks_trains_from_scratch(cls, change, X):
    model = small(cls, warm_start=True).fit(X)
    (name,) = change
    with pytest.warns(UserWarning, match=rf"changing {name} \(.*from scratch"):
        model.set_params(**change).fit(X)
    fresh = clone(model).set_params(warm_start=False).fit(X)
    assert model.n_iter_ == fresh.n_iter_
    assert model.decoder_.layer_sizes == fresh.decoder_.layer_sizes
    assert model.decoder_.activation == fresh.decoder_.activation
    assert type(model.decoder_) is type(fresh.decoder_)
    np.testing.assert_allclose(model.transform(X[:10]), fresh.transform(X[:10]))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_warm_start_without_changes_continues_training(cls, X):
    model = small(cls, warm_start=True, early_stopping=False, tol=0).fit(X)
    with no_user_warning():
        # The same sizes spelled differently are no change.
        model.set_params(hidden_layer_sizes=[8], max_iter=2).fit(X)
    assert model.n_iter_ == 3 + 2


@pytest.mark.parametrize(
    "cls, change", WARM_CHANGES, ids=[change_id((c, {}, p)) for c, p in WARM_CHANGES]
)
def test_partial_fit_refuses_changed_networks(cls, change, X):
    model = small(cls).partial_fit(X)
    Z = model.transform(X[:5])
    (name,) = change
    with pytest.raises(ValueError, match=rf"partial_fit cannot change {name} \("):
        model.set_params(**change).partial_fit(X)
    assert model.n_iter_ == 1
    np.testing.assert_array_equal(model.transform(X[:5]), Z)


# ------------------------------------------------------------ the bce range

BCE_METHODS = [
    (cls, method)
    for cls in ESTIMATORS
    for method in ("transform", "score", "score_samples", "partial_fit")
] + [(GradientFlowEncoder, "encode"), (VariationalAutoencoder, "elbo")]


@pytest.mark.parametrize(
    "cls, method", BCE_METHODS, ids=[f"{c.__name__}-{m}" for c, m in BCE_METHODS]
)
def test_bce_range_is_checked_at_every_entry_point(cls, method, X):
    model = small(cls, loss="bce").fit(X)
    match = r"loss='bce' needs data in \[0, 1\]"
    with pytest.raises(ValueError, match=match):
        getattr(model, method)(3 * X[:5])
    if method != "partial_fit":
        # The fitted loss decides, not a later set_params.
        model.set_params(loss="mse")
        with pytest.raises(ValueError, match=match):
            getattr(model, method)(3 * X[:5])


# -------------------------------------------------------- overcomplete codes


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_overcomplete_codes_warn_at_fit(cls):
    X3 = np.random.RandomState(0).rand(40, 3)
    match = r"n_components=5 exceeds the number of features \(3\).*overcomplete"
    with pytest.warns(UserWarning, match=match):
        model = small(cls, n_components=5).fit(X3)
    Z = model.transform(X3)
    assert Z.shape == (40, 5)
    assert model.inverse_transform(Z).shape == (40, 3)


@pytest.mark.parametrize(
    "model",
    [
        small(GradientFlowEncoder, n_components=3),
        small(VariationalAutoencoder, n_components=3),
        small(Autoencoder, n_components=5, sparsity=0.1),
        small(Autoencoder, n_components=5, noise="gaussian"),
    ],
    ids=["as-many-as-features", "vae-as-many", "sparse", "denoising"],
)
def test_no_overcomplete_warning_when_not_overcomplete_or_regularised(model):
    X3 = np.random.RandomState(0).rand(40, 3)
    with no_user_warning():
        model.fit(X3)


def test_pca_initialised_decoder_with_more_components_than_features_or_samples():
    X3 = np.random.RandomState(0).rand(40, 3)
    # More components than features: the linear path spans every feature (the
    # extra columns are zero), so the untrained decoder reconstructs exactly.
    with pytest.warns(UserWarning, match="overcomplete"):
        gfe = small(GradientFlowEncoder, n_components=5).fit(X3)
    np.testing.assert_allclose(gfe.inverse_transform(gfe.transform(X3)), X3, atol=1e-8)
    # More components than samples: as many axes as the samples span.
    gfe = small(GradientFlowEncoder, n_components=3).fit(X3[:2])
    Z = gfe.transform(X3[:2])
    assert np.all(np.isfinite(Z))
    np.testing.assert_allclose(gfe.inverse_transform(Z), X3[:2], atol=1e-8)


# --------------------------------------------------------- non-finite results


def with_nan_weights(model, network):
    broken = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        getattr(broken, network).layers[-1].weight.fill_(float("nan"))
    return broken


NAN_CASES = (
    [
        (cls, "decoder_", method)
        for cls in ESTIMATORS
        for method in ("inverse_transform", "score_samples", "score")
    ]
    + [(GradientFlowEncoder, "decoder_", m) for m in ("transform", "encode")]
    + [
        (cls, "encoder_", method)
        for cls in AUTOENCODERS
        for method in ("transform", "score_samples", "score")
    ]
    + [
        (VariationalAutoencoder, network, "elbo")
        for network in ("encoder_", "decoder_")
    ]
)


@pytest.mark.parametrize(
    "cls, network, method",
    NAN_CASES,
    ids=[f"{c.__name__}-{n}-{m}" for c, n, m in NAN_CASES],
)
def test_non_finite_weights_raise_a_clear_error(cls, network, method, fitted, X):
    model = with_nan_weights(fitted[cls], network)
    inputs = np.zeros((5, 2)) if method == "inverse_transform" else X[:5]
    match = r"not finite for 5 of 5 (samples|codes): the model's weights are not finite"
    with pytest.raises(FloatingPointError, match=match):
        getattr(model, method)(inputs)


OVERFLOW_CASES = [
    (cls, method) for cls in ESTIMATORS for method in ("transform", "score_samples")
] + [(GradientFlowEncoder, "encode"), (VariationalAutoencoder, "elbo")]


@pytest.mark.parametrize(
    "cls, method",
    OVERFLOW_CASES,
    ids=[f"{c.__name__}-{m}" for c, m in OVERFLOW_CASES],
)
def test_inputs_that_overflow_float32_raise_a_clear_error(cls, method):
    # A float32 model of data of scale ~1e-4: a finite float32 input of 3e38 is far
    # outside that range and overflows once scaled.
    X32 = (load_digits().data[:80] / 16e3).astype(np.float32)
    model = small(cls).fit(X32)
    X_new = X32[:4].copy()
    X_new[[1, 3]] = 3e38
    match = r"not finite for 2 of 4 samples: the samples lie so far outside.*float32"
    with pytest.raises(FloatingPointError, match=match):
        getattr(model, method)(X_new)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_codes_that_overflow_float32_raise_a_clear_error(cls):
    # A float32 model of data of scale ~1e4: decoding codes of 3e38 overflows.
    X32 = (load_digits().data[:80] * 1e3).astype(np.float32)
    model = small(cls).fit(X32)
    Z = model.transform(X32[:2])
    assert np.all(np.isfinite(model.inverse_transform(Z)))
    extreme = 3e38 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    codes = np.vstack([Z, extreme]).astype(np.float32)
    match = r"not finite for [1-4] of 6 codes: the codes lie so far outside.*float32"
    with pytest.raises(FloatingPointError, match=match):
        model.inverse_transform(codes)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_early_stopping_without_room_for_a_validation_split_says_so(cls, X):
    # validation_fraction=0.9 of 3 samples holds out all 3: training monitors
    # the training loss, as without early stopping, and says so.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match="holds out all 3 training samples"):
            model = small(cls, validation_fraction=0.9).fit(X[:3])
        quiet = small(cls, validation_fraction=0.5).fit(X[:3])
    assert model.validation_scores_ == [] and model.best_validation_score_ is None
    assert len(quiet.validation_scores_) > 0
