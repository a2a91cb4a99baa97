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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
            AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay))
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


def epochs_per_check(n_samples, batch_size):
    """Epochs between two progress checks for ``n_samples`` training samples."""
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return max(1, math.ceil(MIN_STEPS_PER_CHECK / steps_per_epoch))


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
    ``n_iter_no_change`` checks without improvement, and the best weights are
    restored. With an estimator whose ``weight_averaging`` is above 0, the
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
    estimator : BaseDecoderTransformer
        Provides ``_modules()``, ``_optimizer``, ``_make_optimizer()``,
        ``_batch_loss(X_batch, generator, rows=rows)`` returning
        ``(mean loss tensor, info dict)``, ``_validation_loss(X)`` and
        ``_training_loss(X)``; optionally ``_clip_gradients()``, called between
        the backward pass and the optimiser step. Its ``loss_curve_``,
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
    est = estimator
    modules = est._modules()
    n_samples = X_train.shape[0]
    batch_size = est._effective_batch_size(n_samples)
    check_every = epochs_per_check(n_samples, batch_size)
    bar = _progress_bar(n_epochs, est.verbose)
    outcome = TrainingOutcome()
    start_state = _snapshot(modules)
    best_state = start_state
    decay = getattr(est, "weight_averaging", 0.0)
    average = WeightAverage(modules, decay) if keep_best and decay > 0 else None
    measured_modules = modules if average is None else average.averaged_modules
    since_check = []
    # The plateau test compares each check with the best *trained* check, not
    # with the start: Adam's first steps move a decoder started at an optimum
    # (GFE's PCA start) away from it, and training must be allowed to come back
    # and pass it for as long as it keeps improving.
    trained_best = np.inf
    # Checks whose epochs fit the training data worse than this are no candidates.
    training_bound = np.inf

    def measured_copies():
        # A callback's fitted estimator holds the weights the checks measure.
        with nullcontext() if average is None else average.applied():
            return _fitted_modules(est)

    def diverge(value, what):
        _restore(modules, best_state)
        est._optimizer = est._make_optimizer()
        restored = (
            "the weights it started from were restored"
            if best_state is start_state
            else "the best weights measured so far were restored"
        )
        warn_user(
            f"{what} became {value} in epoch {est.n_iter_ + 1}; training stopped "
            f"and {restored}. Lower learning_rate_init or scale the data.",
            ConvergenceWarning,
        )
        outcome.diverged = True
        outcome.reason = "diverged"
        outcome.kept_start = best_state is start_state
        return outcome

    try:
        if keep_best:
            try:
                best = _monitored_loss(est, X_train, X_val)
            except FloatingPointError:
                best = float("nan")
            if not np.isfinite(best):
                raise FloatingPointError(
                    f"The loss of the starting weights is {best}: the decoder weights "
                    "or the data contain NaN or infinity."
                )
            if X_val is not None:
                est.best_validation_score_ = -best
                reference = getattr(est, "_reference_training_loss", lambda X: None)
                reference = reference(X_train)
                if reference is not None:
                    training_bound = reference
            else:
                est.best_loss_ = best
        for epoch in range(n_epochs):
            start = time.perf_counter()
            epoch_ctx = None
            if callback_ctx is not None:
                epoch_ctx = callback_ctx.subcontext(task_name="epoch")
                epoch_ctx.call_on_fit_task_begin(estimator=est)
            order = torch.randperm(n_samples, generator=generator).to(X_train.device)
            total, infos = 0.0, []
            for begin in range(0, n_samples, batch_size):
                rows = order[begin : begin + batch_size]
                X_batch = X_train[rows]
                est._optimizer.zero_grad()
                try:
                    loss, info = est._batch_loss(X_batch, generator, rows=rows)
                except FloatingPointError:
                    return diverge("not finite", "The training loss")
                if not torch.isfinite(loss):
                    return diverge(loss.item(), "The training loss")
                loss.backward()
                clip_gradients = getattr(est, "_clip_gradients", None)
                if clip_gradients is not None:
                    clip_gradients()
                est._optimizer.step()
                if average is not None:
                    average.update()
                total += loss.item() * X_batch.shape[0]
                infos.append(info)
                est.t_ += X_batch.shape[0]
            est.n_iter_ += 1
            epoch_loss = total / n_samples
            est.loss_curve_.append(epoch_loss)
            since_check.append(epoch_loss)

            checked = len(since_check) >= check_every or epoch == n_epochs - 1
            if checked:
                if keep_best:
                    with nullcontext() if average is None else average.applied():
                        try:
                            monitored = _monitored_loss(est, X_train, X_val)
                        except FloatingPointError:
                            monitored = float("nan")
                    if not np.isfinite(monitored):
                        what = (
                            "The validation loss"
                            if X_val is not None
                            else ("The training loss")
                        )
                        return diverge(monitored, what)
                else:
                    monitored = float(np.mean(since_check))
                if X_val is not None:
                    est.validation_scores_.append(-monitored)
                    best_score = est.best_validation_score_
                    best = np.inf if best_score is None else -best_score
                else:
                    best = est.best_loss_
                candidate = monitored
                if np.mean(since_check) > training_bound:
                    candidate = max(monitored, best)
                since_check = []
                if keep_best and candidate < best:
                    best_state = _snapshot(measured_modules)
                    outcome.best_epoch = est.n_iter_
                progress_best = trained_best if keep_best else best
                if monitored < progress_best - est.tol * abs(progress_best) or not (
                    np.isfinite(progress_best)
                ):
                    est._no_improvement_count = 0
                else:
                    est._no_improvement_count += 1
                trained_best = min(trained_best, monitored)
                if X_val is not None:
                    est.best_validation_score_ = -min(candidate, best)
                else:
                    est.best_loss_ = min(monitored, best)

            seconds = time.perf_counter() - start
            if est.verbose:
                line = f"Iteration {est.n_iter_}, loss = {epoch_loss:.8f}"
                if X_val is not None and checked:
                    line += f", validation score = {est.validation_scores_[-1]:.8f}"
                for key in infos[0] if infos else ():
                    line += f", {key} = {np.mean([i[key] for i in infos]):.4g}"
                line += f", time = {seconds:.2f}s"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{epoch_loss:.5g}")
                    bar.write(line)
                else:
                    print(line)

            if epoch_ctx is not None and epoch_ctx.call_on_fit_task_end(
                estimator=est,
                metadata={"loss": epoch_loss},
                reconstruction_attributes=measured_copies,
            ):
                outcome.stopped_early = True
                outcome.reason = "callback"
                break
            if est._no_improvement_count >= est.n_iter_no_change:
                outcome.stopped_early = True
                outcome.reason = "plateau"
                break
    except KeyboardInterrupt:
        outcome.reason = "interrupted"
        kept = "best weights measured so far" if keep_best else "weights reached so far"
        warn_user(
            f"Training interrupted after {est.n_iter_} epochs; the model keeps the "
            f"{kept} and can be used, or trained further with partial_fit or "
            "warm_start=True.",
            UserWarning,
        )
    finally:
        if bar is not None:
            bar.close()
    if keep_best:
        _restore(modules, best_state)
        outcome.kept_start = best_state is start_state
    return outcome
