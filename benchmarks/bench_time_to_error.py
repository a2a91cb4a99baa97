"""Time to the Autoencoder's error: when does default GFE match it, and at what cost?

The shape sweep (``bench_shapes.py``) compares whole fits: default GFE trains
until its own early stopping ends it, 1.3-3.4 times the Autoencoder's epochs,
and ends more accurate. This benchmark asks the question a user with a time
budget asks: how long does GFE take to reach the default Autoencoder's held-out
error? For each cell of the sweep (the same samples, one seed each by default)
it fits PCA and the default Autoencoder, then default GFE, and at epochs on a
geometric grid (every 25% more epochs) it pauses GFE's clock and measures the
held-out error of the model a fit stopped there would return (the best weights
checked so far, finished as ``fit`` finishes them: the start encoder, the kept
training codes and the error model fitted, then ``transform``). The first
such epoch whose error is at most the Autoencoder's gives GFE's time to the
Autoencoder's error (its fit time up to that epoch, the pauses not counted);
GFE then trains on to its own stop, in the same run, so the report also gives
its whole fit time and its final error against the Autoencoder's.

Usage::

    python benchmarks/bench_time_to_error.py            # 12 cells, 3 seeds
    python benchmarks/bench_time_to_error.py --seeds 0 --cells burgers-p96
    python benchmarks/bench_time_to_error.py --quick    # smoke run for CI
"""

import argparse
import copy
import json
import math
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from bench_shapes import (
    CELLS,
    FAMILIES,
    N_TEST,
    _nmse,
    cell_runs,
    machine_description,
    ordered_tasks,
)
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

import skgfe._training as training
from skgfe import Autoencoder, GradientFlowEncoder

# The fit-time target of the shape sweep is set for n >= 1000.
DEFAULT_CELLS = [cell for cell in CELLS if cell[1] >= 1000]
QUICK_CELLS = [("burgers-p96", 100, 3)]
# Evaluation epochs: the first check at or after FIRST_EPOCH * GROWTH**j.
FIRST_EPOCH = 5
GROWTH = 1.25


def evaluation_epochs(max_iter):
    """The geometric grid of epochs at which GFE's model is measured."""
    epochs, epoch = [], float(FIRST_EPOCH)
    while epoch <= max_iter:
        if not epochs or math.ceil(epoch) > epochs[-1]:
            epochs.append(math.ceil(epoch))
        epoch *= GROWTH
    return epochs


def _finished(model, loop):
    """``model`` finished as ``fit`` finishes it (start encoder, error model).

    The start encoder's weights and minibatches are drawn from a fixed seed:
    the fit's own generator must stay untouched for the fit to go on as it
    would unmeasured (so the measured model can differ from a fit stopped
    there in those draws only).
    """
    model._end_training()
    model._fit_amortized_start(loop.X_train, torch.Generator().manual_seed(0), False)
    model._fit_error_model(loop.X_train, loop.X_val)
    return model


def stopped_here(loop):
    """A copy of the model a fit stopped at this check would return: the best
    weights checked so far, finished as ``fit`` finishes them."""
    model = copy.deepcopy(loop.est)
    training._restore(model._modules(), loop.best_state)
    return _finished(model, loop)


def current_weights(loop):
    """A copy of the model with the weights this check measures (the current
    averaged weights, not the best so far), finished as ``fit`` finishes them."""
    with loop.measured_weights():
        model = copy.deepcopy(loop.est)
    return _finished(model, loop)


def timed_fit(model, X_train, X_test):
    """Fit ``model``: (held-out error, fit seconds, epochs)."""
    start = time.perf_counter()
    model.fit(X_train)
    seconds = time.perf_counter() - start
    error = _nmse(X_test, model.inverse_transform(model.transform(X_test)))
    return float(error), seconds, int(model.n_iter_)


