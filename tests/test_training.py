"""The shared training loop, driven by a scripted stand-in estimator."""

import numpy as np
import pytest
import torch

from skgfe._training import MIN_STEPS_PER_CHECK, epochs_per_check, run_epochs


class ScriptedEstimator:
    """One weight ``w``; the training loss of epoch k is ``losses[k]``.

    Every minibatch of epoch k has the loss ``losses[k] * (1 + w - w.detach())``:
    its value is scripted and its gradient (``losses[k]``) moves ``w`` by
    ``-losses[k]`` under SGD(lr=1), so the weight at the end of each epoch is
    known in closed form. With ``batch_size=1`` an epoch over ``n`` rows makes
    ``n`` steps. ``val_losses[j]`` is the validation loss of the j-th call of
    ``_validation_loss`` (the untrained model's first, then one per check).
    """

    def __init__(
        self, losses, val_losses=(), tol=1e-3, n_iter_no_change=100, batch_size=None
    ):
        self.losses = list(losses)
        self.val_losses = list(val_losses)
        self.batch_size = batch_size
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.module = torch.nn.ParameterList([self.weight])
        self._optimizer = torch.optim.SGD([self.weight], lr=1.0)
        self.tol, self.n_iter_no_change, self.verbose = tol, n_iter_no_change, 0
        self.loss_curve_, self.validation_scores_ = [], []
        self.best_loss_, self.best_validation_score_ = np.inf, None
        self.n_iter_, self.t_, self._no_improvement_count = 0, 0, 0
        self.validation_calls, self.rows_seen = 0, []

    def _modules(self):
        return [self.module]

    def _effective_batch_size(self, n_samples):
        return n_samples if self.batch_size is None else self.batch_size

    def _batch_loss(self, X_batch, generator, rows=None):
        self.rows_seen.append(rows.tolist())
        value = self.losses[self.n_iter_]
        w = self.weight
        return value * (1 + w - w.detach()), {}

    def _validation_loss(self, X_val):
        value = self.val_losses[self.validation_calls]
        self.validation_calls += 1
        return value


def run(est, n_rows, n_epochs, X_val=None):
    X = torch.zeros(n_rows, 1, dtype=torch.float64)
    return run_epochs(est, X, X_val, n_epochs, torch.Generator().manual_seed(0))


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


def test_rows_are_a_permutation_of_the_training_samples_each_epoch():
    est = every_epoch([1.0, 1.0])
    run(est, 10, 2)
    assert len(est.rows_seen) == 20 and all(len(r) == 1 for r in est.rows_seen)
    for epoch in range(2):
        rows = sum(est.rows_seen[10 * epoch : 10 * (epoch + 1)], [])
        assert sorted(rows) == list(range(10))
    est = ScriptedEstimator([1.0], batch_size=4)
    run(est, 10, 1)
    assert [len(r) for r in est.rows_seen] == [4, 4, 2]
    assert sorted(sum(est.rows_seen, [])) == list(range(10))


def test_best_epoch_weights_are_kept_when_the_loss_jumps_up():
    losses = [3.0, 2.0, 1.0, 5.0, 6.0]
    est = every_epoch(losses)
    stopped_early = run(est, **EVERY_EPOCH, n_epochs=len(losses))
    assert not stopped_early
    assert est.loss_curve_ == losses
    # End of epoch 3 (the best): w = -10 (3 + 2 + 1); the later epochs are undone.
    assert est.weight.item() == -60.0
    assert est.best_loss_ == 1.0


def test_last_weights_are_kept_when_the_loss_keeps_falling():
    losses = [3.0, 2.0, 1.0]
    est = every_epoch(losses)
    run(est, **EVERY_EPOCH, n_epochs=len(losses))
    assert est.weight.item() == -60.0


def test_plateau_stops_training():
    # Relative tol=0.1: epoch 2 improves on 3 by a third; epochs 3 and 4 improve
    # on the best by less than 10% (1.9 > 0.9 * 2, 1.85 > 0.9 * 1.9), two checks
    # without improvement, so training stops before the big drop of epoch 6.
    losses = [3.0, 2.0, 1.9, 1.85, 1.8, 1.0]
    est = every_epoch(losses, tol=0.1, n_iter_no_change=2)
    stopped_early = run(est, **EVERY_EPOCH, n_epochs=len(losses))
    assert stopped_early
    assert est.n_iter_ == 4
    # A small gain does not reset the plateau count but its weights are kept.
    assert est.best_loss_ == 1.85
    assert est.weight.item() == pytest.approx(-10 * (3 + 2 + 1.9 + 1.85), abs=1e-12)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_plateau_test_is_relative_to_the_loss(scale):
    # The same training curve in other units stops at the same epoch.
    losses = [scale * v for v in (3.0, 2.0, 1.9, 1.85, 1.8, 1.0)]
    est = every_epoch(losses, tol=0.1, n_iter_no_change=2)
    assert run(est, **EVERY_EPOCH, n_epochs=len(losses))
    assert est.n_iter_ == 4
    assert est.best_loss_ == pytest.approx(losses[3], rel=1e-12)


