"""The minibatch training loop shared by every estimator of skgfe.

The loop knows nothing about how a model encodes: it asks the estimator for the
loss of a minibatch (``estimator._batch_loss``) and for a held-out score
(``estimator._validation_loss``), steps a torch optimiser, keeps ``loss_curve_``,
stops on a plateau, keeps the best measured weights (restoring them, too, when the
loss turns non-finite), and turns ``KeyboardInterrupt`` into a clean stop with the
weights reached so far.
"""

import copy
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch.optim.swa_utils import AveragedModel

from ._warnings import warn_user

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}


def make_optimizer(name, parameters, learning_rate):
    """Build the torch optimiser called ``name``."""
    return OPTIMIZERS[name](parameters, lr=learning_rate)


def _progress_bar(n_epochs, verbose):
    if verbose < 2:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: fall back to the per-epoch lines
        return None
    return tqdm(total=n_epochs, desc="epochs", leave=False)


def _snapshot(modules):
    return [copy.deepcopy(module.state_dict()) for module in modules]


def _restore(modules, snapshot):
    for module, state in zip(modules, snapshot):
        module.load_state_dict(state)


# The averaging horizon grows with the number of steps averaged, t: the decay is
# min(decay, (1 + t) / (EMA_WARMUP + t)), so that the average of a short fit is not
# dominated by its first weights (the schedule of TensorFlow's
# ExponentialMovingAverage with num_updates).
EMA_WARMUP = 10


def _warmed_up_ema(decay):
    """An AveragedModel ``multi_avg_fn``: an EMA whose decay warms up to ``decay``."""

    @torch.no_grad()
    def update(averaged, current, n_averaged):
        t = float(n_averaged)
        weight = 1.0 - min(decay, (1.0 + t) / (EMA_WARMUP + t))
        torch._foreach_lerp_(averaged, current, weight)

    return update


class WeightAverage:
    """An exponential moving average of the modules' weights over optimiser steps.

    Polyak averaging: the average of the last ``1 / (1 - decay)`` or so iterates
    of a stochastic optimiser lies nearer the minimum they scatter around than
    any one of them, and the progress checks of :func:`run_epochs` measure
    (and keep) it instead of the current weights. Built on torch's
    :class:`~torch.optim.swa_utils.AveragedModel`; the first update copies the
    weights.
    """

    def __init__(self, modules, decay):
        self.modules = modules
        self.averages = [
            AveragedModel(module, multi_avg_fn=_warmed_up_ema(decay))
            for module in modules
        ]

    @property
    def averaged_modules(self):
        """The modules holding the averaged weights (snapshots are taken of them)."""
        return [average.module for average in self.averages]

    def update(self):
        """Average in the modules' current weights (after an optimiser step)."""
        for average, module in zip(self.averages, self.modules):
            average.update_parameters(module)

    @contextmanager
    def applied(self):
        """The averaged weights in the modules, and their own weights back after."""
        saved = _snapshot(self.modules)
        for module, averaged in zip(self.modules, self.averaged_modules):
            module.load_state_dict(averaged.state_dict())
        try:
            yield
        finally:
            _restore(self.modules, saved)


# Training progress is checked (validation score or training loss, plateau test,
# best weights) after every epoch, but never more often than every this many
# optimiser steps: with a few dozen samples an epoch is a single step, and a
# plateau test over single noisy steps would stop far too early.
MIN_STEPS_PER_CHECK = 10

# A plateau reached while the training loss never fell below the reference (the
# fit to the training data stayed worse than the start's, GFE's PCA optimum) is
# a step size too large for this start, not convergence: the optimiser restarts
# from the start weights at a learning rate this many times lower, at most
# LEARNING_RATE_RETRIES times. On a 12-dimensional manifold in 128 features with
# n_components=36 (n=5000), training at 3e-3 never beat GFE's PCA start; at 1e-3
# it reached 0.017 times PCA's held-out error (shape sweep, seed 0).
LEARNING_RATE_RETRY_FACTOR = 3.0
LEARNING_RATE_RETRIES = 2

