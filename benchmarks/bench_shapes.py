"""Shape sweep: does default training learn on data shapes the other benchmarks skip?

Every cell fits, on the same training samples and at their defaults, PCA, the
GradientFlowEncoder, the Autoencoder and a converged GFE reference (no early
stopping, a long budget of optimiser steps, the best training loss kept; where
it keeps its PCA start, it is fitted again at a third of the learning rate, at
most twice, as default training restarts when its loss never beats the
start's), the same reference trained only on the samples default GFE trains on
(its early-stopping validation split left out: GFE over it measures when
training stops, apart from the samples early stopping holds out), and
reports held-out errors relative to PCA's, fit time relative to the
Autoencoder's, epochs, and whether GFE kept its PCA start. The cells cross
non-linear manifolds (a fixed random tanh network of a Gaussian code of
intrinsic dimension 2, 6 or 12, in 32 to 2048 features), viscous Burgers
snapshots, spectra and digits with training-set sizes from 100 to 5000 and
``n_components`` from below the intrinsic dimension to three times it.

Usage::

    python benchmarks/bench_shapes.py          # full sweep (about 1.5 hours on 2 cores)
    python benchmarks/bench_shapes.py --quick  # smoke run for CI
    python benchmarks/bench_shapes.py --cells manifold6-p64 --seeds 0 --jobs 1
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

import skgfe
from skgfe import Autoencoder, GradientFlowEncoder
from skgfe.datasets import make_burgers, make_spectra

N_TEST = 500
# The converged reference: this many optimiser steps (minibatches of 64), about
# 570 epochs of 1000 samples, without early stopping.
REFERENCE_STEPS = 8_000
# Refits of a reference that keeps its start, each at a third of the learning rate.
REFERENCE_RESTARTS = 2
REFERENCE = "GFE reference"
# The same reference trained on default GFE's training split only (the samples
# it does not hold out for early stopping): default GFE over it measures when
# training stops, apart from the samples early stopping costs.
SPLIT_REFERENCE = "GFE reference, training split"


def manifold(n_samples, seed, n_latent, n_features, noise=0.01):
    """Samples of a fixed random tanh network of a Gaussian code, plus noise.

    The network depends on the shape only; ``seed`` draws the codes and noise.
    """
    weights = np.random.RandomState(1000 * n_latent + n_features)
    first = weights.randn(n_latent, 64)
    second = weights.randn(64, n_features) / 8
    rng = np.random.RandomState(seed)
    codes = rng.randn(n_samples, n_latent)
    return np.tanh(codes @ first) @ second + noise * rng.randn(n_samples, n_features)


def burgers_snapshots(n_samples, seed, n_features=96):
    """Snapshots u(., t) of viscous Burgers trajectories, one random time each."""
    n_trajectories = math.ceil(n_samples / 5)
    _, Y, _ = make_burgers(
        n_trajectories, n_features, n_times=11, random_state=seed, time_step=2e-3
    )
    rows = Y.reshape(-1, n_features)
    return rows[np.random.RandomState(seed).permutation(len(rows))[:n_samples]]


def spectra(n_samples, seed):
    return make_spectra(n_samples=n_samples, n_features=128, random_state=seed)


def digits(n_samples, seed):
    X = load_digits().data
    return X[np.random.RandomState(seed).permutation(len(X))[:n_samples]]


# name: (draw(n_samples, seed), intrinsic dimension or None)
FAMILIES = {
    **{
        f"manifold{d}-p{p}": (
            lambda n, s, d=d, p=p: manifold(n, s, d, p),
            d,
        )
        for d, p in [(2, 32), (2, 512), (6, 64), (6, 512), (6, 2048), (12, 128)]
    },
    "burgers-p96": (burgers_snapshots, None),
    "spectra-p128": (spectra, None),
    "digits-p64": (digits, None),
}

# (family, n_train, n_components): n from 100 to 5000, n_components from below
# the intrinsic dimension to three times it.
CELLS = [
    ("manifold2-p32", 1000, 1),
    ("manifold2-p32", 5000, 6),
    ("manifold2-p512", 1000, 2),
    ("manifold6-p64", 100, 6),
    ("manifold6-p64", 1000, 16),
    ("manifold6-p512", 1000, 8),
    ("manifold6-p512", 1000, 3),
    ("manifold6-p2048", 1000, 6),
    ("manifold12-p128", 1000, 12),
    ("manifold12-p128", 5000, 36),
    ("burgers-p96", 1000, 8),
    ("burgers-p96", 100, 3),
    ("spectra-p128", 1000, 16),
    ("digits-p64", 1000, 16),
]

QUICK_CELLS = [("manifold6-p64", 200, 8), ("burgers-p96", 100, 3)]


def _nmse(X, reconstruction):
    return np.mean((X - reconstruction) ** 2) / np.mean(X.var(axis=0))


def reference_max_iter(n_train, validation_fraction=0.0, batch_size=64):
    """Epochs of the reference: REFERENCE_STEPS minibatches of ``batch_size``."""
    n_fit = round(n_train * (1 - validation_fraction))
    return max(1, REFERENCE_STEPS // math.ceil(n_fit / batch_size))


def make_models(n_train, k, seed, max_iter=None):
    """PCA, default GFE, the converged GFE reference (on all training samples and
    on default GFE's training split) and the default Autoencoder."""
    shared = dict(n_components=k, random_state=seed)
    if max_iter is not None:
        shared["max_iter"] = max_iter

    def reference(n_fit):
        epochs = reference_max_iter(n_fit) if max_iter is None else max_iter
        return GradientFlowEncoder(
            **{**shared, "max_iter": epochs},
            early_stopping=False,
            n_iter_no_change=epochs,
        )

    return {
        "PCA": PCA(k),
        "GFE": GradientFlowEncoder(**shared),
        "GFE reference": reference(n_train),
        SPLIT_REFERENCE: reference(n_train - validation_size(n_train)),
        "Autoencoder": Autoencoder(**shared),
    }


def validation_size(n_train):
    """Samples default GFE holds out for early stopping (see _base)."""
    fraction = GradientFlowEncoder().validation_fraction
    return max(1, int(round(fraction * n_train)))


def training_split(X_train, k, seed):
    """The rows default GFE trains on (its validation split left out).

    The split is drawn before the first epoch, so a one-epoch fit with the
    same random_state draws the same one; it is read off the fit's
    permutation.
    """
    orders = []
    split = GradientFlowEncoder._validation_split

    def recording(self, X, generator, new_model):
        orders.append(split(self, X, generator, new_model))
        return orders[-1]

    GradientFlowEncoder._validation_split = recording
    try:
        GradientFlowEncoder(n_components=k, random_state=seed, max_iter=1).fit(X_train)
    finally:
        GradientFlowEncoder._validation_split = split
    return X_train[orders[0][validation_size(len(X_train)) :].cpu().numpy()]


def run_cell(family, n_train, k, seed, max_iter=None, skip=()):
    """One cell and seed: {model: (error, fit seconds, epochs, kept start)}."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    draw, _ = FAMILIES[family]
    X = draw(n_train + N_TEST, seed)
    X_train, X_test = X[:n_train], X[n_train:]
    row = {}
    for name, model in make_models(n_train, k, seed, max_iter).items():
        if name in skip:
            continue
        X_fit = X_train
        if name == SPLIT_REFERENCE:
            X_fit = training_split(X_train, k, seed)
        start = time.perf_counter()
        model.fit(X_fit)
        epochs = int(getattr(model, "n_iter_", 0))
        if name in (REFERENCE, SPLIT_REFERENCE):
            # Without early stopping no plateau restarts a fit whose steps are
            # too large for the start: the reference does it itself.
            for _ in range(REFERENCE_RESTARTS):
                if not model.kept_start_:
                    break
                lr = model.learning_rate_init / 3
                model.set_params(learning_rate_init=lr).fit(X_fit)
                epochs += model.n_iter_
        seconds = time.perf_counter() - start
        error = _nmse(X_test, model.inverse_transform(model.transform(X_test)))
        row[name] = (
            float(error),
            seconds,
            epochs,
            bool(getattr(model, "kept_start_", False)),
        )
    return row


def cell_runs(results, cell, seeds):
    """The finished rows of ``cell``'s seeds, in the order of ``seeds``."""
    return [results[(*cell, seed)] for seed in seeds if (*cell, seed) in results]


def ordered_tasks(cells, seeds):
    """The (family, n_train, k, seed) tasks of ``cells`` in the order they run.

    Seed by seed (a run stopped early has whole seeds), and within a seed the
    slowest cells first, so that the parallel jobs end together.
    """
    n_features = {family: FAMILIES[family][0](2, 0).shape[1] for family, *_ in cells}
    tasks = [(*cell, seed) for seed in seeds for cell in cells]
    tasks.sort(key=lambda t: (seeds.index(t[3]), -t[1] * (n_features[t[0]] + 64)))
    return tasks


def machine_description():
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads 1 per job; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, skgfe {skgfe.__version__}"
    )


