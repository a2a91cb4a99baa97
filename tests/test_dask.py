"""Scale-out on dask: grid search, blockwise (inverse) transform, incremental fit.

One small in-process ``distributed.LocalCluster`` (two workers of one thread, started
in 0.1 s where worker processes take about 8 s) serves the module. The last bits
of a result depend on the number of torch threads that compute it, so the
fixture gives the workers' threads the test process's count; then their results
are bit for bit those of the plain calls. The ``xdist_group`` keeps these tests
on one xdist worker.
"""

import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

import skgfe.dask
from skgfe import GradientFlowEncoder

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")
joblib = pytest.importorskip("joblib")

pytestmark = [
    pytest.mark.xdist_group("dask"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

SMALL = dict(n_components=4, hidden_layer_sizes=(8,), max_iter=5, random_state=0)


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # Each worker runs its tasks on one executor thread. torch's thread count
        # is set per thread for BLAS: give that thread the test process's (one
        # under xdist, see conftest.py), or the results differ in the last bits.
        n_threads = torch.get_num_threads()
        for worker in client.scheduler_info()["workers"]:
            client.submit(
                torch.set_num_threads, n_threads, workers=[worker], pure=False
            ).result()
        yield client


@pytest.fixture(scope="module")
def digits():
    return load_digits().data


@pytest.fixture(scope="module")
def fitted(digits):
    return GradientFlowEncoder(**SMALL).fit(digits[:300])


def test_grid_search_on_dask_matches_default_backend(client, digits):
    X = digits[:200]
    search = GridSearchCV(
        GradientFlowEncoder(hidden_layer_sizes=(8,), max_iter=3, random_state=0),
        {"n_components": [2, 4]},
        cv=2,
    )
    local = clone(search).fit(X)
    with joblib.parallel_backend("dask"):
        on_dask = clone(search).set_params(n_jobs=-1).fit(X)
    for key in ["split0_test_score", "split1_test_score", "mean_test_score"]:
        np.testing.assert_array_equal(on_dask.cv_results_[key], local.cv_results_[key])
    assert on_dask.best_params_ == local.best_params_


@pytest.mark.parametrize(
    "chunks, dtype", [((500, -1), np.float64), ((250, 16), np.float32)]
)
def test_transform_lazy_shape_and_exact_values(client, digits, fitted, chunks, dtype):
    X = digits.astype(dtype)
    X_dask = da.from_array(X, chunks=chunks)
    Z = skgfe.dask.transform(fitted, X_dask)
    # Right before computing: rows chunked as the input, one column chunk.
    assert isinstance(Z, da.Array)
    assert Z.shape == (len(X), 4)
    assert Z.chunks == (X_dask.chunks[0], (4,))
    assert Z.dtype == dtype
    expected = fitted.transform(X)
    computed = Z.compute()
    assert computed.dtype == dtype
    np.testing.assert_array_equal(computed, expected)

    Z_dask = da.from_array(expected, chunks=(chunks[0], 2))
    X_hat = skgfe.dask.inverse_transform(fitted, Z_dask)
    assert X_hat.shape == X.shape
    assert X_hat.chunks == (Z_dask.chunks[0], (64,))
    assert X_hat.dtype == dtype
    np.testing.assert_array_equal(X_hat.compute(), fitted.inverse_transform(expected))


def test_dataframe_transform_and_inverse(client, digits):
    pd = pytest.importorskip("pandas")
    columns = [f"pixel{i}" for i in range(64)]
    frame = pd.DataFrame(digits, columns=columns)
    model = GradientFlowEncoder(**dict(SMALL, max_iter=2)).fit(frame[:200])
    frame_dask = dd.from_pandas(frame, npartitions=3)
    codes = skgfe.dask.transform(model, frame_dask)
    assert isinstance(codes, dd.DataFrame)
    assert list(codes.columns) == list(model.get_feature_names_out())
    assert codes.npartitions == 3
    computed = codes.compute()
    np.testing.assert_array_equal(computed.to_numpy(), model.transform(frame))
    pd.testing.assert_index_equal(computed.index, frame.index)

    X_hat = skgfe.dask.inverse_transform(model, codes).compute()
    assert list(X_hat.columns) == columns
    np.testing.assert_array_equal(
        X_hat.to_numpy(), model.inverse_transform(computed.to_numpy())
    )


def test_incremental_equals_partial_fit_on_blocks_in_order(client, digits):
    X = digits[:600]
    X_dask = da.from_array(X, chunks=(200, -1))
    params = dict(SMALL, batch_size=50)
    incremental = dask_ml_wrappers.Incremental(
        GradientFlowEncoder(**params), shuffle_blocks=False
    ).fit(X_dask)
    by_hand = GradientFlowEncoder(**params)
    for start in range(0, len(X), 200):
        by_hand.partial_fit(X[start : start + 200])
    model = incremental.estimator_
    np.testing.assert_array_equal(model.mean_, by_hand.mean_)
    assert model.scale_ == by_hand.scale_
    assert model.n_iter_ == by_hand.n_iter_ == 3
    np.testing.assert_array_equal(model.transform(X), by_hand.transform(X))


def test_parallel_post_fit_values_and_helper_shape(client, digits, fitted):
    X_dask = da.from_array(digits, chunks=(400, -1))
    # dask-ml's lazy result claims the input's 64 columns until computed (its
    # map_blocks gets no chunks); the values are right.
    values = dask_ml_wrappers.ParallelPostFit(fitted).transform(X_dask).compute()
    np.testing.assert_array_equal(values, fitted.transform(digits))
    assert skgfe.dask.transform(fitted, X_dask).shape == values.shape


def test_input_checks(fitted, digits):
    with pytest.raises(TypeError, match="dask array or a dask DataFrame"):
        skgfe.dask.transform(fitted, digits)
    with pytest.raises(ValueError, match="has 63 columns"):
        skgfe.dask.transform(fitted, da.from_array(digits[:, :63]))
    with pytest.raises(ValueError, match="2-D"):
        skgfe.dask.transform(fitted, da.from_array(digits[:, 0]))
    with pytest.raises(ValueError, match="has 64 columns"):
        skgfe.dask.inverse_transform(fitted, da.from_array(digits))
    with pytest.raises(NotFittedError):
        skgfe.dask.transform(GradientFlowEncoder(), da.from_array(digits))


def test_missing_dask_names_the_extra(fitted, digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"pip install skgfe\[dask\]"):
        skgfe.dask.transform(fitted, digits)


def test_transform_of_blocks_with_missing_entries(client, digits, fitted):
    X = digits[:400].copy()
    X[np.random.RandomState(0).uniform(size=X.shape) < 0.2] = np.nan
    X[:, 0] = 0.0  # every row observes an entry
    Z = skgfe.dask.transform(fitted, da.from_array(X, chunks=(150, -1))).compute()
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z, fitted.transform(X))
