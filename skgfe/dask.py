"""Blockwise transform and inverse transform of dask arrays and data frames.

A fitted skgfe transformer encodes every row on its own (the code of a sample does
not depend on the other rows), so a dask collection can be encoded block by block
on a cluster, with results identical to encoding it in one piece. The functions
here do that with lazy results of the right shape and chunks, which
``dask_ml.wrappers.ParallelPostFit`` does not give (its lazy ``transform`` keeps the
input's number of columns until computed) and provide the ``inverse_transform``
that it lacks.

dask is imported when a function is called, not with this module; it is an
optional dependency: ``pip install skgfe[dask]``.
"""

import sys
import uuid

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["inverse_transform", "transform"]


def _import_dask():
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError(
            "skgfe.dask needs dask, an optional dependency of skgfe. Install it "
            "with: pip install skgfe[dask]"
        ) from exc
    return da


def _is_dask_dataframe(X):
    # A dask DataFrame exists only once dask.dataframe is imported; not importing
    # it here saves its import (pandas and all) when X is an array.
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(X, dd.DataFrame)


def _output_dtype(dtype):
    # What the estimators return: float32 and float64 are kept, anything else is
    # converted to float64 (as scikit-learn's validation does).
    dtype = np.dtype(dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


class _RowWise:
    """``function`` applied to one block; a data frame's index and columns kept.

    A class rather than a closure so that dask can name its tasks without hashing
    the estimator (torch modules do not pickle deterministically): the token is
    drawn once per call of the public functions.
    """

    def __init__(self, function, dtype, columns=None):
        self.function = function
        self.dtype = dtype
        self.columns = columns
        self.token = uuid.uuid4().hex

    def __call__(self, block):
        # np.asarray: an estimator with set_output(transform="pandas") returns a
        # data frame, which a dask array cannot hold.
        values = np.asarray(self.function(block), dtype=self.dtype)
        if self.columns is None:
            return values
        import pandas as pd

        return pd.DataFrame(values, index=block.index, columns=self.columns)

    def __dask_tokenize__(self):
        return (type(self).__name__, self.token)


def _blockwise(function, X, n_in, n_out, columns_out, what):
    """Apply the row-wise ``function`` of ``n_in`` columns to ``X`` by blocks."""
    da = _import_dask()
    if _is_dask_dataframe(X):
        return _blockwise_dataframe(function, X, n_in, columns_out, what)
    if not isinstance(X, da.Array):
        raise TypeError(
            f"{what} expects a dask array or a dask DataFrame, got "
            f"{type(X).__name__}. Call the estimator's own method on in-memory data."
        )
    if X.ndim != 2:
        raise ValueError(
            f"{what} expects a 2-D dask array of shape (n_samples, {n_in}), got "
            f"{X.ndim} dimension(s)."
        )
    if X.shape[1] != n_in:
        raise ValueError(
            f"X has {X.shape[1]} columns, but {what} expects {n_in} (the estimator "
            "was fitted with that many)."
        )
    if X.numblocks[1] != 1:
        # Each block must hold whole rows: merge the column chunks of each row
        # chunk (the row chunks are kept).
        X = X.rechunk({1: -1})
    dtype = _output_dtype(X.dtype)
    return X.map_blocks(
        _RowWise(function, dtype),
        dtype=dtype,
        chunks=(X.chunks[0], (n_out,)),
        meta=np.empty((0, 0), dtype=dtype),
    )


def _blockwise_dataframe(function, X, n_in, columns_out, what):
    import pandas as pd

    if len(X.columns) != n_in:
        raise ValueError(
            f"X has {len(X.columns)} columns, but {what} expects {n_in} (the "
            "estimator was fitted with that many)."
        )
    # As scikit-learn's validation: float32 columns alone stay float32.
    float32 = {str(dtype) for dtype in X.dtypes} == {"float32"}
    dtype = np.dtype(np.float32 if float32 else np.float64)
    columns_out = list(columns_out)
    meta = pd.DataFrame(
        np.empty((0, len(columns_out)), dtype=dtype),
        index=X._meta.index,
        columns=columns_out,
    )
    return X.map_partitions(_RowWise(function, dtype, columns_out), meta=meta)


def _n_components(estimator):
    return getattr(estimator, "n_components_", estimator.n_components)


def transform(estimator, X):
    """Encode a dask array or data frame with a fitted estimator, block by block.

    The result is lazy and has the right shape and chunks before it is computed:
    rows chunked as ``X``, one chunk of ``n_components_`` columns. Computed, it
    equals ``estimator.transform(X.compute())`` bit for bit whatever the chunking,
    since every row is encoded independently of the others, provided the workers
    run torch with as many threads as the comparison (the last bits depend on the
    thread count; worker processes use one).

    Parameters
    ----------
    estimator : GradientFlowEncoder, Autoencoder or VariationalAutoencoder
        A fitted skgfe transformer (any fitted transformer whose ``transform``
        maps ``n_features_in_`` columns to ``n_components_`` row by row works).
    X : dask.array.Array of shape (n_samples, n_features) or dask.dataframe.DataFrame
        Samples. An array split along its columns is first rechunked to a single
        column chunk (each block must hold whole rows); choose the row chunks so
        that one block fits in a worker's memory. A data frame's partitions are
        passed to ``estimator.transform`` as pandas data frames, so their column
        names are checked against those seen in ``fit``.

    Returns
    -------
    X_new : dask.array.Array of shape (n_samples, n_components_) or \
dask.dataframe.DataFrame
        Lazy codes, in the dtype of ``X`` (float32 or float64; other dtypes give
        float64). For a data frame, a data frame with the same partitions and
        index, and columns named by ``estimator.get_feature_names_out()``.

    Raises
    ------
    ImportError
        If dask is not installed (``pip install skgfe[dask]``).

    See Also
    --------
    inverse_transform : Decode a dask array or data frame of codes.

    Notes
    -----
    The estimator is serialised into the task graph and sent to the workers; a
    fitted skgfe model is small (its decoder's weights). Each block is encoded by
    one call of ``estimator.transform``, so its torch threads and device are those
    of the worker.

    Examples
    --------
    >>> import dask.array as da  # doctest: +SKIP
    >>> from skgfe import GradientFlowEncoder  # doctest: +SKIP
    >>> import skgfe.dask  # doctest: +SKIP
    >>> gfe = GradientFlowEncoder(n_components=8).fit(X_train)  # doctest: +SKIP
    >>> X = da.from_array(X_big, chunks=(2500, -1))  # doctest: +SKIP
    >>> Z = skgfe.dask.transform(gfe, X)  # lazy, shape (n, 8)  # doctest: +SKIP
    >>> Z.compute()  # doctest: +SKIP
    """
    check_is_fitted(estimator)
    n_out = _n_components(estimator)
    columns_out = (
        estimator.get_feature_names_out()
        if _is_dask_dataframe(X)
        else [f"x{i}" for i in range(n_out)]
    )
    return _blockwise(
        estimator.transform,
        X,
        estimator.n_features_in_,
        n_out,
        columns_out,
        "skgfe.dask.transform",
    )


def inverse_transform(estimator, Z):
    """Decode a dask array or data frame of codes with a fitted estimator.

    The counterpart of :func:`transform`: the result is lazy, has rows chunked as
    ``Z`` and one chunk of ``n_features_in_`` columns, and computed equals
    ``estimator.inverse_transform(Z.compute())`` bit for bit.

    Parameters
    ----------
    estimator : GradientFlowEncoder, Autoencoder or VariationalAutoencoder
        A fitted skgfe transformer.
    Z : dask.array.Array of shape (n_samples, n_components_) or \
dask.dataframe.DataFrame
        Codes, as returned by :func:`transform`. An array split along its columns
        is first rechunked to a single column chunk.

    Returns
    -------
    X_original : dask.array.Array of shape (n_samples, n_features_in_) or \
dask.dataframe.DataFrame
        Lazy reconstructions, in the units of the training data and the dtype of
        ``Z`` (float32 or float64; other dtypes give float64). For a data frame,
        a data frame with the same partitions and index, and columns named by
        ``estimator.feature_names_in_`` (``x0``, ``x1``, ... if it was fitted
        without names).

    Raises
    ------
    ImportError
        If dask is not installed (``pip install skgfe[dask]``).

    See Also
    --------
    transform : Encode a dask array or data frame.
    """
    check_is_fitted(estimator)
    n_out = estimator.n_features_in_
    columns_out = getattr(estimator, "feature_names_in_", None)
    if columns_out is None:
        columns_out = [f"x{i}" for i in range(n_out)]
    return _blockwise(
        estimator.inverse_transform,
        Z,
        _n_components(estimator),
        n_out,
        columns_out,
        "skgfe.dask.inverse_transform",
    )
