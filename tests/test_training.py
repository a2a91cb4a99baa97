"""The shared training loop, driven by a scripted stand-in estimator."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skgfe._training import (
    EMA_WARMUP,
    LEARNING_RATE_RETRIES,
    LEARNING_RATE_RETRY_FACTOR,
    MIN_STEPS_PER_CHECK,
    MIN_TRAINING_STEPS,
    MIN_WINDOW_IMPROVEMENT,
    epochs_per_check,
    run_epochs,
)


@pytest.fixture(autouse=True)
def no_step_floor(monkeypatch):
    """The scripted tests count plateaus in a few steps: no floor of steps
    (its own tests set one)."""
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 0)


class ScriptedEstimator:
    """One weight ``w``; the loss of the weights after k epochs is ``losses[k]``.

    Every minibatch of epoch k (which starts from the weights of k epochs) has
    the loss ``losses[k] * (1 + w - w.detach())``: its value is scripted and its
    gradient (``losses[k]``) moves ``w`` by ``-losses[k]`` under SGD(lr=1), so the
    weight at the end of each epoch is known in closed form. With
    ``batch_size=1`` an epoch over ``n`` rows makes ``n`` steps. A check without
    validation measures the current weights: ``losses[n_iter_]`` (so ``losses``
    has one entry more than the epochs run). ``val_losses[j]`` is the validation
    loss of the j-th call of ``_validation_loss`` (the untrained model's first,
    then one per check). ``failures`` maps an epoch to what its first minibatch
    does instead: ``"nan"`` (a NaN loss) or ``"raise"`` (FloatingPointError).
    """

    def __init__(
        self,
        losses,
        val_losses=(),
        tol=1e-3,
        n_iter_no_change=100,
        batch_size=None,
        failures=None,
    ):
        self.losses = list(losses)
        self.val_losses = list(val_losses)
        self.batch_size = batch_size
        self.failures = failures or {}
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.module = torch.nn.ParameterList([self.weight])
        self._optimizer = self._make_optimizer()
        self.tol, self.n_iter_no_change, self.verbose = tol, n_iter_no_change, 0
        self.loss_curve_, self.validation_scores_ = [], []
        self.best_loss_, self.best_validation_score_ = np.inf, None
        self.n_iter_, self.t_, self._no_improvement_count = 0, 0, 0
        self.validation_calls, self.training_calls, self.rows_seen = 0, 0, []
        self.minibatch_rows = []

    def _make_optimizer(self):
        self.optimizers_made = getattr(self, "optimizers_made", 0) + 1
        return torch.optim.SGD([self.weight], lr=1.0)

    def _modules(self):
        return [self.module]

    def _effective_batch_size(self, n_samples):
        return n_samples if self.batch_size is None else self.batch_size

    def _batch_loss(self, X_batch, generator, rows=None):
        self.rows_seen.append(rows.tolist())
        self.minibatch_rows.append(rows.tolist())
        failure = self.failures.pop(self.n_iter_, None)
        if failure == "raise":
            raise FloatingPointError("not finite at the initial code")
        value = float("nan") if failure == "nan" else self.losses[self.n_iter_]
        w = self.weight
        return value * (1 + w - w.detach()), {}

    def _validation_loss(self, X_val):
        value = self.val_losses[self.validation_calls]
        self.validation_calls += 1
        return value

    def _training_loss(self, X_train):
        self.training_calls += 1
        return self.losses[self.n_iter_]

    def _reference_training_loss(self, X_train):
        # As GFE's: the starting weights' training objective.
        return self._training_loss(X_train)

    # run_epochs reads these directly since issue 21 (it probed them with
    # getattr before); TorchEstimatorMixin declares the hook with this default,
    # and every estimator has the parameter.
    weight_averaging = 0.0

    def _clip_gradients(self):
        pass

    def _prepare_minibatches(self, X_train, rows):
        self.rows_seen.append(("prepare", rows.tolist()))


def run(est, n_rows, n_epochs, X_val=None, keep_best=True):
    X = torch.zeros(n_rows, 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    return run_epochs(est, X, X_val, n_epochs, generator, keep_best=keep_best)


# Ten rows in minibatches of one: ten optimiser steps per epoch, so progress is
# checked after every epoch, and every epoch moves w by -10 * its loss.
EVERY_EPOCH = dict(n_rows=10)


def every_epoch(losses, **params):
    return ScriptedEstimator(losses, batch_size=1, **params)


def test_epochs_per_check():
    assert MIN_STEPS_PER_CHECK == 10
    assert epochs_per_check(1, 1) == 10  # one step per epoch
    assert epochs_per_check(10, 1) == 1
    assert epochs_per_check(100, 64) == 5  # two steps per epoch
    assert epochs_per_check(30, 4) == 2  # eight steps per epoch
    assert epochs_per_check(10_000, 64) == 1


def test_minibatches_are_prepared_in_groups_before_their_steps(monkeypatch):
    monkeypatch.setattr("skgfe._training.MINIBATCH_GROUP_ROWS", 3)
    est = every_epoch([1.0, 1.0, 1.0])
    run(est, 10, 2)
    # Per epoch: groups of 3, 3, 3 and 1 minibatches of one row, each
    # prepared (all its rows, in order) right before its steps.
    seen = est.rows_seen
    expected_sizes = [3, 3, 3, 1] * 2
    for size in expected_sizes:
        kind, prepared = seen[0]
        assert kind == "prepare" and len(prepared) == size
        assert seen[1 : 1 + size] == [[row] for row in prepared]
        seen = seen[1 + size :]
    assert seen == []


def test_rows_are_a_permutation_of_the_training_samples_each_epoch():
    est = every_epoch([1.0, 1.0, 1.0])
    run(est, 10, 2)
    rows_seen = est.minibatch_rows
    assert len(rows_seen) == 20 and all(len(r) == 1 for r in rows_seen)
    for epoch in range(2):
        rows = sum(rows_seen[10 * epoch : 10 * (epoch + 1)], [])
        assert sorted(rows) == list(range(10))
    # The fewest minibatches of at most batch_size, equal to within one sample
    # (no small last minibatch).
    for n_rows, batch_size, sizes in [
        (10, 4, [4, 3, 3]),
        (900, 64, [60] * 15),
        (1000, 64, [63] * 8 + [62] * 8),
        (25, 64, [25]),
        (128, 64, [64, 64]),
    ]:
        est = ScriptedEstimator([1.0, 1.0], batch_size=batch_size)
        run(est, n_rows, 1)
        assert [len(r) for r in est.minibatch_rows] == sizes
        assert sorted(sum(est.minibatch_rows, [])) == list(range(n_rows))


def test_best_measured_weights_are_kept_when_the_loss_jumps_up():
    losses = [3.0, 2.0, 1.0, 5.0, 6.0, 7.0]
    est = every_epoch(losses)
    outcome = run(est, **EVERY_EPOCH, n_epochs=5)
    assert not outcome.stopped_early and not outcome.kept_start
    assert est.loss_curve_ == losses[:5]
    # The starting weights and the weights after every epoch are measured.
    assert est.training_calls == 6
    # After epoch 2 the weights measure 1.0, the best: w = -10 * (3 + 2); the
    # later epochs are undone. The kept weights are those whose loss is
    # best_loss_, not one epoch further.
    assert est.weight.item() == -50.0
    assert est.best_loss_ == 1.0


def test_last_weights_are_kept_when_the_loss_keeps_falling():
    losses = [3.0, 2.0, 1.0, 0.5]
    est = every_epoch(losses)
    run(est, **EVERY_EPOCH, n_epochs=3)
    assert est.weight.item() == -60.0 and est.best_loss_ == 0.5


def test_starting_weights_are_kept_when_training_only_makes_them_worse():
    losses = [1.0, 5.0, 1e10, 1e20, 1e30]
    est = every_epoch(losses, n_iter_no_change=3)
    outcome = run(est, **EVERY_EPOCH, n_epochs=4)
    assert outcome.stopped_early and outcome.kept_start
    assert est.weight.item() == 0.0 and est.best_loss_ == 1.0


def test_no_plateau_stops_training_before_the_floor_of_steps(monkeypatch):
    # Ten steps an epoch, a floor of 45 steps: the plateau of epochs 2 and 3
    # (patience 2) does not stop training; the first check once 45 steps are
    # made (after epoch 5) does, and the big drop of epoch 5 is kept.
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 45)
    losses = [3.0, 2.0, 1.9, 1.85, 1.8, 1.0, 1.0, 1.0, 1.0, 1.0]
    est = every_epoch(losses, tol=0.1, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=9)
    assert outcome.stopped_early and outcome.reason == "plateau"
    assert est.n_iter_ == 7  # epoch 5 improved, epochs 6 and 7 did not
    assert est.best_loss_ == 1.0 and outcome.best_epoch == 5


def test_a_plateau_in_the_last_epoch_below_the_floor_is_a_plateau(monkeypatch):
    # The epoch budget ends training before the floor; a plateau at its end is
    # convergence, not "max_iter reached while improving".
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 1000)
    losses = [3.0, 2.0, 1.9, 1.85, 1.8]
    est = every_epoch(losses, tol=0.1, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=4)
    assert est.n_iter_ == 4
    assert outcome.stopped_early and outcome.reason == "plateau"


def test_default_fits_make_the_floor_of_steps(monkeypatch):
    # A real estimator with a plateau test that fires at once (tol=0.5,
    # patience 1) still trains MIN_TRAINING_STEPS optimiser steps: 180 training
    # samples in 3 minibatches an epoch, progress checked every 4 epochs.
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", MIN_TRAINING_STEPS)
    from skgfe import Autoencoder

    X = np.random.RandomState(0).randn(200, 4)
    est = Autoencoder(
        n_components=2,
        hidden_layer_sizes=(8,),
        tol=0.5,
        n_iter_no_change=1,
        max_iter=1000,
        random_state=0,
    ).fit(X)
    floor = -(-MIN_TRAINING_STEPS // 3)
    assert floor <= est.n_iter_ < floor + 4
    assert MIN_TRAINING_STEPS >= 500


def test_plateau_stops_training():
    # Relative tol=0.1: epoch 1 improves on 3 by a third; the next two checks
    # improve on the best by less than 10% (1.9 > 0.9 * 2, 1.85 > 0.9 * 1.9),
    # two checks without improvement, so training stops before the big drop.
    losses = [3.0, 2.0, 1.9, 1.85, 1.8, 1.0, 1.0]
    est = every_epoch(losses, tol=0.1, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=6)
    assert outcome.stopped_early
    assert est.n_iter_ == 3
    # A small gain does not reset the plateau count but its weights are kept.
    assert est.best_loss_ == 1.85
    assert est.weight.item() == pytest.approx(-10 * (3 + 2 + 1.9), abs=1e-12)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_plateau_test_is_relative_to_the_loss(scale):
    # The same training curve in other units stops at the same epoch.
    losses = [scale * v for v in (3.0, 2.0, 1.9, 1.85, 1.8, 1.0, 1.0)]
    est = every_epoch(losses, tol=0.1, n_iter_no_change=2)
    assert run(est, **EVERY_EPOCH, n_epochs=6).stopped_early
    assert est.n_iter_ == 3
    assert est.best_loss_ == pytest.approx(losses[3], rel=1e-12)


def test_tol_zero_counts_only_real_improvements():
    losses = [3.0, 2.0, 2.0, 2.0, 1.0, 1.0]
    est = every_epoch(losses, tol=0.0, n_iter_no_change=3)
    assert not run(est, **EVERY_EPOCH, n_epochs=5).stopped_early
    assert est.n_iter_ == 5 and est.best_loss_ == 1.0
    est = every_epoch(losses, tol=0.0, n_iter_no_change=2)
    assert run(est, **EVERY_EPOCH, n_epochs=5).stopped_early
    assert est.n_iter_ == 3


def test_one_step_per_epoch_checks_every_ten_epochs():
    # A single row: one optimiser step per epoch, so the loop checks every 10
    # epochs, and the last epoch of training is always checked.
    losses = [5.0] * 10 + [4.0] * 10 + [6.0] * 6
    est = ScriptedEstimator(losses)
    assert not run(est, 1, 25).stopped_early
    assert est.n_iter_ == 25 and est.loss_curve_ == losses[:25]
    # Measured: the start, then after epochs 10, 20 and 25.
    assert est.training_calls == 4
    assert est.best_loss_ == 4.0
    # The weights after epoch 10, the ones that measured 4.0.
    assert est.weight.item() == -sum(losses[:10])


def test_plateau_counts_checks_not_epochs():
    # n_iter_no_change=2 with one step per epoch: the check at epoch 10 is the
    # first trained one and sets the bar (the plateau test compares trained
    # checks with each other, not with the start); those at 20 and 30 do not
    # improve on it.
    losses = [1.0] * 101
    est = ScriptedEstimator(losses, n_iter_no_change=2)
    assert run(est, 1, 100).stopped_early
    assert est.n_iter_ == 30


def test_partial_fit_plateaus_average_noisy_epochs_and_keep_the_weights():
    # Without keep_best (partial_fit) a check averages the epoch losses since
    # the previous one. Epoch losses that zig-zag but fall on average over every
    # window of 10 epochs: a per-epoch plateau test with n_iter_no_change=2
    # would stop at epoch 3; the check over the windows' means does not.
    noise = [0.0, 0.5] * 5
    losses = [10.0 - window + e for window in range(4) for e in noise]
    est = ScriptedEstimator(losses, tol=1e-3, n_iter_no_change=2)
    outcome = run(est, 1, len(losses), keep_best=False)
    assert not outcome.stopped_early and est.n_iter_ == 40
    assert est.best_loss_ == pytest.approx(7.25)
    assert est.training_calls == 0  # nothing is measured
    # No weights are restored: successive partial_fit calls see other data.
    assert est.weight.item() == -sum(losses)


# -------------------------------------------------------------- divergence


@pytest.mark.parametrize("failure", ["nan", "raise"])
def test_diverging_minibatch_restores_the_best_measured_weights(failure):
    losses = [3.0, 2.0, 1.0, 1.5, 1.2, 1.1]
    est = every_epoch(losses, failures={4: failure})
    with pytest.warns(ConvergenceWarning, match="best weights measured so far"):
        outcome = run(est, **EVERY_EPOCH, n_epochs=5)
    assert outcome.diverged and not outcome.stopped_early
    assert est.n_iter_ == 4
    # After epoch 2 (loss 1.0), not the weights of epoch 4 that led to the NaN.
    assert est.weight.item() == -50.0
    # The optimiser is rebuilt: its state has seen the overflow too.
    assert est.optimizers_made == 2


def test_divergence_before_any_check_restores_the_starting_weights():
    est = ScriptedEstimator([1.0] * 30, failures={5: "nan"})
    with pytest.warns(ConvergenceWarning, match="weights it started from"):
        outcome = run(est, 1, 25)
    assert outcome.diverged and outcome.kept_start
    assert est.weight.item() == 0.0


def test_non_finite_check_counts_as_divergence():
    losses = [3.0, 2.0, float("inf"), 1.0]
    est = every_epoch(losses)
    with pytest.warns(ConvergenceWarning, match="became inf"):
        outcome = run(est, **EVERY_EPOCH, n_epochs=3)
    assert outcome.diverged and est.n_iter_ == 2
    assert est.weight.item() == -30.0 and est.best_loss_ == 2.0


def test_divergence_in_partial_fit_restores_the_weights_it_started_from():
    est = every_epoch([1.0, 1.0], failures={0: "nan"})
    with pytest.warns(ConvergenceWarning, match="weights it started from"):
        assert run(est, **EVERY_EPOCH, n_epochs=1, keep_best=False).diverged
    assert est.weight.item() == 0.0


def test_starting_weights_with_a_non_finite_loss_are_refused():
    est = every_epoch([float("nan"), 1.0])
    with pytest.raises(FloatingPointError, match="starting weights"):
        run(est, **EVERY_EPOCH, n_epochs=1)


# ----------------------------------------------------------- early stopping


def test_validation_scores_are_kept_per_check():
    # One step per epoch: 25 epochs give checks at epochs 10, 20 and 25, each with
    # one validation score, after the untrained model's score.
    losses = [1.0] * 25
    est = ScriptedEstimator(losses, val_losses=[9.0, 5.0, 4.0, 6.0])
    assert not run(est, 1, len(losses), X_val=torch.zeros(1, 1)).stopped_early
    # One training objective: the starting weights', which a check must match.
    assert est.validation_calls == 4 and est.training_calls == 1
    assert est.validation_scores_ == [-5.0, -4.0, -6.0]
    assert est.best_validation_score_ == -4.0
    assert est.weight.item() == -20.0  # end of epoch 20, the best check


def test_untrained_model_is_kept_when_training_never_beats_it():
    losses = [1.0] * 10
    est = every_epoch(losses, val_losses=[1.0, 2.0, 3.0, 2.5, 2.2], n_iter_no_change=3)
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1))
    # Trained checks stop improving on the first one (2.0) after epoch 1.
    assert outcome.stopped_early and outcome.kept_start and est.n_iter_ == 4
    assert outcome.reason == "plateau" and outcome.best_epoch == 0
    assert est.validation_scores_ == [-2.0, -3.0, -2.5, -2.2]
    assert est.best_validation_score_ == -1.0
    # Restored to the untrained weights.
    assert est.weight.item() == 0.0


def test_best_validation_check_weights_are_kept():
    losses = [5.0, 4.0, 3.0, 2.0, 1.0]
    est = every_epoch(losses, val_losses=[5.0, 4.0, 2.0, 3.0, 2.5, 2.1])
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1))
    assert not outcome.stopped_early and not outcome.kept_start
    assert est.best_validation_score_ == -2.0
    assert max(est.validation_scores_) == -2.0
    # The validation loss, not the (still falling) training loss, decides: end
    # of epoch 2.
    assert est.weight.item() == -10 * (5.0 + 4.0)


def test_training_goes_on_while_it_improves_before_it_beats_the_start():
    # Adam's first steps move a decoder started at PCA's optimum away from it:
    # the first checks are worse than the start but improve on each other, and
    # training must go on until it passes the start, not stop on a plateau
    # measured against the start (which would keep PCA).
    losses = [1.0] + [0.5] * 9
    val_losses = [1.0, 3.0, 2.5, 2.0, 1.5, 1.2, 0.9, 0.8, 0.85, 0.9, 0.95]
    est = every_epoch(losses, val_losses=val_losses, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1))
    assert outcome.stopped_early and outcome.reason == "plateau"
    assert est.n_iter_ == 9 and not outcome.kept_start
    assert outcome.best_epoch == 7 and est.best_validation_score_ == -0.8
    assert est.weight.item() == -10 * sum(losses[:7])


def test_weights_that_fit_the_training_data_worse_than_the_start_are_no_candidate():
    # Epoch 1 fits the training data worse (2.0) than the starting weights (1.0):
    # its check has the lowest validation loss, but the weights of a later check
    # are kept. For the plateau test it was progress (the first trained check);
    # the three after the kept one were not.
    losses = [1.0, 2.0, 0.5, 0.5, 0.5]
    est = every_epoch(losses, val_losses=[5.0, 4.0, 2.0, 3.0, 3.5, 4.5])
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1))
    assert not outcome.kept_start
    assert est.validation_scores_ == [-4.0, -2.0, -3.0, -3.5, -4.5]
    assert est.best_validation_score_ == -3.0
    assert est.weight.item() == -10 * (1.0 + 2.0 + 0.5)
    assert est._no_improvement_count == 3
    # A start that nothing matches on the training data is kept.
    est = every_epoch([1.0, 2.0, 3.0], val_losses=[5.0, 6.0, 1.0, 1.0])
    outcome = run(est, **EVERY_EPOCH, n_epochs=3, X_val=torch.zeros(1, 1))
    assert outcome.kept_start and est.weight.item() == 0.0
    assert est.best_validation_score_ == -5.0


def test_validation_plateau_is_relative():
    # 1.9 is not below (1 - 0.1) * 2: no improvement, though its weights are kept.
    losses = [1.0] * 5
    est = every_epoch(
        losses, val_losses=[3.0, 2.0, 1.9, 1.85, 1.0], tol=0.1, n_iter_no_change=2
    )
    assert run(
        est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1)
    ).stopped_early
    assert est.n_iter_ == 3
    assert est.best_validation_score_ == -1.85
    assert est.weight.item() == -30.0


# ------------------------------------------------- the estimators' fallback


@pytest.mark.parametrize("cls_name", ["GradientFlowEncoder", "Autoencoder", "VAE"])
def test_fit_on_one_sample_raises_and_two_samples_hold_one_out(cls_name):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

    cls = {
        "GradientFlowEncoder": GradientFlowEncoder,
        "Autoencoder": Autoencoder,
        "VAE": VariationalAutoencoder,
    }[cls_name]
    X = np.random.default_rng(0).normal(size=(5, 4))
    model = cls(n_components=2, hidden_layer_sizes=(4,), max_iter=12, random_state=0)
    assert model.early_stopping
    # One sample has nothing to learn from and nothing to hold out (PCA raises
    # too); partial_fit still takes single samples of a stream.
    with pytest.raises(ValueError, match="n_samples=1 while a minimum of 2"):
        model.fit(X[:1])
    assert not hasattr(model, "decoder_")
    model.partial_fit(X[:1])
    assert np.all(np.isfinite(model.transform(X)))
    # Two samples: one is held out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[:2])
    assert len(model.validation_scores_) >= 1
    assert model.best_validation_score_ >= max(model.validation_scores_)


# ------------------------------------------------- diverging and exploding fits


def _estimator(cls_name, **params):
    from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

    cls = {
        "GradientFlowEncoder": GradientFlowEncoder,
        "Autoencoder": Autoencoder,
        "VAE": VariationalAutoencoder,
    }[cls_name]
    return cls(n_components=4, hidden_layer_sizes=(16,), random_state=0, **params)


ESTIMATOR_NAMES = ["GradientFlowEncoder", "Autoencoder", "VAE"]


def _all_weights_finite(model):
    return all(
        torch.isfinite(p).all() for m in model._modules() for p in m.parameters()
    )


@pytest.mark.parametrize("cls_name", ESTIMATOR_NAMES)
def test_diverging_fit_warns_and_leaves_a_usable_model(cls_name, digits_split):
    # An absurd learning rate overflows float32 weights in the first steps. The
    # fit must warn, restore weights that work, and let transform run (for GFE
    # the flow used to raise inside fit and leave the overflowed weights).
    import warnings

    X_pool, X_test = digits_split
    X = X_pool[:200].astype(np.float32)
    model = _estimator(cls_name, learning_rate_init=1e30, max_iter=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert any("training stopped" in m and "restored" in m for m in messages)
    assert _all_weights_finite(model)
    Z = model.transform(X_test.astype(np.float32))
    assert np.all(np.isfinite(Z))
    assert np.all(np.isfinite(model.inverse_transform(Z)))
    # The restored model is the starting one or a measured one: no worse than
    # twice the variance of the data (a NaN-producing model fails this).
    assert -model.score(X_test) < 2 * X_test.var(axis=0).sum()
    # And it can be trained further.
    model.set_params(learning_rate_init=1e-3, warm_start=True, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert _all_weights_finite(model)


@pytest.mark.parametrize("cls_name", ESTIMATOR_NAMES)
def test_exploding_loss_keeps_the_best_measured_weights(cls_name, digits_split):
    # learning_rate_init=1e6 in float64: the loss grows by orders of magnitude
    # without overflowing. The kept weights are the best measured ones.
    import warnings

    X_pool, X_test = digits_split
    X = X_pool[:100]
    for early_stopping in (True, False):
        model = _estimator(
            cls_name,
            learning_rate_init=1e6,
            max_iter=30,
            early_stopping=early_stopping,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X)
        X_t = model._scale(model._to_tensor(X))
        kept = model._training_loss(X_t)
        # (The VAE's loss overflows in its first epoch: that is the diverging
        # case above, with the starting weights restored.)
        assert max(model.loss_curve_, default=np.inf) > 1e6 * kept
        # The data are scaled to unit mean variance: a model that outputs the
        # mean scores 1; the starting models are within a few times that.
        assert kept <= 5.0
        Z = model.transform(X_test)
        assert np.all(np.isfinite(Z)) and np.abs(Z).max() > 0


@pytest.mark.parametrize("cls_name", ESTIMATOR_NAMES)
def test_best_loss_is_the_training_loss_of_the_kept_weights(cls_name, digits_split):
    # Without early stopping, best_loss_ used to be the mean of minibatch losses
    # taken before each step, while the snapshot was taken after the steps: the
    # Autoencoder at learning_rate_init=0.3 reported 1.07 for a model whose
    # training loss was 19.4. Each check now measures the weights it keeps.
    import warnings

    X = digits_split[0][:100]
    model = _estimator(
        cls_name, learning_rate_init=0.3, max_iter=40, early_stopping=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    measured = model._training_loss(model._scale(model._to_tensor(X)))
    # GFE measures with the warm-started training codes during the fit and from
    # the initial codes here: stationary codes to within flow_tol either way.
    rtol = 1e-3 if cls_name == "GradientFlowEncoder" else 1e-9
    assert measured == pytest.approx(model.best_loss_, rel=rtol)


# ------------------------------------------------------- weight averaging


class RecordingEstimator(ScriptedEstimator):
    """Records the weight every minibatch starts from and every check measures."""

    def __init__(self, *args, weight_averaging=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_averaging = weight_averaging
        self.stepped_from, self.measured = [], []

    def _batch_loss(self, X_batch, generator, rows=None):
        self.stepped_from.append(self.weight.item())
        return super()._batch_loss(X_batch, generator, rows=rows)

    def _validation_loss(self, X_val):
        self.measured.append(self.weight.item())
        return super()._validation_loss(X_val)


def exponential_average(iterates, decay):
    """The reference: the first iterate, then d * average + (1 - d) * w, with d
    warming up as min(decay, (1 + t) / (EMA_WARMUP + t)) over the t iterates
    averaged so far."""
    average = iterates[0]
    for t, w in enumerate(iterates[1:], start=1):
        d = min(decay, (1 + t) / (EMA_WARMUP + t))
        average = d * average + (1 - d) * w
    return average


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.99])
def test_checks_measure_and_keep_the_averaged_weights(decay):
    # Ten SGD steps per epoch, each moving w by -1: w after step j is -j. The
    # validation loss falls at every check, so the last check's weights are kept.
    est = RecordingEstimator(
        [1.0] * 3, val_losses=[4.0, 3.0, 2.0, 1.0], batch_size=1, weight_averaging=decay
    )
    run(est, **EVERY_EPOCH, n_epochs=3, X_val=torch.zeros(1, 1))
    iterates = [-float(j) for j in range(1, 31)]
    expected = [0.0] + [exponential_average(iterates[:j], decay) for j in (10, 20, 30)]
    assert est.measured == pytest.approx(expected, rel=1e-12)
    # Training steps from its own weights, not from the averages it measures.
    assert est.stepped_from == [-float(j) for j in range(30)]
    assert est.weight.item() == pytest.approx(expected[-1], rel=1e-12)


def test_averaged_weights_of_the_best_check_are_kept():
    est = RecordingEstimator(
        [1.0] * 3, val_losses=[4.0, 1.0, 2.0, 3.0], batch_size=1, weight_averaging=0.9
    )
    run(est, **EVERY_EPOCH, n_epochs=3, X_val=torch.zeros(1, 1))
    assert est.weight.item() == pytest.approx(est.measured[1], rel=1e-12)
    assert est.measured[1] != -10.0  # an average, not the weights of step 10


def test_no_averaging_at_zero_and_in_partial_fit():
    for decay, keep_best in [(0.0, True), (0.9, False)]:
        est = RecordingEstimator(
            [1.0] * 3,
            val_losses=[4.0, 3.0, 2.0, 1.0],
            batch_size=1,
            weight_averaging=decay,
        )
        run(
            est, **EVERY_EPOCH, n_epochs=3, X_val=torch.zeros(1, 1), keep_best=keep_best
        )
        if keep_best:
            assert est.measured == [0.0, -10.0, -20.0, -30.0]
        assert est.weight.item() == -30.0


@pytest.mark.parametrize("cls_name", ESTIMATOR_NAMES)
@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_weight_averaging_outside_zero_to_one_is_refused(cls_name, decay):
    model = _estimator(cls_name, weight_averaging=decay, max_iter=1)
    with pytest.raises(ValueError, match="weight_averaging"):
        model.fit(np.zeros((10, 5)))


class StartFittedBetter(ScriptedEstimator):
    """A start whose training objective (the reference) is 1.0."""

    def _reference_training_loss(self, X_train):
        return 1.0


RETRY = dict(batch_size=1, n_iter_no_change=2)


def test_start_never_fitted_better_is_retried_at_lower_learning_rates():
    # The training loss (2.0) never falls below the start's (1.0) and no check
    # beats the start's validation loss: a step size too large for this start.
    # Each plateau restarts from the start weights with a fresh optimiser at a
    # third of the learning rate, twice; the third plateau ends training.
    est = StartFittedBetter([2.0] * 13, val_losses=[1.0] + [2.0] * 12, **RETRY)
    outcome = run(est, **EVERY_EPOCH, n_epochs=12, X_val=torch.zeros(1, 1))
    assert outcome.reason == "plateau" and outcome.kept_start
    assert est.n_iter_ == 3 * 3
    assert est.optimizers_made == 1 + LEARNING_RATE_RETRIES
    lr = est._optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(LEARNING_RATE_RETRY_FACTOR**-LEARNING_RATE_RETRIES)
    assert est.weight.item() == 0.0


def test_retry_trains_from_the_start_at_the_lower_learning_rate():
    # After the first plateau (epochs 1-3), epoch 4 starts again from w = 0 at a
    # third of the rate and its check beats the start: its weights are kept.
    losses = [2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    val_losses = [1.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5]
    est = StartFittedBetter(losses, val_losses=val_losses, **RETRY)
    outcome = run(est, **EVERY_EPOCH, n_epochs=7, X_val=torch.zeros(1, 1))
    assert not outcome.kept_start and outcome.best_epoch == 4
    assert est.weight.item() == pytest.approx(-10 * 0.5 / LEARNING_RATE_RETRY_FACTOR)


def test_no_retry_when_training_fitted_better_than_the_start():
    # The training loss fell below the start's (overfitting, not a step size
    # too large): the plateau that kept the start ends training.
    est = StartFittedBetter([0.5] * 10, val_losses=[1.0] + [2.0] * 9, **RETRY)
    outcome = run(est, **EVERY_EPOCH, n_epochs=9, X_val=torch.zeros(1, 1))
    assert outcome.kept_start and est.n_iter_ == 3 and est.optimizers_made == 1


def _staircase(drop, n_stairs, width=3, tail=40):
    """A loss that holds each value for ``width`` epochs, then falls by ``drop``
    (relative), ``n_stairs`` times, then stays flat for ``tail`` epochs."""
    values = [1.0 * (1 - drop) ** i for i in range(n_stairs) for _ in range(width)]
    return [2.0] + values + [values[-1]] * tail


def test_a_slow_descent_goes_on_past_a_plateau_of_the_patience(monkeypatch):
    # Patience 2 with a window of 5 * 2 = 10 checks, tol 0.01 (a window
    # improvement of at least 10 * tol = 10%), and a floor of 150 steps (15
    # epochs) so that the window is full at the first plateau the floor lets
    # count. Each stair holds 3 checks: the plateau test alone stops at epoch
    # 15; but the window's best (0.95**4, epochs 13-15) is 14% below the best
    # before it (0.95, epochs 4-5), and training goes on to the last stair
    # (0.95**7 from epoch 22). It stops at epoch 26, the first plateau whose
    # window (epochs 17-26) is less than 10% below the best before it: 0.95**5
    # at epoch 16, 0.95**2 = 9.75% above 0.95**7.
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 150)
    losses = _staircase(0.05, n_stairs=8)
    est = every_epoch(losses, tol=0.01, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses) - 1)
    assert outcome.stopped_early and outcome.reason == "plateau"
    assert est.best_loss_ == pytest.approx(0.95**7)
    assert outcome.best_epoch == 22
    assert est.n_iter_ == 26
    # Without the window the same loss stops at the floor's first plateau.
    monkeypatch.setattr("skgfe._training.PROGRESS_WINDOW_FACTOR", 10**6)
    est = every_epoch(losses, tol=0.01, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses) - 1)
    assert est.n_iter_ == 15 and est.best_loss_ == pytest.approx(0.95**4)


@pytest.mark.parametrize(
    "drop, tol, stop",
    [
        # 3% a stair: the window's 8.7% is below 10 * tol = 10%, it stops at
        # the first plateau; with the default tol the 2% floor of the window
        # improvement lets it go on to the flat tail.
        (0.03, 0.01, 15),
        (0.03, 1e-4, 32),
        # 0.5% a stair: the window's 1.5% is above 10 * tol = 0.1% but below
        # the 2% floor (MIN_WINDOW_IMPROVEMENT): it stops at the first plateau.
        (0.005, 1e-4, 15),
    ],
)
def test_a_descent_slower_than_the_window_improvement_stops(
    monkeypatch, drop, tol, stop
):
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 150)
    assert MIN_WINDOW_IMPROVEMENT == 0.02
    losses = _staircase(drop, n_stairs=8)
    est = every_epoch(losses, tol=tol, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses) - 1)
    assert outcome.stopped_early and outcome.reason == "plateau"
    assert est.n_iter_ == stop


def test_a_start_never_fitted_better_is_retried_before_the_window_goes_on(
    monkeypatch,
):
    # The validation loss falls in stairs (the window alone would go on at
    # epoch 15), but the training loss (2.0) never falls below the start's
    # (1.0): the plateau at the floor retries at a lower learning rate first,
    # and the retry starts a new window.
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 150)
    val_losses = [0.5] + _staircase(0.05, n_stairs=8)[1:]
    est = StartFittedBetter([2.0] * 30, val_losses=val_losses, **RETRY, tol=0.01)
    run(est, **EVERY_EPOCH, n_epochs=16, X_val=torch.zeros(1, 1))
    assert est.optimizers_made == 2
    lr = est._optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(1 / LEARNING_RATE_RETRY_FACTOR)


def test_partial_fit_does_not_use_the_window(monkeypatch):
    # Without keep_best the plateau test of the mean minibatch loss alone ends
    # training (epoch k steps on losses[k - 1]: 2.0, then the first stair's
    # 1.0 three times), however steep the window's descent; nor is there a
    # floor of steps.
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 150)
    losses = _staircase(0.05, n_stairs=8)
    est = every_epoch(losses, tol=0.01, n_iter_no_change=2)
    outcome = run(est, **EVERY_EPOCH, n_epochs=len(losses) - 1, keep_best=False)
    assert outcome.stopped_early and est.n_iter_ == 4