def fit_measured(model, X_train, X_test, grid, measure=stopped_here, done=None):
    """Fit ``model``, measuring on its way.

    At the first check at or after each epoch of ``grid`` the held-out error of
    ``measure(loop)`` is measured, the fit's clock paused meanwhile, until
    ``done(measured)`` is true (the fit goes on unmeasured).

    Returns
    -------
    seconds : float
        The fit's time, the pauses not counted.
    measured : list of (epoch, seconds to it, held-out error)
    """
    grid = list(grid)
    clock = {"start": 0.0, "paused": 0.0}
    measured = []
    check_progress = training._EpochLoop.check_progress

    def measuring_check(loop):
        check_progress(loop)
        epoch = loop.est.n_iter_
        if not grid or epoch < grid[0] or (done is not None and done(measured)):
            return
        while grid and grid[0] <= epoch:
            grid.pop(0)
        pause = time.perf_counter()
        measured_model = measure(loop)
        reconstruction = measured_model.inverse_transform(
            measured_model.transform(X_test)
        )
        seconds = pause - clock["start"] - clock["paused"]
        measured.append((epoch, seconds, float(_nmse(X_test, reconstruction))))
        clock["paused"] += time.perf_counter() - pause

    training._EpochLoop.check_progress = measuring_check
    try:
        clock["start"] = time.perf_counter()
        model.fit(X_train)
        seconds = time.perf_counter() - clock["start"] - clock["paused"]
    finally:
        training._EpochLoop.check_progress = check_progress
    return seconds, measured


def run_cell(family, n_train, k, seed, max_iter=None):
    """PCA, the Autoencoder and GFE on one cell and seed, GFE measured on its way."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = FAMILIES[family][0](n_train + N_TEST, seed)
    X_train, X_test = X[:n_train], X[n_train:]
    shared = dict(n_components=k, random_state=seed)
    if max_iter is not None:
        shared["max_iter"] = max_iter
    pca = PCA(k).fit(X_train)
    row = {"PCA": _nmse(X_test, pca.inverse_transform(pca.transform(X_test)))}
    row["Autoencoder"] = timed_fit(Autoencoder(**shared), X_train, X_test)
    target = row["Autoencoder"][0]
    gfe = GradientFlowEncoder(**shared)
    seconds, measured = fit_measured(
        gfe,
        X_train,
        X_test,
        evaluation_epochs(gfe.max_iter),
        done=lambda measured: bool(measured) and measured[-1][2] <= target,
    )
    row["GFE"] = (
        _nmse(X_test, gfe.inverse_transform(gfe.transform(X_test))),
        seconds,
        gfe.n_iter_,
    )
    row["reached"] = next((m for m in measured if m[2] <= target), None)
    row["measured"] = measured
    return row


def format_report(results, cells, seeds, args, seconds):
    quick = " --quick" if args.quick else ""
    lines = [
        "# Time to the Autoencoder's error",
        "",
        (
            f"Generated by `python benchmarks/bench_time_to_error.py{quick}` in "
            f"{seconds / 60:.1f} min, {args.jobs} jobs in parallel."
            if not args.report_only
            else "Assembled by `python benchmarks/bench_time_to_error.py "
            "--report-only` from the finished tasks of `time_to_error_raw.json`."
        ),
        "",
        *([f"- Note: {args.note}"] if args.note else []),
        f"- Machine: {machine_description()}",
        f"- Seeds {list(seeds)}; {N_TEST} held-out samples; every model at its "
        "defaults. Errors relative to PCA's (mean over seeds).",
        f"- GFE measured at the first check after epochs {FIRST_EPOCH} x "
        f"{GROWTH}^j: the model a fit stopped there returns (best weights so far, "
        "finished as fit finishes them); its clock paused while measured.",
        "- Reached at: the first measured epoch whose held-out error is at most "
        "the Autoencoder's (median over seeds; the grid makes its time an upper "
        f"bound, within {GROWTH - 1:.0%}); time to it and GFE's whole fit "
        "relative to the Autoencoder's whole fit (median over seeds).",
        "",
        "| family | n | k | AE / PCA | GFE / PCA | GFE / AE | epochs GFE / AE | "
        "reached at epoch | time to AE's error / AE fit | whole fit GFE / AE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    counts = {"reached": 0, "within1": 0, "within2": 0, "whole3": 0, "cells": 0}
    for family, n_train, k in cells:
        runs = cell_runs(results, (family, n_train, k), seeds)
        if not runs:
            continue
        pca = np.array([r["PCA"] for r in runs])
        ae = np.mean([r["Autoencoder"][0] for r in runs] / pca)
        gfe = np.mean([r["GFE"][0] for r in runs] / pca)
        reached = [r["reached"] for r in runs]
        to_error = [
            np.inf if hit is None else hit[1] / r["Autoencoder"][1]
            for hit, r in zip(reached, runs)
        ]
        at_epoch = [np.inf if hit is None else hit[0] for hit in reached]
        whole = np.median([r["GFE"][1] / r["Autoencoder"][1] for r in runs])
        to_error_median = float(np.median(to_error))
        counts["cells"] += 1
        counts["reached"] += all(hit is not None for hit in reached)
        counts["within1"] += to_error_median <= 1
        counts["within2"] += to_error_median <= 2
        counts["whole3"] += whole <= 3
        epochs = (
            f"{int(np.median([r['GFE'][2] for r in runs]))} / "
            f"{int(np.median([r['Autoencoder'][2] for r in runs]))}"
        )
        epoch_text = (
            "not reached"
            if np.isinf(np.median(at_epoch))
            else str(int(np.median(at_epoch)))
        )
        time_text = "-" if np.isinf(to_error_median) else f"{to_error_median:.2f}"
        lines.append(
            f"| {family} | {n_train} | {k} | {ae:.3f} | {gfe:.3f} | {gfe / ae:.2f} | "
            f"{epochs} | {epoch_text} | {time_text} | {whole:.2f} |"
            + ("" if len(runs) == len(seeds) else f" ({len(runs)} seeds)")
        )
    lines += [
        "",
        f"GFE reaches the Autoencoder's error on every seed in {counts['reached']} "
        f"of {counts['cells']} cells; in at most the Autoencoder's fit time in "
        f"{counts['within1']}, in at most twice it in {counts['within2']} "
        f"(medians over seeds). Its whole fit takes at most 3 times the "
        f"Autoencoder's in {counts['whole3']} of {counts['cells']}.",
    ]
    return "\n".join(lines) + "\n"


def task_parser(description):
    """The command line of a benchmark run task by task over cells and seeds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cells", nargs="+", help="only the cells of these families")
    parser.add_argument("--note", help="a line for the report (run conditions)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the finished tasks of the raw file, run none",
    )
    return parser


