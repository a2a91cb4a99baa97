"""How long should training go on? Stopping rules replayed on full training curves.

For each cell of the shape sweep (``bench_shapes.py``, one seed), default GFE is
trained for all ``max_iter`` epochs with the plateau test switched off
(``n_iter_no_change`` larger than the budget). After every progress check the
script records the monitored validation loss, the mean training loss of the
check's epochs and, as a stand-in for the held-out error, the same validation
loss on 500 held-out samples, all for the weights the check measures (the
weight average). Stopping does not change the weights before the stop, so
each rule's fit is a prefix of this one: the script replays the rules of
:mod:`skgfe._training` on the recorded curves (the plateau test, the floor of
optimiser steps, the candidates' training-loss bound, the best check kept) with
and without the window that lets training go on while the best monitored loss
of the last ``5 * n_iter_no_change`` checks falls by more than a threshold, for
several thresholds, and reports the epoch each rule stops at and the held-out
loss of the weights it keeps, relative to the rule without a window.

Usage::

    python benchmarks/bench_stopping_window.py  # 12 cells, about 15 min on 2 cores
    python benchmarks/bench_stopping_window.py --cells burgers-p96 --jobs 1
"""

import argparse
import json
import math
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from bench_shapes import CELLS, FAMILIES, N_TEST, machine_description
from sklearn.exceptions import ConvergenceWarning

import skgfe._training as training
from skgfe import GradientFlowEncoder

THRESHOLDS = [0.005, 0.01, 0.015, 0.02, 0.03]
# The cells with at most 1000 training samples: a never-stopping fit of 5000
# samples takes most of an hour.
DEFAULT_CELLS = [cell for cell in CELLS if cell[1] <= 1000]


def record_curves(family, n_train, k, seed, max_iter=1000):
    """Train default GFE for ``max_iter`` epochs and record every check."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = FAMILIES[family][0](n_train + N_TEST, seed)
    X_train, X_test = X[:n_train], X[n_train:]
    curves = {"validation": [], "held_out": [], "training": []}
    loop = training._EpochLoop
    check_progress, measure_start = loop.check_progress, loop.measure_start

    def held_out_loss(estimator):
        # The validation loss caches the nearest training samples of the
        # samples it scores: keep the held-out samples' cache apart.
        scaled = curves.setdefault("_X", estimator._scale(estimator._to_tensor(X_test)))
        cached = estimator._validation_neighbours
        estimator._validation_neighbours = curves.get("_cache")
        loss = estimator._validation_loss(scaled)
        curves["_cache"] = estimator._validation_neighbours
        estimator._validation_neighbours = cached
        return loss

    def recording_start(self):
        measure_start(self)
        curves["start_validation"] = -self.est.best_validation_score_
        curves["bound"] = float(self.training_bound)
        with torch.no_grad():
            curves["start_held_out"] = held_out_loss(self.est)

    def recording_check(self):
        epochs = len(self.since_check)
        check_progress(self)
        est = self.est
        curves["validation"].append(-est.validation_scores_[-1])
        curves["training"].append(float(np.mean(est.loss_curve_[-epochs:])))
        with self.measured_weights(), torch.no_grad():
            curves["held_out"].append(held_out_loss(est))

    loop.check_progress, loop.measure_start = recording_check, recording_start
    try:
        model = GradientFlowEncoder(
            n_components=k,
            random_state=seed,
            n_iter_no_change=10**9,
            max_iter=max_iter,
        )
        n_fit = n_train - math.ceil(model.validation_fraction * n_train)
        start = time.perf_counter()
        model.fit(X_train)
        seconds = time.perf_counter() - start
    finally:
        loop.check_progress, loop.measure_start = check_progress, measure_start
    curves.pop("_X"), curves.pop("_cache", None)
    batch = model._effective_batch_size(n_fit)
    curves["steps_per_check"] = math.ceil(n_fit / batch) * training.epochs_per_check(
        n_fit, batch
    )
    curves["epochs_per_check"] = training.epochs_per_check(n_fit, batch)
    curves["seconds"] = seconds
    return (family, n_train, k, seed), curves


def replay(curves, threshold, tol=1e-4, patience=10):
    """The epoch a rule stops at and the held-out loss of the check it keeps.

    ``threshold`` None: the plateau test alone; otherwise with the window.
    """
    best, kept, trained_best, count, history = (
        curves["start_validation"],
        None,
        np.inf,
        0,
        [],
    )
    for i, (monitored, fitted) in enumerate(
        zip(curves["validation"], curves["training"])
    ):
        candidate = monitored if fitted <= curves["bound"] else max(monitored, best)
        if candidate < best:
            best, kept = candidate, i
        count = 0 if monitored < trained_best - tol * abs(trained_best) else count + 1
        trained_best = min(trained_best, monitored)
        history.append(monitored)
        stop = count >= patience
        if (i + 1) * curves["steps_per_check"] < training.MIN_TRAINING_STEPS:
            stop = False
        if stop and threshold is not None:
            stop = not training.improved_in_window(history, patience, tol, threshold)
        if stop:
            break
    epoch = (i + 1) * curves["epochs_per_check"]
    held_out = curves["start_held_out"] if kept is None else curves["held_out"][kept]
    return epoch, held_out


def format_report(results, seconds, seed):
    lines = [
        "# Stopping window: rules replayed on full training curves",
        "",
        f"Generated by `python benchmarks/bench_stopping_window.py` in "
        f"{seconds / 60:.1f} min.",
        "",
        f"- Machine: {machine_description()}",
        f"- Default GFE trained for all its epochs (no plateau stop), seed {seed}; "
        "each rule replayed on its checks. Held-out: the validation loss of 500 "
        "held-out samples for the kept weights, relative to the plateau test alone.",
        "",
        "| cell | plateau test: epochs | "
        + " | ".join(f"window {t:.1%}: epochs, held-out" for t in THRESHOLDS)
        + " |",
        "|---|---|" + "---|" * len(THRESHOLDS),
    ]
    for key, curves in results:
        family, n_train, k, _ = key
        epoch, plateau = replay(curves, None)
        cells = [f"{family} n={n_train} k={k}", str(epoch)]
        for threshold in THRESHOLDS:
            epoch, held_out = replay(curves, threshold)
            cells.append(f"{epoch}, {held_out / plateau:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", nargs="+", help="only the cells of these families")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    cells = [c for c in DEFAULT_CELLS if not args.cells or c[0] in args.cells]
    max_iter = 1000
    if args.quick:
        cells, max_iter = [("burgers-p96", 100, 3)], 30
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(record_curves, *cell, args.seed, max_iter) for cell in cells
        ]
        results = [future.result() for future in futures]
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "stopping_window" + ("_quick" if args.quick else "")
    raw = {str(key): curves for key, curves in results}
    (out / f"{name}_raw.json").write_text(json.dumps(raw))
    report = format_report(results, seconds, args.seed)
    (out / f"{name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