# No plateau ends a fit before this many optimiser steps (unless the epoch budget
# does): a small network trained by Adam can sit on a validation plateau for
# hundreds of steps before its loss falls. On a 12-dimensional manifold in 128
# features (n=1000, n_components=12) the validation loss of both GFE and the
# Autoencoder stayed flat for about 800 steps (55 epochs), and a patience of 10
# epochs stopped them at PCA's error; trained on, they reached 0.20 and 0.38 of
# it (shape sweep). The best validated weights are kept either way, so the floor
# costs time, never accuracy.
MIN_TRAINING_STEPS = 1000

# Nor does a plateau end a fit while the monitored loss still falls slowly: the
# best loss of the last PROGRESS_WINDOW_FACTOR * n_iter_no_change checks more
# than MIN_WINDOW_IMPROVEMENT (relative), and more than tol per check of the
# window, below the best loss before them (2% over 50 checks at the defaults).
# A plateau test over 10 checks alone stops a slow, steady descent whenever
# noise hides it for 10 checks: on viscous Burgers snapshots (n=1000, 8
# components) at 117 epochs, its held-out error halved by epoch 186; on a
# 2-dimensional manifold in 512 features at 436 epochs, 0.80 of that error by
# epoch 673 (shape sweep, seed 0). A window improvement of 0.5-1% instead of
# 2% trained spectra (16 components) 50% longer, and the kept weights' loss on
# 500 held-out samples, scored as the validation loss is, came out 3% worse
# (transform's own error, which starts from the start encoder too, falls over
# those epochs: see the user guide's stopping section).
PROGRESS_WINDOW_FACTOR = 5
MIN_WINDOW_IMPROVEMENT = 0.02


def progress_window(n_iter_no_change, tol, min_improvement=MIN_WINDOW_IMPROVEMENT):
    """(checks, relative improvement) of the progress window (see above)."""
    window = PROGRESS_WINDOW_FACTOR * n_iter_no_change
    return window, max(min_improvement, window * tol)


def improved_in_window(
    history, n_iter_no_change, tol, min_improvement=MIN_WINDOW_IMPROVEMENT
):
    """True when the best of the last window of monitored losses ``history`` is
    more than the window's relative improvement below the best before them."""
    window, improvement = progress_window(n_iter_no_change, tol, min_improvement)
    if len(history) <= window:
        return False
    before = min(history[:-window])
    return min(history[-window:]) < before - improvement * abs(before)


# An epoch's minibatches are stepped in groups of about this many rows, and the
# estimator prepares each group in one call before stepping it
# (``_prepare_minibatches``): GFE solves the group's training codes together.
# Solved minibatch by minibatch, 64 rows at a time, those solves cost mostly
# per-call overhead; by groups of 512 (with fixed-metric solves) a GFE epoch took
# 0.6-0.9 of the time on digits, spectra, Burgers snapshots and manifolds
# (n=1000), the decoder steps seeing codes solved for weights at most 7 steps
# old.
MINIBATCH_GROUP_ROWS = 512


def epochs_per_check(n_samples, batch_size):
    """Epochs between two progress checks for ``n_samples`` training samples."""
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return max(1, math.ceil(MIN_STEPS_PER_CHECK / steps_per_epoch))


def minibatches(order, batch_size):
    """Split the epoch's sample ``order`` into minibatches of at most ``batch_size``.

    The fewest minibatches that hold ``batch_size`` samples each, equal in size
    to within one sample: 900 samples in batches of 64 are 15 of 60, not 14 of
    64 and one of 4. A small last minibatch gives Adam a full-size step on a
    noisy gradient every epoch; on a 6-dimensional manifold in 64 features (16
    components, 900 training samples) it took 200 epochs from 0.42 to 0.54 of
    PCA's held-out error.
    """
    n_batches = max(1, math.ceil(len(order) / batch_size))
    return torch.tensor_split(order, n_batches)


