"""Training longer: what accuracy beyond early stopping costs in fit time.

Default GFE stops on its own plateau test. The shape sweep
(``bench_shapes.py``) compares it with a reference trained without early
stopping for 8000 optimiser steps (``early_stopping=False``, a fixed
``max_iter``, the weights of the lowest training loss kept). Where default GFE
stops well before the reference's epochs, this benchmark measures what more
training buys and costs. For each cell and seed (the sweep's samples) it fits
the default Autoencoder and default GFE, then two long fits measured on their
way at epochs on a geometric grid, their clocks paused meanwhile:

- the reference: the model a fit with that ``max_iter`` would return (the
  lowest-training-loss weights so far, finished as ``fit`` finishes them);
- default GFE trained on past its stop (the plateau test off, the reference's
  epochs): its current weights, as a stopping rule that stopped exactly there
  would keep them. Up to default GFE's stop this is default GFE's own run.

The report gives the epoch and fit time (relative to the Autoencoder's whole
fit) at which they first reach default GFE's held-out error and 1.15 times the
reference's.

Usage::

    python benchmarks/bench_training_longer.py           # 5 cells, 3 seeds
    python benchmarks/bench_training_longer.py --cells spectra-p128 --seeds 0
    python benchmarks/bench_training_longer.py --quick   # smoke run for CI
"""

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_shapes import (
    FAMILIES,
    N_TEST,
    REFERENCE,
    _nmse,
    cell_runs,
    machine_description,
    make_models,
    ordered_tasks,
)
from bench_time_to_error import (
    GROWTH,
    current_weights,
    evaluation_epochs,
    fit_measured,
    run_tasks,
    task_parser,
    timed_fit,
)
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

from skgfe import GradientFlowEncoder

# The sweep's cells of 1000 samples where default GFE stops before the
# reference's 500 epochs (shapes.md, medians over seeds).
DEFAULT_CELLS = [
    ("manifold2-p32", 1000, 1),
    ("manifold6-p512", 1000, 3),
    ("burgers-p96", 1000, 8),
    ("spectra-p128", 1000, 16),
    ("digits-p64", 1000, 16),
]
QUICK_CELLS = [("burgers-p96", 100, 3)]
# The shape sweep's target: within this factor of the reference's error.
REFERENCE_FACTOR = 1.15
# Grid epochs below this are not measured (default GFE trains at least 67
# epochs at 1000 samples, see MIN_TRAINING_STEPS).
FIRST_MEASURED_EPOCH = 40


