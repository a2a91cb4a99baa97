"""The shared training loop, driven by a scripted stand-in estimator."""

import numpy as np
import torch

from skgfe._training import run_epochs


class ScriptedEstimator:
    """One weight ``w`` and one sample; the loss of epoch k is ``losses[k]``.

    The batch loss is ``losses[k] * (1 + w - w.detach())``: its value is scripted
    and its gradient (``losses[k]``) moves ``w`` by ``-losses[k]`` under SGD(lr=1),
    so the weight at the end of each epoch is known in closed form.
    """

    def __init__(self, losses, tol=1e-3, n_iter_no_change=100):
        self.losses = list(losses)
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.module = torch.nn.ParameterList([self.weight])
        self._optimizer = torch.optim.SGD([self.weight], lr=1.0)
        self.tol, self.n_iter_no_change, self.verbose = tol, n_iter_no_change, 0
        self.loss_curve_, self.validation_scores_ = [], []
        self.best_loss_, self.best_validation_score_ = np.inf, None
        self.n_iter_, self.t_, self._no_improvement_count = 0, 0, 0

    def _modules(self):
        return [self.module]

    def _effective_batch_size(self, n_samples):
        return n_samples

    def _batch_loss(self, X_batch, generator, rows=None):
        value = self.losses[self.n_iter_]
        w = self.weight
        return value * (1 + w - w.detach()), {}


def test_best_epoch_weights_are_kept_when_the_loss_jumps_up():
    losses = [3.0, 2.0, 1.0, 5.0, 6.0]
    est = ScriptedEstimator(losses)
    run_epochs(est, torch.zeros(1, 1), None, len(losses), torch.Generator())
    assert est.loss_curve_ == losses
    # End of epoch 3 (the best): w = -(3 + 2 + 1); the later epochs are undone.
    assert est.weight.item() == -6.0
    assert est.best_loss_ == 1.0


def test_last_weights_are_kept_when_the_loss_keeps_falling():
    losses = [3.0, 2.0, 1.0]
    est = ScriptedEstimator(losses)
    run_epochs(est, torch.zeros(1, 1), None, len(losses), torch.Generator())
    assert est.weight.item() == -6.0


def test_plateau_stops_training():
    losses = [3.0, 2.0, 2.0, 2.0, 2.0, 1.0]
    est = ScriptedEstimator(losses, tol=0.5, n_iter_no_change=2)
    stopped_early = run_epochs(
        est, torch.zeros(1, 1), None, len(losses), torch.Generator()
    )
    assert stopped_early
    assert est.n_iter_ == 4