@dataclass
class TrainingOutcome:
    """How a call of :func:`run_epochs` ended."""

    # Stopped on a plateau (or by a callback) rather than on the epoch budget.
    stopped_early: bool = False
    # The weights the call started from were never beaten, and are kept.
    kept_start: bool = False
    # The loss turned non-finite and training stopped.
    diverged: bool = False
    # Why training ended: 'plateau', 'max_iter', 'callback', 'diverged' or
    # 'interrupted'.
    reason: str = "max_iter"
    # The epoch whose check measured the kept weights (0: the starting weights).
    best_epoch: int = 0


def _monitored_loss(est, X_train, X_val):
    """The loss a progress check compares: validation, or the training objective.

    Both are measured on the current weights, the ones a check snapshots.
    """
    if X_val is not None:
        return est._validation_loss(X_val)
    return est._training_loss(X_train)


def _fitted_modules(est):
    """Copies of the estimator's torch modules: a snapshot for a callback."""
    return {
        name: copy.deepcopy(value)
        for name, value in vars(est).items()
        if isinstance(value, torch.nn.Module)
    }


def run_epochs(
    estimator,
    X_train,
    X_val,
    n_epochs,
    generator,
    keep_best=True,
    callback_ctx=None,
):
    """Train ``estimator``'s modules for up to ``n_epochs`` passes over ``X_train``.

    Progress is checked every :func:`epochs_per_check` epochs (every epoch once
    an epoch has at least :data:`MIN_STEPS_PER_CHECK` minibatches). With
    ``keep_best``, a check measures the current weights: their loss on
    ``X_val`` when given, otherwise their training objective on all of
    ``X_train`` (``estimator._training_loss``). The weights the call starts from
    are measured the same way and are the first candidate; a check keeps a
    snapshot of the weights when their loss is the best so far, and counts as no
    improvement unless the loss fell below ``(1 - tol)`` times the best loss of
    the *trained* checks (a relative test, whatever the units of the data; the
    starting weights are a candidate for the kept weights but not the bar of
    this test, so that training goes on while it improves, also before it has
    passed them). With validation samples and
    an estimator that gives a reference (``_reference_training_loss``: for
    GFE's PCA-initialised decoder, its starting weights' training objective,
    PCA's optimum), a check also needs the mean minibatch loss of its epochs to
    be no higher than that reference: a validation loss that falls while the
    fit to the training data is worse than PCA's (Adam's first steps move the
    decoder away from PCA's optimum before training pays off) is luck on a few
    validation samples, not progress. Training stops after
    ``n_iter_no_change`` checks without improvement, but not before
    :data:`MIN_TRAINING_STEPS` optimiser steps (a plateau in the last of the
    ``n_epochs`` ends it as a plateau, too), nor while the best monitored loss
    of the last ``PROGRESS_WINDOW_FACTOR * n_iter_no_change`` checks is more
    than ``max(MIN_WINDOW_IMPROVEMENT, window * tol)`` (relative) below the
    best before them (the checks since the start or the last retry), and the
    best weights are restored. A plateau that kept the starting weights
    while the mean loss of every epoch stayed above that reference (training
    never fitted the training data as well as the start does: a step size too
    large for this start)
    restarts from the starting weights with a fresh optimiser at a
    :data:`LEARNING_RATE_RETRY_FACTOR` times lower learning rate, at most
    :data:`LEARNING_RATE_RETRIES` times within ``n_epochs``. With an estimator
    whose ``weight_averaging`` is above 0, the
    checks measure, and snapshot, an exponential moving average of the weights
    over the optimiser steps (:class:`WeightAverage`) instead of the weights
    themselves; training steps on from its own weights. Without ``keep_best``
    (``partial_fit``: successive calls see different data, whose losses do not
    compare) nothing is averaged, and a check only counts plateaus, on the mean
    minibatch loss of the epochs since the previous check.

    When a minibatch loss or a check's loss is not finite, or the batch loss
    raises :class:`FloatingPointError` (a flow that cannot start from
    non-finite weights), training stops with a :class:`ConvergenceWarning`: the
    best weights measured so far are restored (the starting weights without
    ``keep_best``), and the optimiser's state, which the overflow has reached
    too, is reset.

    Parameters
    ----------
    estimator : TorchEstimatorMixin
        Provides ``_modules()``, ``_optimizer``, ``_make_optimizer()``,
        ``_effective_batch_size(n_samples)``,
        ``_batch_loss(X_batch, generator, rows=rows)`` returning
        ``(mean loss tensor, info dict)``, ``_validation_loss(X)``,
        ``_training_loss(X)``, the parameters ``weight_averaging``, ``tol``,
        ``n_iter_no_change`` and ``verbose``, and the hooks
        ``_reference_training_loss(X_train)``, ``_clip_gradients()``
        (called between the backward pass and the optimiser step) and
        ``_prepare_minibatches(X_train, rows)`` (called before each group of
        minibatches, :data:`MINIBATCH_GROUP_ROWS`), which
        :class:`~skgfe._torch_estimator.TorchEstimatorMixin` declares with
        defaults. Its ``loss_curve_``,
        ``validation_scores_``, ``best_loss_``, ``best_validation_score_``,
        ``n_iter_``, ``t_`` and ``_no_improvement_count`` are updated in place.
    X_train : torch.Tensor of shape (n_samples, ...)
        Scaled training samples (or indices the estimator's ``_batch_loss``
        resolves into its own stored data).
    X_val : torch.Tensor or None
        Scaled validation samples for early stopping, or None.
    n_epochs : int
        Largest number of epochs to run.
    generator : torch.Generator
        Draws the minibatch order (and anything random the batch loss needs).
    keep_best : bool, default=True
        Measure the weights at every check and end with the best of them.
    callback_ctx : sklearn.callback.CallbackContext or None, default=None
        The fit's callback context: each epoch is a subtask ("epoch") whose end
        hook gets the epoch's loss as ``metadata={"loss": ...}`` and, if it asks
        for one, a ``fitted_estimator`` with copies of the current modules
        (holding the averaged weights where the weights are averaged). A
        callback that returns True there stops training after that epoch.

    Returns
    -------
    TrainingOutcome
    """
    loop = _EpochLoop(
        estimator, X_train, X_val, n_epochs, generator, keep_best, callback_ctx
    )
    return loop.run()