def run_cell(family, n_train, k, seed, max_iter=None):
    """PCA, the Autoencoder, default GFE and the two long fits on one cell and seed."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = FAMILIES[family][0](n_train + N_TEST, seed)
    X_train, X_test = X[:n_train], X[n_train:]
    models = make_models(n_train, k, seed, max_iter)
    pca = PCA(k).fit(X_train)
    row = {"PCA": _nmse(X_test, pca.inverse_transform(pca.transform(X_test)))}
    row["Autoencoder"] = timed_fit(models["Autoencoder"], X_train, X_test)
    row["GFE"] = timed_fit(models["GFE"], X_train, X_test)
    reference = models[REFERENCE]
    epochs = reference.max_iter
    grid = [e for e in evaluation_epochs(epochs) if e >= FIRST_MEASURED_EPOCH]
    grid.append(epochs)
    seconds, measured = fit_measured(reference, X_train, X_test, grid)
    error = _nmse(X_test, reference.inverse_transform(reference.transform(X_test)))
    row["reference"] = (float(error), seconds, int(reference.n_iter_))
    # The sweep fits a reference that kept its start again at a lower
    # learning rate; this benchmark does not, and reports such seeds.
    row["kept_start"] = bool(reference.kept_start_)
    row["measured"] = measured
    trained_on = GradientFlowEncoder(
        **models["GFE"].get_params() | {"max_iter": epochs, "n_iter_no_change": epochs}
    )
    seconds, measured = fit_measured(
        trained_on, X_train, X_test, grid, measure=current_weights
    )
    row["trained_on"] = (seconds, int(trained_on.n_iter_))
    row["trained_on_measured"] = measured
    return row


def first_reaching(measured, target):
    """(epoch, seconds, first) of the first measurement at most ``target``
    (``first``: it is the first measurement), or None."""
    for i, (epoch, seconds, error) in enumerate(measured):
        if error <= target:
            return epoch, seconds, i == 0
    return None


def _reached_text(hits, ae_seconds, last_epoch):
    """'epoch, time / AE' of the seed with the median time ('<=' where the
    first measurement had reached it), or on how many seeds it was not."""
    missed = sum(hit is None for hit in hits)
    if missed:
        return f"not by epoch {last_epoch} on {missed} of {len(hits)} seeds"
    ratios = [hit[1] / a for hit, a in zip(hits, ae_seconds)]
    median = sorted(range(len(hits)), key=ratios.__getitem__)[(len(hits) - 1) // 2]
    epoch, _, first = hits[median]
    bound = "<= " if first else ""
    return f"{bound}{epoch}, {bound}{ratios[median]:.2f}"


def curve_table(results, cells, seeds):
    """Default GFE trained on, by measured epoch: its error relative to the
    reference's (means over seeds) and its time relative to the Autoencoder's
    whole fit (median over seeds)."""
    rows, header = [], None
    for family, n_train, k in cells:
        runs = cell_runs(results, (family, n_train, k), seeds)
        if not runs:
            continue
        curves = [r["trained_on_measured"] for r in runs]
        epochs = [m[0] for m in curves[0]]
        if any([m[0] for m in curve] != epochs for curve in curves):
            continue  # seeds measured at other epochs (a changed grid)
        header = header or epochs
        if epochs != header:
            continue
        reference = np.mean([r["reference"][0] for r in runs])
        texts = []
        for i in range(len(epochs)):
            error = np.mean([curve[i][2] for curve in curves]) / reference
            ratio = np.median(
                [c[i][1] / r["Autoencoder"][1] for c, r in zip(curves, runs)]
            )
            texts.append(f"{error:.2f} ({ratio:.1f})")
        rows.append(f"| {family} | {n_train} | {k} | " + " | ".join(texts) + " |")
    if not rows:
        return []
    return [
        "",
        "Default GFE trained on, by epoch: held-out error relative to the "
        "reference's (mean errors over seeds) and, in brackets, fit time to that "
        "epoch relative to the Autoencoder's whole fit (median over seeds).",
        "",
        "| family | n | k | " + " | ".join(f"epoch {e}" for e in header) + " |",
        "|---|---|---|" + "---|" * len(header),
        *rows,
    ]


def format_report(results, cells, seeds, args, seconds):
    quick = " --quick" if args.quick else ""
    lines = [
        "# Training longer: what more training buys and costs",
        "",
        (
            f"Generated by `python benchmarks/bench_training_longer.py{quick}` in "
            f"{seconds / 60:.1f} min, {args.jobs} jobs in parallel."
            if not args.report_only
            else "Assembled by `python benchmarks/bench_training_longer.py "
            "--report-only` from the finished tasks of `training_longer_raw.json`."
        ),
        "",
        *([f"- Note: {args.note}"] if args.note else []),
        f"- Machine: {machine_description()}",
        f"- Seeds {list(seeds)}; {N_TEST} held-out samples; the shape sweep's "
        "samples. Errors relative to PCA's (mean over seeds).",
        "- Reference: GFE with `early_stopping=False` and a fixed `max_iter` "
        "(8000 optimiser steps), as in the shape sweep; measured on its way: the "
        "model a fit with that `max_iter` returns. Trained on: default GFE with "
        "the plateau test off for the reference's epochs; measured on its way: "
        "its current weights (as a rule stopping exactly there would keep them).",
        f"- Measured at the first check after epochs 5 x {GROWTH}^j (from epoch "
        f"{FIRST_MEASURED_EPOCH}) and at the last epoch, the fit's clock paused "
        f"meanwhile (the grid makes epochs and times upper bounds, within "
        f"{GROWTH - 1:.0%}; '<=' where the first measurement had reached it).",
        f"- Reaches: the first measured epoch whose error is at most the target "
        f"(default GFE's error, or {REFERENCE_FACTOR} times the reference's final "
        "error), seed by seed; shown for the seed with the median time, relative "
        "to the default Autoencoder's whole fit.",
        "",
        "| family | n | k | GFE / PCA | reference / PCA | GFE / reference | "
        "epochs GFE / reference | fit GFE / AE | reference reaches GFE's error: "
        f"epoch, time / AE | reference reaches {REFERENCE_FACTOR}x itself | "
        f"trained on reaches {REFERENCE_FACTOR}x the reference | trained on, "
        "last epoch / reference | reference's fit / AE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    kept = 0
    for family, n_train, k in cells:
        runs = cell_runs(results, (family, n_train, k), seeds)
        if not runs:
            continue
        kept += sum(r["kept_start"] for r in runs)
        pca = np.array([r["PCA"] for r in runs])
        gfe = np.mean([r["GFE"][0] for r in runs] / pca)
        ref = np.mean([r["reference"][0] for r in runs] / pca)
        last = np.mean([r["trained_on_measured"][-1][2] for r in runs] / pca)
        ae_seconds = [r["Autoencoder"][1] for r in runs]
        last_epoch = runs[0]["reference"][2]
        reached = [
            _reached_text(
                [first_reaching(r[key], target(r)) for r in runs],
                ae_seconds,
                last_epoch,
            )
            for key, target in (
                ("measured", lambda r: r["GFE"][0]),
                ("measured", lambda r: REFERENCE_FACTOR * r["reference"][0]),
                ("trained_on_measured", lambda r: REFERENCE_FACTOR * r["reference"][0]),
            )
        ]
        epochs = (
            f"{int(np.median([r['GFE'][2] for r in runs]))} / "
            f"{int(np.median([r['reference'][2] for r in runs]))}"
        )
        fit = np.median([r["GFE"][1] / a for r, a in zip(runs, ae_seconds)])
        ref_fit = np.median([r["reference"][1] / a for r, a in zip(runs, ae_seconds)])
        lines.append(
            f"| {family} | {n_train} | {k} | {gfe:.3f} | {ref:.3f} | {gfe / ref:.2f} | "
            f"{epochs} | {fit:.2f} | {' | '.join(reached)} | {last / ref:.2f} | "
            f"{ref_fit:.2f} |"
            + ("" if len(runs) == len(seeds) else f" ({len(runs)} seeds)")
        )
    lines += curve_table(results, cells, seeds)
    if kept:
        lines += [
            "",
            f"The reference kept its start on {kept} seeds (the sweep would fit "
            "those again at a lower learning rate; this benchmark does not).",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = task_parser(__doc__.splitlines()[0]).parse_args(argv)
    cells, max_iter = DEFAULT_CELLS, None
    if args.quick:
        cells, max_iter, args.seeds = QUICK_CELLS, 60, [0]
    if args.cells:
        cells = [cell for cell in cells if cell[0] in args.cells]
    tasks = ordered_tasks(cells, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "training_longer" + ("_quick" if args.quick else "")
    raw_path = out / f"{name}_raw.json"
    # Every finished task is written at once, into the raw file's other tasks
    # (a subset run replaces its own tasks only); --report-only reports them.
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
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
                f"GFE {row['GFE']}, reference {row['reference']}, "
                f"AE {row['Autoencoder']}, trained on {row['trained_on']}"
            ),
        )
    seconds = time.perf_counter() - start
    report = format_report(results, cells, args.seeds, args, seconds)
    (out / f"{name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
