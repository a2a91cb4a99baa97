"""The minibatch training loop shared by every estimator of skgfe.

The loop knows nothing about how a model encodes: it asks the estimator for the
loss of a minibatch (``estimator._batch_loss``) and for a held-out score
(``estimator._validation_loss``), steps a torch optimiser, keeps ``loss_curve_``,
stops on a plateau, keeps the best epoch's weights, restores the last good weights
when the loss turns non-finite, and turns ``KeyboardInterrupt`` into a clean stop
with the weights reached so far.
"""

import copy
import math
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

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


# Training progress is checked (validation score or training loss, plateau test,
# best weights) after every epoch, but never more often than every this many
# optimiser steps: with a few dozen samples an epoch is a single step, and a
# plateau test over single noisy steps would stop far too early.
MIN_STEPS_PER_CHECK = 10


def epochs_per_check(n_samples, batch_size):
    """Epochs between two progress checks for ``n_samples`` training samples."""
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return max(1, math.ceil(MIN_STEPS_PER_CHECK / steps_per_epoch))


def run_epochs(estimator, X_train, X_val, n_epochs, generator):
    """Train ``estimator``'s modules for up to ``n_epochs`` passes over ``X_train``.

    Progress is checked every :func:`epochs_per_check` epochs (every epoch once
    an epoch has at least :data:`MIN_STEPS_PER_CHECK` minibatches). A check
    monitors the validation loss when ``X_val`` is given, and otherwise the mean
    training loss of the epochs since the previous check; it keeps a snapshot of
    the weights when the monitored loss is the best so far, and counts the check
    as no improvement unless the loss fell below ``(1 - tol)`` times the best
    (a relative test, whatever the units of the data). Training stops after
    ``n_iter_no_change`` checks without improvement, and the best weights are
    restored.

    Parameters
    ----------
    estimator : BaseDecoderTransformer
        Provides ``_modules()``, ``_optimizer``,
        ``_batch_loss(X_batch, generator, rows=rows)`` returning
        ``(mean loss tensor, info dict)``, and ``_validation_loss(X)``.
        Its ``loss_curve_``, ``validation_scores_``, ``best_loss_``, ``n_iter_``,
        ``t_`` and ``_no_improvement_count`` are updated in place.
    X_train : torch.Tensor of shape (n_samples, n_features)
        Scaled training samples.
    X_val : torch.Tensor or None
        Scaled validation samples for early stopping, or None.
    n_epochs : int
        Largest number of epochs to run.
    generator : torch.Generator
        Draws the minibatch order (and anything random the batch loss needs).

    Returns
    -------
    stopped_early : bool
        True when training stopped on a plateau rather than on ``n_epochs``.
    """
    est = estimator
    modules = est._modules()
    n_samples = X_train.shape[0]
    batch_size = est._effective_batch_size(n_samples)
    check_every = epochs_per_check(n_samples, batch_size)
    bar = _progress_bar(n_epochs, est.verbose)
    best_state = None
    stopped_early = False
    since_check = []
    if X_val is not None and est.best_validation_score_ is None:
        # The untrained model is a candidate too: a decoder initialised from PCA
        # is kept unless training beats it on the validation samples.
        est.best_validation_score_ = -est._validation_loss(X_val)
        best_state = _snapshot(modules)
        est._kept_initial_model = True
    try:
        for epoch in range(n_epochs):
            start = time.perf_counter()
            good_state = _snapshot(modules)
            order = torch.randperm(n_samples, generator=generator).to(X_train.device)
            total, infos = 0.0, []
            for begin in range(0, n_samples, batch_size):
                rows = order[begin : begin + batch_size]
                X_batch = X_train[rows]
                est._optimizer.zero_grad()
                loss, info = est._batch_loss(X_batch, generator, rows=rows)
                if not torch.isfinite(loss):
                    _restore(modules, good_state)
                    warnings.warn(
                        f"The training loss became {loss.item()} in epoch "
                        f"{est.n_iter_ + 1}; training stopped and the weights of the "
                        "last finite epoch were restored. Lower learning_rate_init "
                        "or scale the data.",
                        ConvergenceWarning,
                        stacklevel=4,
                    )
                    return False
                loss.backward()
                est._optimizer.step()
                total += loss.item() * X_batch.shape[0]
                infos.append(info)
                est.t_ += X_batch.shape[0]
            est.n_iter_ += 1
            epoch_loss = total / n_samples
            est.loss_curve_.append(epoch_loss)
            since_check.append(epoch_loss)

            checked = len(since_check) >= check_every or epoch == n_epochs - 1
            if checked:
                if X_val is not None:
                    score = -est._validation_loss(X_val)
                    est.validation_scores_.append(score)
                    best_score = est.best_validation_score_
                    best = np.inf if best_score is None else -best_score
                    monitored = -score
                else:
                    monitored, best = float(np.mean(since_check)), est.best_loss_
                since_check = []
                if monitored < best:
                    best_state = _snapshot(modules)
                    est._kept_initial_model = False
                if monitored < best - est.tol * abs(best) or not np.isfinite(best):
                    est._no_improvement_count = 0
                else:
                    est._no_improvement_count += 1
                if X_val is not None:
                    est.best_validation_score_ = -min(monitored, best)
                else:
                    est.best_loss_ = min(monitored, best)

            seconds = time.perf_counter() - start
            if est.verbose:
                line = f"Iteration {est.n_iter_}, loss = {epoch_loss:.8f}"
                if X_val is not None and checked:
                    line += f", validation score = {est.validation_scores_[-1]:.8f}"
                for key in infos[0] if infos else ():
                    line += f", {key} = {np.mean([i[key] for i in infos]):.1f}"
                line += f", time = {seconds:.2f}s"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{epoch_loss:.5g}")
                    bar.write(line)
                else:
                    print(line)

            if est._no_improvement_count >= est.n_iter_no_change:
                stopped_early = True
                break
    except KeyboardInterrupt:
        warnings.warn(
            f"Training interrupted after {est.n_iter_} epochs; the model keeps the "
            "weights reached so far and can be used, or trained further with "
            "partial_fit or warm_start=True.",
            UserWarning,
            stacklevel=3,
        )
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        _restore(modules, best_state)
    return stopped_early