def run_tasks(run_cell, tasks, max_iter, jobs, raw, raw_path, describe):
    """Run ``run_cell`` on ``tasks`` in ``jobs`` processes.

    Every finished task is written into ``raw`` and the raw file at once, and
    printed by ``describe(row)``. Returns {task: row} of the tasks run.
    """
    results = {}
    with ProcessPoolExecutor(jobs) as pool:
        futures = {
            pool.submit(run_cell, *task, max_iter=max_iter): task for task in tasks
        }
        for future in as_completed(futures):
            task = futures[future]
            results[task] = row = future.result()
            raw[repr(task)] = row
            raw_path.write_text(json.dumps(raw, indent=1))
            print(f"{task}: {describe(row)}", flush=True)
    return results


def main(argv=None):
    args = task_parser(__doc__.splitlines()[0]).parse_args(argv)
    cells, max_iter = DEFAULT_CELLS, None
    if args.quick:
        cells, max_iter, args.seeds = QUICK_CELLS, 20, [0]
    if args.cells:
        cells = [cell for cell in cells if cell[0] in args.cells]
    tasks = ordered_tasks(cells, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "time_to_error" + ("_quick" if args.quick else "")
    raw_path = out / f"{name}_raw.json"
    # Every finished task is written at once; --report-only reports them.
    raw = json.loads(raw_path.read_text()) if args.report_only else {}
    results = {task: raw[repr(task)] for task in tasks if repr(task) in raw}
    start = time.perf_counter()
    if not args.report_only:
        results |= run_tasks(
            run_cell,
            tasks,
            max_iter,
            args.jobs,
            raw,
            raw_path,
            lambda row: (
                f"reached {row['reached']}, AE {row['Autoencoder']}, GFE {row['GFE']}"
            ),
        )
    seconds = time.perf_counter() - start
    report = format_report(results, cells, args.seeds, args, seconds)
    (out / f"{name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
