"""scikit-learn's callback API (scikit-learn >= 1.9): fit reports its epochs."""

import warnings

import numpy as np
import pytest
from _helpers import fit_quietly, variant
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

callback = pytest.importorskip("sklearn.callback")

ESTIMATORS = [GradientFlowEncoder, Autoencoder, VariationalAutoencoder]


class Recorder:
    """A FitCallback that records every hook, and can stop after an epoch."""

    def __init__(self, stop_after=None, snapshot=False):
        self.stop_after = stop_after
        self.snapshot = snapshot
        self.events = []
        self.epoch_losses = []
        self.snapshots = []

    def setup(self, estimator, context):
        self.events.append(("setup", context.task_name))

    def teardown(self, estimator, context):
        self.events.append(("teardown", context.task_name))

    def on_fit_task_begin(self, estimator, context, *, metadata=None):
        self.events.append(("begin", context.task_name))

    def on_fit_task_end(
        self, estimator, context, *, metadata=None, fitted_estimator=None
    ):
        self.events.append(("end", context.task_name))
        if context.task_name != "epoch":
            return False
        self.epoch_losses.append(metadata["loss"])
        if self.snapshot:
            self.snapshots.append(fitted_estimator)
        return self.stop_after is not None and len(self.epoch_losses) >= self.stop_after


def small(cls, **params):
    return cls(n_components=2, hidden_layer_sizes=(8,), random_state=0, **params)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(60, 5))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_fit_reports_one_task_per_epoch(cls, X):
    recorder = Recorder()
    model = small(cls, max_iter=7, early_stopping=False).set_callbacks(recorder)
    fit_quietly(model, X)
    assert recorder.events[0] == ("setup", "fit")
    assert recorder.events[1] == ("begin", "fit")
    assert recorder.events[-2:] == [("end", "fit"), ("teardown", "fit")]
    epochs = recorder.events[2:-2]
    assert epochs == [("begin", "epoch"), ("end", "epoch")] * model.n_iter_
    assert model.n_iter_ == 7
    assert recorder.epoch_losses == model.loss_curve_


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_callback_can_stop_training(cls, X):
    recorder = Recorder(stop_after=3)
    model = small(cls, max_iter=50).set_callbacks(recorder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # not "max_iter reached"
        model.fit(X)
    assert model.n_iter_ == 3 and len(model.loss_curve_) == 3


def test_fitted_estimator_of_an_epoch_is_a_usable_snapshot(X):
    recorder = Recorder(snapshot=True)
    model = small(GradientFlowEncoder, max_iter=3, early_stopping=False)
    fit_quietly(model.set_callbacks(recorder), X)
    first, last = recorder.snapshots[0], recorder.snapshots[-1]
    # Copies of the modules: training went on after the first snapshot.
    assert first.decoder_ is not model.decoder_
    assert not np.array_equal(first.transform(X), last.transform(X))
    # The last epoch's decoder is the fitted one; the start encoder and the
    # kept training codes are fitted after the last epoch, so the snapshot
    # starts its solves from the linear code.
    assert last._start_encoder is None and last._neighbour_codes is None
    linear = variant(model, init="linear")
    np.testing.assert_array_equal(last.transform(X), linear.transform(X))


def test_progress_bar_follows_gfe_inside_a_pipeline(X, capsys):
    pytest.importorskip("rich")
    pipeline = make_pipeline(StandardScaler(), small(GradientFlowEncoder, max_iter=4))
    pipeline.set_callbacks(callback.ProgressBar())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # scikit-learn warns about steps that do not support callbacks.
        warnings.filterwarnings("error", ".*callback.*")
        pipeline.fit(X)
    assert pipeline[-1].n_iter_ >= 1


def test_callbacks_survive_clone_and_pickle(X):
    import pickle

    from sklearn.base import clone

    recorder = Recorder()
    model = small(Autoencoder, max_iter=2).set_callbacks(recorder)
    assert clone(model)._skl_callbacks[0] is recorder
    fit_quietly(model, X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.transform(X), model.transform(X))


def test_pickling_during_training_leaves_the_live_model_intact(X):
    # copy.copy (how scikit-learn builds a callback's fitted_estimator) and
    # pickle go through __getstate__, which used to pop the optimiser from the
    # live model's own __dict__.
    import copy
    import pickle

    model = fit_quietly(small(GradientFlowEncoder, max_iter=2), X)
    optimizer, decoder = model._optimizer, model.decoder_
    pickle.dumps(model)
    copy.copy(model)
    assert model._optimizer is optimizer and model.decoder_ is decoder


def test_vae_dlm_reports_its_epochs_and_can_be_stopped():
    from skgfe import VAEDLMRegressor

    rng = np.random.default_rng(0)
    X = np.column_stack(
        [np.repeat(rng.normal(size=(10, 4)), 3, 0), np.tile([0, 1, 2], 10)]
    )
    y = X[:, :4] * np.exp(-X[:, -1:])
    recorder = Recorder()
    model = VAEDLMRegressor(
        n_components=2, hidden_layer_sizes=(8, 8), max_iter=4, early_stopping=False,
        random_state=0,
    ).set_callbacks(recorder)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert recorder.events[:2] == [("setup", "fit"), ("begin", "fit")]
    assert recorder.events[2:-2] == [("begin", "epoch"), ("end", "epoch")] * 4
    assert recorder.epoch_losses == model.loss_curve_
    stopper = Recorder(stop_after=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.set_params(max_iter=50).set_callbacks(stopper).fit(X, y)
    assert model.n_iter_ == 2
