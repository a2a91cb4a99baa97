"""The minibatch training loop shared by every estimator of skgfe.

The loop knows nothing about how a model encodes: it asks the estimator for the
loss of a minibatch (``estimator._batch_loss``) and for a held-out score
(``estimator._validation_loss``), steps a torch optimiser, keeps ``loss_curve_``,
stops on a plateau, keeps the best epoch's weights, restores the last good weights
when the loss turns non-finite, and turns ``KeyboardInterrupt`` into a clean stop
with the weights reached so far.
"""

import copy
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


def run_epochs(estimator, X_train, X_val, n_epochs, generator):
    """Train ``estimator``'s modules for up to ``n_epochs`` passes over ``X_train``.

    Parameters
    ----------
    estimator : BaseDecoderTransformer
        Provides ``_modules()``, ``_optimizer``, ``_batch_loss(X_batch, generator)``
        returning ``(mean loss tensor, info dict)``, and ``_validation_loss(X)``.
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
    bar = _progress_bar(n_epochs, est.verbose)
    best_state = None
    stopped_early = False
    try:
        for _ in range(n_epochs):
            start = time.perf_counter()
            good_state = _snapshot(modules)
            order = torch.randperm(n_samples, generator=generator).to(X_train.device)
            total, infos = 0.0, []
            for begin in range(0, n_samples, batch_size):
                X_batch = X_train[order[begin : begin + batch_size]]
                est._optimizer.zero_grad()
                loss, info = est._batch_loss(X_batch, generator)
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

            if X_val is not None:
                score = -est._validation_loss(X_val)
                est.validation_scores_.append(score)
                if est.best_validation_score_ is None or score > (
                    est.best_validation_score_
                ):
                    best_state = _snapshot(modules)
                if (
                    est.best_validation_score_ is not None
                    and score < est.best_validation_score_ + est.tol
                ):
                    est._no_improvement_count += 1
                else:
                    est._no_improvement_count = 0
                est.best_validation_score_ = max(
                    score, est.best_validation_score_ or -np.inf
                )
            else:
                # The flow can switch basins when the decoder moves, so the loss
                # of a late epoch can jump up; keep the best epoch's weights.
                if epoch_loss < est.best_loss_:
                    best_state = _snapshot(modules)
                if epoch_loss > est.best_loss_ - est.tol:
                    est._no_improvement_count += 1
                else:
                    est._no_improvement_count = 0
                est.best_loss_ = min(est.best_loss_, epoch_loss)

            seconds = time.perf_counter() - start
            if est.verbose:
                line = f"Iteration {est.n_iter_}, loss = {epoch_loss:.8f}"
                if X_val is not None:
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