def format_report(results, cells, seeds, args, seconds):
    quick = " --quick" if args.quick else ""
    met = {"reference": [], "autoencoder": [], "fit": [], "start": []}
    lines = [
        "# Shape sweep: GFE, PCA and the Autoencoder on data shapes",
        "",
        (
            f"Generated by `python benchmarks/bench_shapes.py{quick}`"
            f" in {seconds / 60:.1f} min, {args.jobs} jobs in parallel."
            if not args.report_only
            else "Assembled by `python benchmarks/bench_shapes.py --report-only` "
            "from the finished tasks of `shapes_raw.json`."
        ),
        "",
        *([f"- Note: {args.note}"] if args.note else []),
        f"- Machine: {machine_description()}",
        f"- Seeds {list(seeds)} (each draws its own samples and weights); "
        f"{N_TEST} held-out samples.",
        "- Errors: held-out mean squared error relative to PCA's (mean over seeds); "
        f"reference: GFE without early stopping, {REFERENCE_STEPS} optimiser steps, "
        "the best training loss kept.",
        "- Fit ratio: GFE's fit time over the Autoencoder's (median over seeds).",
        "- Kept start: seeds whose default GFE kept its PCA start.",
        "",
        "| family | d | n | k | GFE / PCA | reference / PCA | AE / PCA | "
        "GFE / reference | GFE / AE | fit GFE / AE | epochs GFE / ref / AE | "
        "kept start |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family, n_train, k in cells:
        runs = cell_runs(results, (family, n_train, k), seeds)
        if not runs:
            continue
        pca = np.array([r["PCA"][0] for r in runs])

        def ratio(name, runs=runs, pca=pca):
            return np.mean([r[name][0] for r in runs] / pca)

        gfe, ref, ae = ratio("GFE"), ratio("GFE reference"), ratio("Autoencoder")
        fit = np.median([r["GFE"][1] / r["Autoencoder"][1] for r in runs])
        epochs = [
            int(np.median([r[name][2] for r in runs]))
            for name in ("GFE", "GFE reference", "Autoencoder")
        ]
        kept = sum(bool(r["GFE"][3]) for r in runs)
        met["reference"].append(gfe <= 1.15 * ref)
        met["autoencoder"].append(gfe <= ae)
        if n_train >= 1000:
            met["fit"].append(fit <= 3)
        met["start"].append(not (kept and ref < 0.95))
        d = FAMILIES[family][1] or "-"
        lines.append(
            f"| {family} | {d} | {n_train} | {k} | {gfe:.3f} | {ref:.3f} | "
            f"{ae:.3f} | {gfe / ref:.2f} | {gfe / ae:.2f} | {fit:.2f} | "
            f"{epochs[0]} / {epochs[1]} / {epochs[2]} | {kept}/{len(runs)} |"
            + ("" if len(runs) == len(seeds) else f" ({len(runs)} seeds)")
        )
    lines += [
        "",
        "Targets met (cells):",
        "",
        f"- default GFE within 1.15x of its reference: "
        f"{sum(met['reference'])} of {len(met['reference'])}",
        f"- default GFE at most the Autoencoder's error: "
        f"{sum(met['autoencoder'])} of {len(met['autoencoder'])}",
        f"- GFE fit at most 3x the Autoencoder's (n >= 1000): "
        f"{sum(met['fit'])} of {len(met['fit'])}",
        f"- no PCA start kept where the reference beats PCA by more than 5%: "
        f"{sum(met['start'])} of {len(met['start'])}",
    ]
    return "\n".join(lines + split_reference_table(results, cells, seeds)) + "\n"


def split_reference_table(results, cells, seeds):
    """Default GFE against the reference trained on its own training split.

    The reference trains on every training sample; default GFE holds
    ``validation_fraction`` of them out. The split reference trains on the
    samples default GFE trains on, so GFE over it measures when training stops,
    and the split reference over the reference what the held-out samples cost.
    """
    lines, within = [], []
    for family, n_train, k in cells:
        runs = cell_runs(results, (family, n_train, k), seeds)
        if not runs or any(SPLIT_REFERENCE not in r for r in runs):
            continue
        pca = np.array([r["PCA"][0] for r in runs])
        gfe, ref, split = (
            np.mean([r[name][0] for r in runs] / pca)
            for name in ("GFE", REFERENCE, SPLIT_REFERENCE)
        )
        within.append(gfe <= 1.15 * split)
        lines.append(
            f"| {family} | {n_train} | {k} | {gfe:.3f} | {split:.3f} | {ref:.3f} | "
            f"{gfe / split:.2f} | {split / ref:.2f} |"
        )
    if not lines:
        return []
    return [
        "",
        "## When training stops, apart from the samples early stopping holds out",
        "",
        f"Split reference: the reference trained on default GFE's training split "
        f"only (its validation samples left out, the same {REFERENCE_STEPS} "
        "optimiser steps). Errors relative to PCA's (mean over seeds).",
        "",
        "| family | n | k | GFE / PCA | split reference / PCA | reference / PCA | "
        "GFE / split reference | split reference / reference |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        f"Default GFE within 1.15x of the split reference: {sum(within)} of "
        f"{len(within)} cells.",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--cells", nargs="+", help="only the cells of these families (names above)"
    )
    parser.add_argument("--skip", nargs="+", default=[], help="models to leave out")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished models of a raw file's tasks, run the missing ones",
    )
    parser.add_argument("--note", help="a line for the report (run conditions)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the finished tasks of the raw file, run none",
    )
    args = parser.parse_args(argv)
    cells, max_iter = CELLS, None
    if args.quick:
        cells, max_iter, args.seeds = QUICK_CELLS, 5, [0]
    if args.cells:
        cells = [cell for cell in cells if cell[0] in args.cells]
    start = time.perf_counter()
    tasks = ordered_tasks(cells, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Every finished task is written at once: a long run that is stopped keeps
    # them, and --resume runs only the models they lack.
    raw_path = out / f"shapes{'_quick' if args.quick else ''}_raw.json"
    keep = (args.resume or args.report_only) and raw_path.exists()
    raw = json.loads(raw_path.read_text()) if keep else {}
    results = {task: raw[repr(task)] for task in tasks if repr(task) in raw}
    names = [name for name in make_models(2, 1, 0) if name not in args.skip]

    def finished(task):
        return list(results.get(task, {}))

    # A resumed task runs only the models its row lacks.
    todo = [
        task
        for task in ([] if args.report_only else tasks)
        if any(name not in finished(task) for name in names)
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(
                run_cell,
                *task,
                max_iter=max_iter,
                skip=[*args.skip, *finished(task)],
            ): task
            for task in todo
        }
        for future in as_completed(futures):
            task = futures[future]
            results[task] = {**results.get(task, {}), **future.result()}
            raw[repr(task)] = results[task]
            raw_path.write_text(json.dumps(raw, indent=1))
            print(
                f"{task}: "
                + " ".join(
                    f"{m}={v[0]:.4g} ({v[1]:.1f}s, {v[2]} ep)"
                    for m, v in results[task].items()
                ),
                flush=True,
            )
    if args.skip:
        return 0
    report = format_report(
        results, cells, args.seeds, args, time.perf_counter() - start
    )
    (out / f"shapes{'_quick' if args.quick else ''}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