def test_tol_zero_counts_only_real_improvements():
    losses = [3.0, 2.0, 2.0, 2.0, 1.0]
    est = every_epoch(losses, tol=0.0, n_iter_no_change=3)
    assert not run(est, **EVERY_EPOCH, n_epochs=len(losses))
    assert est.n_iter_ == 5 and est.best_loss_ == 1.0
    est = every_epoch(losses, tol=0.0, n_iter_no_change=2)
    assert run(est, **EVERY_EPOCH, n_epochs=len(losses))
    assert est.n_iter_ == 4


def test_one_step_per_epoch_checks_every_ten_epochs():
    # A single row: one optimiser step per epoch, so the loop checks every 10
    # epochs, on the mean training loss of those epochs, and the last epoch of
    # training is always checked.
    losses = [5.0] * 10 + [4.0] * 10 + [6.0] * 5
    est = ScriptedEstimator(losses)
    assert not run(est, 1, len(losses))
    assert est.n_iter_ == 25 and est.loss_curve_ == losses
    assert est.best_loss_ == 4.0
    # Weights of the end of the best window (epoch 20), one step per epoch.
    assert est.weight.item() == -sum(losses[:20])


def test_plateau_counts_checks_not_epochs():
    # n_iter_no_change=2 with one step per epoch: the first check (epoch 10) sets
    # the best, the two next ones (epochs 20 and 30) do not improve it.
    losses = [1.0] * 100
    est = ScriptedEstimator(losses, n_iter_no_change=2)
    assert run(est, 1, len(losses))
    assert est.n_iter_ == 30


def test_noisy_single_epochs_do_not_stop_training_when_averaged():
    # Epoch losses that zig-zag but fall on average over every window of 10
    # epochs: a per-epoch plateau test with n_iter_no_change=2 would stop at
    # epoch 3; the check over the windows' means does not.
    noise = [0.0, 0.5] * 5
    losses = [10.0 - window + e for window in range(4) for e in noise]
    est = ScriptedEstimator(losses, tol=1e-3, n_iter_no_change=2)
    assert not run(est, 1, len(losses))
    assert est.n_iter_ == 40
    assert est.best_loss_ == pytest.approx(7.25)


# ----------------------------------------------------------- early stopping


def test_validation_scores_are_kept_per_check():
    # One step per epoch: 25 epochs give checks at epochs 10, 20 and 25, each with
    # one validation score, after the untrained model's score.
    losses = [1.0] * 25
    est = ScriptedEstimator(losses, val_losses=[9.0, 5.0, 4.0, 6.0])
    assert not run(est, 1, len(losses), X_val=torch.zeros(1, 1))
    assert est.validation_calls == 4
    assert est.validation_scores_ == [-5.0, -4.0, -6.0]
    assert est.best_validation_score_ == -4.0
    assert est.weight.item() == -20.0  # end of epoch 20, the best check


def test_untrained_model_is_kept_when_training_never_beats_it():
    losses = [1.0] * 10
    est = every_epoch(losses, val_losses=[1.0, 2.0, 3.0, 1.5, 1.0], n_iter_no_change=3)
    stopped_early = run(
        est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1)
    )
    assert stopped_early and est.n_iter_ == 3
    assert est.validation_scores_ == [-2.0, -3.0, -1.5]
    assert est.best_validation_score_ == -1.0
    # Restored to the untrained weights.
    assert est.weight.item() == 0.0


def test_best_validation_check_weights_are_kept():
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    est = every_epoch(losses, val_losses=[5.0, 4.0, 2.0, 3.0, 2.5, 2.1])
    assert not run(est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1))
    assert est.best_validation_score_ == -2.0
    assert max(est.validation_scores_) == -2.0
    # The validation loss, not the training loss, decides: end of epoch 2.
    assert est.weight.item() == -10 * (1.0 + 2.0)


def test_validation_plateau_is_relative():
    # 1.9 is not below (1 - 0.1) * 2: no improvement, though its weights are kept.
    losses = [1.0] * 5
    est = every_epoch(
        losses, val_losses=[3.0, 2.0, 1.9, 1.85, 1.0], tol=0.1, n_iter_no_change=2
    )
    assert run(est, **EVERY_EPOCH, n_epochs=len(losses), X_val=torch.zeros(1, 1))
    assert est.n_iter_ == 3
    assert est.best_validation_score_ == -1.85
    assert est.weight.item() == -30.0


# ------------------------------------------------- the estimators' fallback


@pytest.mark.parametrize("cls_name", ["GradientFlowEncoder", "Autoencoder", "VAE"])
def test_early_stopping_with_one_sample_monitors_the_training_loss(cls_name):
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning but the max_iter one
        warnings.filterwarnings("ignore", "Stochastic optimizer", ConvergenceWarning)
        model.fit(X[:1])
    # Nothing held out: no validation score, the training loss is monitored.
    assert model.validation_scores_ == [] and model.best_validation_score_ is None
    assert len(model.loss_curve_) == model.n_iter_ == 12
    assert np.isfinite(model.best_loss_)
    assert np.all(np.isfinite(model.transform(X)))
    # Two samples: one is held out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[:2])
    assert len(model.validation_scores_) >= 1
    assert model.best_validation_score_ >= max(model.validation_scores_)
