"""Small helpers shared by several test modules."""

import pickle


def variant(estimator, **params):
    """An independent copy of a fitted ``estimator`` with ``params`` changed."""
    return pickle.loads(pickle.dumps(estimator)).set_params(**params)


def skip_training(*args, **kwargs):
    """Stand-in for ``run_epochs`` that trains nothing (to look at initial models)."""
    from skgfe._training import TrainingOutcome

    return TrainingOutcome(stopped_early=True)
