"""Small helpers shared by several test modules."""

import pickle


def variant(estimator, **params):
    """An independent copy of a fitted ``estimator`` with ``params`` changed."""
    return pickle.loads(pickle.dumps(estimator)).set_params(**params)


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
