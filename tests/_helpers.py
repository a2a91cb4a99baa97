"""Small helpers shared by several test modules."""

import pickle
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning


def variant(estimator, **params):
    """An independent copy of a fitted ``estimator`` with ``params`` changed."""
    return pickle.loads(pickle.dumps(estimator)).set_params(**params)


def fit_quietly(model, X):
    """``model.fit(X)`` without its ConvergenceWarning (short test fits)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def assert_codes_do_not_depend_on_the_batch(model, X):
    """``model``'s codes of ``X`` are the same alone, in a batch and shuffled.

    A row that moves within its row block can get a gradient that differs in
    the last bit (see skgfe._flow.derivatives); the solver carries that
    rounding, relative to the size of the codes, and nothing more.
    """
    Z_batch = model.transform(X)
    Z_single = np.vstack([model.transform(X[i : i + 1]) for i in range(len(X))])
    order = np.random.RandomState(0).permutation(len(X))
    Z_shuffled = model.transform(X[order])
    scale = max(1.0, np.abs(Z_batch).max())
    atol = (1e-12 if X.dtype == np.float64 else 1e-6) * scale
    np.testing.assert_allclose(Z_single, Z_batch, rtol=0, atol=atol)
    np.testing.assert_allclose(Z_shuffled, Z_batch[order], rtol=0, atol=atol)


def skip_training(*args, **kwargs):
    """Stand-in for ``run_epochs`` that trains nothing (to look at initial models)."""
    from skgfe._training import TrainingOutcome

    return TrainingOutcome(stopped_early=True)


def adaptive_solver_gfe(solver):
    """A small GradientFlowEncoder whose flow runs on the adaptive ``solver``.

    A random decoder and flows from z = 0, so that the checks see the solver at
    work rather than a PCA start that is already stationary.
    """
    from skgfe import GradientFlowEncoder

    return GradientFlowEncoder(
        n_components=2,
        hidden_layer_sizes=(8,),
        solver=solver,
        rtol=1e-3,
        atol=1e-5,
        max_iter=2,
        flow_tol=1e-2,
        random_state=0,
        decoder_init="random",
        init="zeros",
        early_stopping=False,
    )