class _Diverged(Exception):
    """A loss turned non-finite: the loop stops (see :meth:`_EpochLoop.diverge`)."""

    def __init__(self, value, what):
        super().__init__(f"{what} became {value}")
        self.value = value
        self.what = what


class _EpochLoop:
    """One call of :func:`run_epochs`: its state and its named steps.

    :meth:`run` measures the starting weights, then runs epochs
    (:meth:`run_single_epoch`: the minibatch steps, :meth:`check_progress`,
    :meth:`report_epoch`, :meth:`stop_requested`) until the budget, a plateau
    or a callback ends training, a loss diverges (:meth:`diverge`) or the user
    interrupts it (:meth:`interrupted`); the best measured weights are kept.
    """

    def __init__(
        self, estimator, X_train, X_val, n_epochs, generator, keep_best, callback_ctx
    ):
        self.est = estimator
        self.X_train = X_train
        self.X_val = X_val
        self.n_epochs = n_epochs
        self.generator = generator
        self.keep_best = keep_best
        self.callback_ctx = callback_ctx
        self.modules = estimator._modules()
        self.n_samples = X_train.shape[0]
        self.batch_size = estimator._effective_batch_size(self.n_samples)
        self.check_every = epochs_per_check(self.n_samples, self.batch_size)
        self.bar = _progress_bar(n_epochs, estimator.verbose)
        self.outcome = TrainingOutcome()
        self.start_state = _snapshot(self.modules)
        self.best_state = self.start_state
        self.start_averaging()
        # Epoch losses since the last check.
        self.since_check = []
        # The monitored losses of the trained checks since the (re)start: the
        # plateau test compares each check with the best of them
        # (trained_best), not with the start, and the window test their recent
        # best with the best before.
        self.monitored_history = []
        # Checks whose epochs fit the training data worse than this are no
        # candidates.
        self.training_bound = np.inf
        # The lowest epoch loss since the (re)start, and the retries left.
        self.lowest_epoch_loss = np.inf
        self.retries_left = LEARNING_RATE_RETRIES if keep_best else 0
        # Optimiser steps of this call (a restart does not reset them).
        self.steps = 0

    @property
    def trained_best(self):
        """The lowest monitored loss of the trained checks since the (re)start.

        Not the start's: Adam's first steps move a decoder started at an
        optimum (GFE's PCA start) away from it, and training must be allowed
        to come back and pass it for as long as it keeps improving.
        """
        return min(self.monitored_history, default=np.inf)

    def start_averaging(self):
        """A fresh weight average (none without ``keep_best`` or at decay 0),
        and the modules the checks measure."""
        decay = self.est.weight_averaging
        self.average = (
            WeightAverage(self.modules, decay) if self.keep_best and decay > 0 else None
        )
        self.measured_modules = (
            self.modules if self.average is None else self.average.averaged_modules
        )

    def run(self):
        """Train, and return the :class:`TrainingOutcome`."""
        try:
            try:
                if self.keep_best:
                    self.measure_start()
                for epoch in range(self.n_epochs):
                    if self.run_single_epoch(last=epoch == self.n_epochs - 1):
                        break
            except _Diverged as divergence:
                return self.diverge(divergence.value, divergence.what)
        except KeyboardInterrupt:
            self.interrupted()
        finally:
            if self.bar is not None:
                self.bar.close()
        if self.keep_best:
            _restore(self.modules, self.best_state)
            self.outcome.kept_start = self.best_state is self.start_state
        return self.outcome

    def measure_start(self):
        """Measure the starting weights: the first candidate, and the reference."""
        est = self.est
        try:
            best = _monitored_loss(est, self.X_train, self.X_val)
        except FloatingPointError:
            best = float("nan")
        if not np.isfinite(best):
            raise FloatingPointError(
                f"The loss of the starting weights is {best}: the decoder weights "
                "or the data contain NaN or infinity."
            )
        if self.X_val is None:
            est.best_loss_ = best
            return
        est.best_validation_score_ = -best
        reference = est._reference_training_loss(self.X_train)
        if reference is not None:
            self.training_bound = reference

    def run_single_epoch(self, last):
        """One pass over the training samples, then the check, the report and the
        callbacks (a check also after the ``last`` epoch). True: stop training."""
        est = self.est
        start = time.perf_counter()
        epoch_ctx = None
        if self.callback_ctx is not None:
            epoch_ctx = self.callback_ctx.subcontext(task_name="epoch")
            epoch_ctx.call_on_fit_task_begin(estimator=est)
        epoch_loss, infos = self.train_epoch()
        est.n_iter_ += 1
        est.loss_curve_.append(epoch_loss)
        self.since_check.append(epoch_loss)
        self.lowest_epoch_loss = min(self.lowest_epoch_loss, epoch_loss)
        checked = len(self.since_check) >= self.check_every or last
        if checked:
            self.check_progress()
        self.report_epoch(epoch_loss, checked, infos, time.perf_counter() - start)
        return self.stop_requested(epoch_ctx, epoch_loss, last)

    def train_epoch(self):
        """The minibatch steps of one epoch: its mean loss and the steps' infos."""
        order = torch.randperm(self.n_samples, generator=self.generator)
        order = order.to(self.X_train.device)
        total, infos = 0.0, []
        batches = minibatches(order, self.batch_size)
        per_group = max(1, MINIBATCH_GROUP_ROWS // self.batch_size)
        for first in range(0, len(batches), per_group):
            group = batches[first : first + per_group]
            self.prepare_group(torch.cat(group))
            for rows in group:
                X_batch = self.X_train[rows]
                loss, info = self.train_step(X_batch, rows)
                total += loss * X_batch.shape[0]
                infos.append(info)
                self.est.t_ += X_batch.shape[0]
        return total / self.n_samples, infos

    def prepare_group(self, rows):
        """Let the estimator prepare the next minibatches (training ``rows``)."""
        try:
            self.est._prepare_minibatches(self.X_train, rows)
        except FloatingPointError:
            raise _Diverged("not finite", "The training loss") from None

    def train_step(self, X_batch, rows):
        """One optimiser step on a minibatch: its loss (a float) and info."""
        est = self.est
        est._optimizer.zero_grad()
        try:
            loss, info = est._batch_loss(X_batch, self.generator, rows=rows)
        except FloatingPointError:
            raise _Diverged("not finite", "The training loss") from None
        if not torch.isfinite(loss):
            raise _Diverged(loss.item(), "The training loss")
        loss.backward()
        est._clip_gradients()
        est._optimizer.step()
        self.steps += 1
        if self.average is not None:
            self.average.update()
        return loss.item(), info

    def check_progress(self):
        """Measure the weights, keep them if best, count a check without progress."""
        est = self.est
        if self.keep_best:
            monitored = self.measure()
        else:
            monitored = float(np.mean(self.since_check))
        if self.X_val is not None:
            est.validation_scores_.append(-monitored)
        best = self.best_so_far()
        candidate = monitored
        if np.mean(self.since_check) > self.training_bound:
            candidate = max(monitored, best)
        self.since_check = []
        if self.keep_best and candidate < best:
            self.best_state = _snapshot(self.measured_modules)
            self.outcome.best_epoch = est.n_iter_
        self.count_progress(monitored, best)
        self.monitored_history.append(monitored)
        if self.X_val is not None:
            est.best_validation_score_ = -min(candidate, best)
        else:
            est.best_loss_ = min(monitored, best)

    def measure(self):
        """The monitored loss of the weights the checks measure (and keep)."""
        with self.measured_weights():
            try:
                monitored = _monitored_loss(self.est, self.X_train, self.X_val)
            except FloatingPointError:
                monitored = float("nan")
        if not np.isfinite(monitored):
            what = "validation" if self.X_val is not None else "training"
            raise _Diverged(monitored, f"The {what} loss")
        return monitored

    def best_so_far(self):
        """The lowest monitored loss of the kept candidates, before this check."""
        if self.X_val is None:
            return self.est.best_loss_
        best_score = self.est.best_validation_score_
        return np.inf if best_score is None else -best_score

    def count_progress(self, monitored, best):
        """The plateau test: reset or raise ``_no_improvement_count``."""
        est = self.est
        progress_best = self.trained_best if self.keep_best else best
        if monitored < progress_best - est.tol * abs(progress_best) or not (
            np.isfinite(progress_best)
        ):
            est._no_improvement_count = 0
        else:
            est._no_improvement_count += 1

    def report_epoch(self, epoch_loss, checked, infos, seconds):
        """With ``verbose``: one line per epoch (and the progress bar)."""
        est = self.est
        if not est.verbose:
            return
        line = f"Iteration {est.n_iter_}, loss = {epoch_loss:.8f}"
        if self.X_val is not None and checked:
            line += f", validation score = {est.validation_scores_[-1]:.8f}"
        for key in infos[0] if infos else ():
            line += f", {key} = {np.mean([i[key] for i in infos]):.4g}"
        line += f", time = {seconds:.2f}s"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{epoch_loss:.5g}")
            self.bar.write(line)
        else:
            print(line)

    def stop_requested(self, epoch_ctx, epoch_loss, last):
        """End the epoch's callback task; True when a callback or a plateau stops."""
        est = self.est
        if epoch_ctx is not None and epoch_ctx.call_on_fit_task_end(
            estimator=est,
            metadata={"loss": epoch_loss},
            reconstruction_attributes=self.measured_copies,
        ):
            return self.stop_early("callback")
        if est._no_improvement_count < est.n_iter_no_change:
            return False
        if self.keep_best and self.steps < MIN_TRAINING_STEPS and not last:
            return False
        if self.start_was_too_far() and not last:
            # Before the window: a validation loss that falls while training
            # never fits the training data as well as the start is no progress.
            self.retry_at_lower_learning_rate()
            return False
        if self.still_improving() and not last:
            return False
        return self.stop_early("plateau")

    def still_improving(self):
        """True when the best monitored loss of the last window of checks is
        well below the best before them (see PROGRESS_WINDOW_FACTOR)."""
        est = self.est
        return self.keep_best and improved_in_window(
            self.monitored_history, est.n_iter_no_change, est.tol
        )

    def start_was_too_far(self):
        """True when a plateau kept the start and training never fitted the
        training data better than it: retry (see LEARNING_RATE_RETRIES)."""
        return (
            self.retries_left > 0
            and self.best_state is self.start_state
            and self.lowest_epoch_loss > self.training_bound
        )

    def retry_at_lower_learning_rate(self):
        """Restart from the start weights with a fresh optimiser at a lower rate."""
        est = self.est
        self.retries_left -= 1
        _restore(self.modules, self.start_state)
        learning_rate = est._optimizer.param_groups[0]["lr"]
        learning_rate /= LEARNING_RATE_RETRY_FACTOR
        est._optimizer = est._make_optimizer()
        for group in est._optimizer.param_groups:
            group["lr"] = learning_rate
        self.start_averaging()
        est._no_improvement_count = 0
        self.lowest_epoch_loss = np.inf
        self.monitored_history = []
        if est.verbose:
            print(
                f"Training never fitted the training data better than the start "
                f"after {est.n_iter_} epochs: restarting from it at learning rate "
                f"{learning_rate:.3g}."
            )

    def stop_early(self, reason):
        self.outcome.stopped_early = True
        self.outcome.reason = reason
        return True

    def measured_weights(self):
        """A context in which the modules hold the weights the checks measure."""
        return nullcontext() if self.average is None else self.average.applied()

    def measured_copies(self):
        """A callback's fitted estimator: copies of the measured modules."""
        with self.measured_weights():
            return _fitted_modules(self.est)

    def diverge(self, value, what):
        """Stop on a non-finite loss: restore the best weights, reset the optimiser."""
        est = self.est
        _restore(self.modules, self.best_state)
        est._optimizer = est._make_optimizer()
        restored = (
            "the weights it started from were restored"
            if self.best_state is self.start_state
            else "the best weights measured so far were restored"
        )
        warn_user(
            f"{what} became {value} in epoch {est.n_iter_ + 1}; training stopped "
            f"and {restored}. Lower learning_rate_init or scale the data.",
            ConvergenceWarning,
        )
        self.outcome.diverged = True
        self.outcome.reason = "diverged"
        self.outcome.kept_start = self.best_state is self.start_state
        return self.outcome

    def interrupted(self):
        """The user interrupted training: keep what was reached, say so."""
        self.outcome.reason = "interrupted"
        kept = (
            "best weights measured so far"
            if self.keep_best
            else "weights reached so far"
        )
        warn_user(
            f"Training interrupted after {self.est.n_iter_} epochs; the model keeps "
            f"the {kept} and can be used, or trained further with partial_fit or "
            "warm_start=True.",
            UserWarning,
        )
