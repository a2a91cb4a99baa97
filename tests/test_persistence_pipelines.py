"""Saving and loading pipelines that hold skgfe estimators (skops + skgfe's format)."""

import json
import operator
import pickle
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skgfe import Autoencoder, GradientFlowEncoder, load, save
from skgfe._composition import COMPOSITION_FILE, SKOPS_FILE
from skgfe._persistence import CONFIG_FILE

pytest.importorskip("skops")

# Few epochs on purpose: reaching max_iter is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def small(cls=GradientFlowEncoder, **params):
    defaults = dict(
        n_components=3, hidden_layer_sizes=(16,), max_iter=3, random_state=0
    )
    return cls(**{**defaults, **params})


@pytest.fixture(scope="module")
def data(digits_split):
    X_pool, X_test = digits_split
    return X_pool[:150], X_test[:40]


@pytest.fixture(scope="module")
def pipeline(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), small()).fit(data[0])


def test_pipeline_round_trip_is_bitwise_identical(pipeline, data, tmp_path):
    def state(pipe):
        return [(name, id(step), dict(vars(step))) for name, step in pipe.steps]

    before, codes = state(pipeline), pipeline.transform(data[1])
    folder = save(pipeline, tmp_path / "pipe")
    after = state(pipeline)
    assert [row[:2] for row in after] == [row[:2] for row in before]
    for (_, _, attributes), (_, _, attributes_before) in zip(after, before):
        assert attributes.keys() == attributes_before.keys()
        assert all(attributes[k] is attributes_before[k] for k in attributes)
    np.testing.assert_array_equal(pipeline.transform(data[1]), codes)
    restored = load(folder)
    assert [name for name, _ in restored.steps] == [name for name, _ in pipeline.steps]
    assert type(restored[-1]) is GradientFlowEncoder
    np.testing.assert_array_equal(
        restored.transform(data[1]), pipeline.transform(data[1])
    )
    Z = pipeline.transform(data[1])
    np.testing.assert_array_equal(
        restored.inverse_transform(Z), pipeline.inverse_transform(Z)
    )
    np.testing.assert_array_equal(restored[0].mean_, pipeline[0].mean_)


def test_pipeline_folder_holds_skops_and_skgfe_files(pipeline, tmp_path):
    folder = tmp_path / "pipe"
    save(pipeline, folder)
    description = json.loads((folder / COMPOSITION_FILE).read_text())
    assert (folder / SKOPS_FILE).is_file()
    [entry] = description["estimators"].values()
    assert entry == {"estimator": "GradientFlowEncoder", "folder": "parts/0"}
    assert (folder / "parts" / "0" / CONFIG_FILE).is_file()
    import skops.io

    # skops holds only scikit-learn's types: the placeholder is a plain string.
    assert skops.io.get_untrusted_types(file=folder / SKOPS_FILE) == []


def test_pipeline_load_uses_no_pickle(pipeline, data, tmp_path, monkeypatch):
    folder = save(pipeline, tmp_path / "pipe")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    assert load(folder).transform(data[1]).shape == (40, 3)


def test_fitted_and_unfitted_skgfe_estimators_in_one_composition(data, tmp_path):
    # TransformedTargetRegressor keeps the unfitted transformer parameter and a
    # fitted clone; both come back, the clone fitted and the parameter not.
    X = data[0][:, :5]
    model = TransformedTargetRegressor(
        regressor=Ridge(), transformer=small(), check_inverse=False
    ).fit(X, data[0])
    restored = load(save(model, tmp_path / "ttr"))
    assert not hasattr(restored.transformer, "decoder_")
    assert restored.transformer.get_params() == model.transformer.get_params()
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_shared_estimator_stays_shared_and_grid_search_round_trips(data, tmp_path):
    search = GridSearchCV(
        make_pipeline(StandardScaler(), small(Autoencoder)),
        {"autoencoder__n_components": [2, 3]},
        cv=2,
    ).fit(data[0])
    folder = save(search, tmp_path / "search")
    import skops.io

    # skops asks to trust some of scikit-learn's helpers (the CV splitter, the
    # scorer); skgfe's estimators are never among them.
    untrusted = skops.io.get_untrusted_types(file=tmp_path / "search" / SKOPS_FILE)
    assert not [name for name in untrusted if name.startswith("skgfe")]
    restored = load(folder, trusted=untrusted)
    assert restored.best_params_ == search.best_params_
    np.testing.assert_array_equal(
        restored.transform(data[1]), search.transform(data[1])
    )
    assert restored.score(data[1]) == search.score(data[1])


def test_column_transformer_with_pandas_output(data, tmp_path):
    frame = pd.DataFrame(data[0], columns=[f"p{i}" for i in range(data[0].shape[1])])
    model = ColumnTransformer(
        [
            ("gfe", small(), list(frame.columns[:32])),
            ("pca", PCA(2), list(frame.columns[32:])),
        ]
    ).set_output(transform="pandas")
    model.fit(frame)
    restored = load(save(model, tmp_path / "ct"))
    pd.testing.assert_frame_equal(restored.transform(frame), model.transform(frame))


def test_untrusted_step_is_refused_until_trusted(data, tmp_path):
    model = make_pipeline(FunctionTransformer(operator.neg), small()).fit(data[0])
    folder = save(model, tmp_path / "pipe")
    with pytest.raises(TypeError, match=r"_operator\.neg|operator\.neg"):
        load(folder)
    import skops.io

    trusted = skops.io.get_untrusted_types(file=tmp_path / "pipe" / SKOPS_FILE)
    restored = load(folder, trusted=trusted)
    np.testing.assert_array_equal(restored.transform(data[1]), model.transform(data[1]))


def test_overwrite_between_layouts(pipeline, data, tmp_path):
    folder = tmp_path / "model"
    single = pipeline[-1]
    save(single, folder)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(pipeline, folder)
    assert type(load(folder)) is GradientFlowEncoder, (
        "a refused save changed the folder"
    )
    save(pipeline, folder, overwrite=True)
    assert not (folder / CONFIG_FILE).exists()
    assert type(load(folder)).__name__ == "Pipeline"
    with pytest.raises(FileExistsError):
        save(single, folder)
    save(single, folder, overwrite=True)
    assert not (folder / COMPOSITION_FILE).exists()
    assert not (folder / "parts").exists()
    assert type(load(folder)) is GradientFlowEncoder


def test_edited_skops_file_is_refused(pipeline, tmp_path):
    folder = save(pipeline, tmp_path / "pipe")
    path = tmp_path / "pipe" / SKOPS_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="SHA-256"):
        load(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format_version=99), "newer"),
        (lambda d: d.update(format="other"), "composition"),
        (
            lambda d: next(iter(d["estimators"].values())).update(folder="../x"),
            "outside",
        ),
        (
            lambda d: next(iter(d["estimators"].values())).update(estimator="PCA"),
            "skgfe's estimators",
        ),
    ],
)
def test_edited_description_is_refused(pipeline, tmp_path, edit, message):
    folder = tmp_path / "pipe"
    save(pipeline, folder)
    description = json.loads((folder / COMPOSITION_FILE).read_text())
    edit(description)
    (folder / COMPOSITION_FILE).write_text(json.dumps(description))
    with pytest.raises(ValueError, match=message):
        load(folder)


def test_missing_skops_is_a_clear_error(pipeline, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skops.io", None)
    monkeypatch.setitem(sys.modules, "skops", None)
    with pytest.raises(ImportError, match=r"skgfe\[skops\]"):
        save(pipeline, tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()
