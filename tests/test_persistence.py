"""skgfe.save and skgfe.load: safetensors weights and a JSON description, no pickle."""

import hashlib
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import skgfe
from skgfe import (
    Autoencoder,
    GradientFlowEncoder,
    VariationalAutoencoder,
    load,
    save,
)
from skgfe._persistence import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE

ESTIMATORS = [GradientFlowEncoder, Autoencoder, VariationalAutoencoder]


# Few epochs on purpose: reaching max_iter is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def small(cls, **params):
    defaults = dict(
        n_components=3, hidden_layer_sizes=(16,), max_iter=3, random_state=0
    )
    return cls(**{**defaults, **params})


@pytest.fixture(scope="module")
def frames(digits_split):
    X_pool, X_test = digits_split
    columns = [f"pixel_{i}" for i in range(X_pool.shape[1])]
    return (
        pd.DataFrame(X_pool[:150], columns=columns),
        pd.DataFrame(X_test[:40], columns=columns),
    )


@pytest.fixture(scope="module")
def fitted(frames):
    """Each estimator fitted on float64 and float32 DataFrames."""
    X_train, _ = frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {
            (cls, dtype): small(cls).fit(X_train.astype(dtype))
            for cls in ESTIMATORS
            for dtype in (np.float64, np.float32)
        }


@pytest.fixture
def saved(fitted, tmp_path):
    """A float64 GradientFlowEncoder saved to a folder."""
    return Path(save(fitted[GradientFlowEncoder, np.float64], tmp_path / "model"))


def read_config(folder):
    return json.loads((folder / CONFIG_FILE).read_text())


def write_config(folder, config):
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def rewrite_weights(folder, edit):
    """Apply ``edit`` to the tensors and record the new file's SHA-256."""
    tensors = load_tensors((folder / WEIGHTS_FILE).read_bytes())
    edit(tensors)
    data = save_tensors(tensors)
    (folder / WEIGHTS_FILE).write_bytes(data)
    config = read_config(folder)
    config["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    write_config(folder, config)


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_round_trip_is_bitwise_identical(cls, dtype, fitted, frames, tmp_path):
    model = fitted[cls, dtype]
    X_test = frames[1].astype(dtype)
    folder = save(model, tmp_path / "model")
    restored = load(folder)

    assert type(restored) is cls
    assert restored.get_params() == model.get_params()
    np.testing.assert_array_equal(restored.feature_names_in_, model.feature_names_in_)
    np.testing.assert_array_equal(
        restored.get_feature_names_out(), model.get_feature_names_out()
    )
    assert restored.mean_.dtype == model.mean_.dtype == dtype
    for name in ["loss_curve_", "validation_scores_", "best_loss_", "n_iter_", "t_"]:
        assert getattr(restored, name) == getattr(model, name)
    Z = model.transform(X_test)
    assert Z.dtype == dtype
    np.testing.assert_array_equal(restored.transform(X_test), Z)
    np.testing.assert_array_equal(
        restored.inverse_transform(Z), model.inverse_transform(Z)
    )
    np.testing.assert_array_equal(
        restored.score_samples(X_test), model.score_samples(X_test)
    )
    assert restored.score(X_test) == model.score(X_test)


def test_fitted_settings_survive_set_params(frames, tmp_path):
    # Parameters changed after fitting apply at the next fit: the loaded model
    # keeps them, yet encodes with the networks it was fitted with.
    X_train, X_test = frames
    model = small(GradientFlowEncoder, init="random").fit(X_train)
    model.set_params(n_components=5, hidden_layer_sizes=[7, 7], decoder_init="random")
    restored = load(save(model, tmp_path / "m"))
    assert restored.get_params() == model.get_params()
    # The seed of init='random' (renamed from _init_seed, issue 21; config.json
    # still holds it as _init_seed).
    assert restored._random_start_seed == model._random_start_seed
    assert restored._fitted_architecture == model._fitted_architecture
    np.testing.assert_array_equal(restored.transform(X_test), model.transform(X_test))


def test_set_output_configuration_is_kept(fitted, frames, tmp_path):
    model = pickle.loads(pickle.dumps(fitted[Autoencoder, np.float64]))
    model.set_output(transform="pandas")
    restored = load(save(model, tmp_path / "m"))
    out = restored.transform(frames[1])
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_frame_equal(out, model.transform(frames[1]))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_loaded_model_trains_on_like_an_unpickled_one(cls, fitted, frames, tmp_path):
    X_train = frames[0]
    model = fitted[cls, np.float64]
    restored = load(save(model, tmp_path / "m"))
    unpickled = pickle.loads(pickle.dumps(model))
    assert restored._optimizer is None
    restored.partial_fit(X_train)
    unpickled.partial_fit(X_train)
    assert restored.n_iter_ == model.n_iter_ + 1
    for a, b in zip(restored._modules(), unpickled._modules()):
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    # Training changed the weights.
    assert not np.array_equal(restored.transform(frames[1]), model.transform(frames[1]))
    warm = load(save(model, tmp_path / "w")).set_params(warm_start=True, max_iter=2)
    warm.fit(X_train)
    assert warm.n_iter_ == model.n_iter_ + 2


def test_loaded_model_pickles(saved, frames):
    restored = load(saved)
    again = pickle.loads(pickle.dumps(restored))
    np.testing.assert_array_equal(
        again.transform(frames[1]), restored.transform(frames[1])
    )


def test_load_uses_no_pickle(saved, frames, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    restored = load(saved)
    assert restored.transform(frames[1]).shape == (40, 3)


def test_files_hold_weights_and_description(saved, fitted):
    config = read_config(saved)
    assert config["format_version"] == FORMAT_VERSION
    assert config["estimator"] == "GradientFlowEncoder"
    assert config["params"]["hidden_layer_sizes"] == {"__tuple__": [16]}
    assert config["fitted"]["best_loss_"] == {"__float__": "inf"}
    tensors = load_tensors((saved / WEIGHTS_FILE).read_bytes())
    model = fitted[GradientFlowEncoder, np.float64]
    # The decoder, the scaling's mean and init='amortized''s start encoder and
    # kept training samples with their codes.
    assert set(tensors) == {"mean_"} | {
        f"{name}.{k}"
        for name in ("decoder_", "_start_encoder", "_neighbour_codes")
        for k in getattr(model, name).state_dict()
    }
    assert config["modules"] == ["_neighbour_codes", "_start_encoder", "decoder_"]
    assert config["fitted"]["_n_neighbour_samples"] == len(
        model._neighbour_codes.samples
    )
    data = (saved / WEIGHTS_FILE).read_bytes()
    assert config["weights"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_save_accepts_str_path_and_overwrites_only_when_asked(fitted, tmp_path, frames):
    folder = str(tmp_path / "a" / "b")
    save(fitted[Autoencoder, np.float64], folder)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a" / "b").iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(fitted[GradientFlowEncoder, np.float32], folder)
    after = {p.name: p.read_bytes() for p in (tmp_path / "a" / "b").iterdir()}
    assert after == before  # left as it was
    save(fitted[GradientFlowEncoder, np.float32], folder, overwrite=True)
    restored = load(folder)
    assert isinstance(restored, GradientFlowEncoder)
    assert restored.mean_.dtype == np.float32


# --------------------------------------------------------------- save refuses
def test_save_refuses_a_random_state_instance(frames, tmp_path):
    model = small(Autoencoder, random_state=np.random.RandomState(0))
    model.fit(frames[0])
    with pytest.raises(ValueError, match="random_state is a RandomState instance"):
        save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_save_refuses_parameters_json_cannot_hold(fitted, tmp_path):
    model = pickle.loads(pickle.dumps(fitted[Autoencoder, np.float64]))
    model.set_params(hidden_layer_sizes=np.array([16]))
    with pytest.raises(ValueError, match="hidden_layer_sizes=.*cannot be saved"):
        save(model, tmp_path / "m")


def test_save_refuses_unfitted_and_foreign_estimators(tmp_path):
    with pytest.raises(NotFittedError):
        save(GradientFlowEncoder(), tmp_path / "m")
    # scikit-learn estimators go to skops (tests/test_persistence_pipelines.py);
    # anything else is refused.
    with pytest.raises(TypeError, match="skgfe's estimators"):
        save({"decoder": None}, tmp_path / "m")


def test_save_refuses_unknown_attributes(fitted, tmp_path):
    model = pickle.loads(pickle.dumps(fitted[Autoencoder, np.float64]))
    model.extra_ = lambda: None
    with pytest.raises(ValueError, match="extra_"):
        save(model, tmp_path / "m")


# --------------------------------------------------------------- load refuses
def test_newer_format_version_is_refused(saved):
    config = read_config(saved)
    config["format_version"] = FORMAT_VERSION + 1
    write_config(saved, config)
    with pytest.raises(ValueError, match="newer.*Upgrade skgfe"):
        load(saved)


@pytest.mark.parametrize(
    "name", ["PCA", "os.system", "BaseDecoderTransformer", "_BaseAutoencoder"]
)
def test_class_outside_the_whitelist_is_refused(saved, name):
    config = read_config(saved)
    config["estimator"] = name
    write_config(saved, config)
    with pytest.raises(ValueError, match="not one of skgfe's estimators"):
        load(saved)


def test_another_skgfe_class_with_these_weights_is_refused(saved):
    config = read_config(saved)
    config["estimator"] = "Autoencoder"
    write_config(saved, config)
    with pytest.raises(ValueError, match="Cannot load the model"):
        load(saved)


def test_truncated_weights_are_refused(saved):
    data = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="SHA-256"):
        load(saved)
    # Even with a matching checksum, safetensors' own checks refuse it.
    config = read_config(saved)
    config["weights"]["sha256"] = hashlib.sha256(data[: len(data) // 2]).hexdigest()
    write_config(saved, config)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load(saved)


def test_modified_weights_are_refused(saved):
    data = bytearray((saved / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 1
    (saved / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load(saved)


def test_missing_tensor_is_refused(saved):
    rewrite_weights(saved, lambda t: t.pop("decoder_.layers.0.bias"))
    with pytest.raises(ValueError, match=r"missing tensors \['decoder_.layers.0.bias'"):
        load(saved)


def test_unexpected_tensor_is_refused(saved):
    rewrite_weights(saved, lambda t: t.update(evil=torch.zeros(1, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"unexpected tensors \['evil'\]"):
        load(saved)


def test_wrong_shape_is_refused(saved):
    def edit(tensors):
        tensors["decoder_.layers.0.weight"] = tensors["decoder_.layers.0.weight"][:5]

    rewrite_weights(saved, edit)
    with pytest.raises(ValueError, match="'decoder_.layers.0.weight' has shape"):
        load(saved)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_wrong_dtype_is_refused(saved, dtype):
    def edit(tensors):
        tensors["mean_"] = tensors["mean_"].to(dtype)

    rewrite_weights(saved, edit)
    with pytest.raises(ValueError, match="'mean_' has dtype"):
        load(saved)


def test_json_dtype_that_does_not_match_the_weights_is_refused(saved):
    config = read_config(saved)
    config["dtype"] = "float32"
    write_config(saved, config)
    with pytest.raises(ValueError, match="has dtype torch.float64"):
        load(saved)
    config["dtype"] = "int8"
    write_config(saved, config)
    with pytest.raises(ValueError, match="not float32 or float64"):
        load(saved)


def test_json_architecture_that_does_not_match_the_weights_is_refused(saved):
    config = read_config(saved)
    config["fitted"]["n_components_"] = 4
    config["fitted"]["_fitted_architecture"]["n_components"] = 4
    # Without the code prior, whose size would give the edit away first.
    del config["fitted"]["_code_covariance"]
    write_config(saved, config)
    with pytest.raises(ValueError, match="has shape"):
        load(saved)


def test_inconsistent_json_is_refused(saved):
    config = read_config(saved)
    config["fitted"]["n_components_"] = 4  # the architecture still says 3
    write_config(saved, config)
    with pytest.raises(ValueError, match="n_components_"):
        load(saved)
    config = read_config(saved)
    config["fitted"]["n_components_"] = 3
    config["fitted"]["feature_names_in_"] = ["a", "b"]
    write_config(saved, config)
    with pytest.raises(ValueError, match="2 feature names"):
        load(saved)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["params"].update(activation="os.system"), "invalid parameters"),
        (lambda c: c["params"].update(evil=1), "do not fit"),
        (lambda c: c["fitted"].update(n_iter_="3"), "wrong type"),
        (lambda c: c["fitted"].update(__class__="x"), "unknown fitted attributes"),
        (lambda c: c["fitted"].pop("scale_"), r"\['scale_'\] are missing"),
        (lambda c: c["fitted"].update(scale_=-1.0), "positive"),
        (lambda c: c["fitted"].update(best_loss_={"__float__": "1"}), "malformed"),
        (lambda c: c.update(modules=["decoder_", "encoder_"]), "recorded modules"),
        (lambda c: c.pop("params"), "'params'"),
        (lambda c: c.update(format="pickle"), "not an skgfe model"),
    ],
)
def test_edited_json_is_refused(saved, edit, message):
    config = read_config(saved)
    edit(config)
    write_config(saved, config)
    with pytest.raises(ValueError, match=message):
        load(saved)


def test_invalid_json_is_refused(saved):
    (saved / CONFIG_FILE).write_text('{"format": "skgfe", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        load(saved)
    (saved / CONFIG_FILE).write_text('{"format": NaN}')
    with pytest.raises(ValueError, match="not valid JSON"):
        load(saved)


def test_missing_files_raise(saved):
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError):
        load(saved)


# --------------------------------------------------------------------- devices
def test_load_puts_the_model_on_the_cpu_by_default(saved):
    config = read_config(saved)
    config["params"]["device"] = "cuda"  # as saved from a GPU fit
    write_config(saved, config)
    restored = load(saved)
    assert restored.device == "cpu"
    assert next(restored.decoder_.parameters()).device.type == "cpu"
    assert load(saved, device=torch.device("cpu")).device == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda:1", "mps", "cuda:x"])
def test_load_onto_an_unavailable_device_is_a_clear_error(saved, device):
    if device == "cuda:1" and torch.cuda.device_count() > 1:
        pytest.skip("two CUDA devices are present")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available")
    with pytest.raises(ValueError, match=f"device='{device}'"):
        load(saved, device=device)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_model_saves_and_loads_anywhere(fitted, frames, tmp_path):
    X_test = frames[1]
    cpu = fitted[GradientFlowEncoder, np.float64]
    gpu = pickle.loads(pickle.dumps(cpu)).set_params(device="cuda")
    expected = gpu.transform(X_test)
    folder = save(gpu, tmp_path / "m")
    on_cpu = load(folder)
    assert next(on_cpu.decoder_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(on_cpu.transform(X_test), cpu.transform(X_test))
    on_gpu = load(folder, device="cuda")
    assert next(on_gpu.decoder_.parameters()).device.type == "cuda"
    np.testing.assert_array_equal(on_gpu.transform(X_test), expected)


def test_exported_from_the_package():
    assert skgfe.save is save and skgfe.load is load
    assert {"save", "load"} <= set(skgfe.__all__)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.update(noise_variance_=[1.0]), "noise_variance_ does not hold"),
        (lambda f: f.update(_code_covariance=[[1.0]]), "code covariance"),
        (lambda f: f.update(noise_variance_=[-1.0] * 64), "noise_variance_"),
    ],
)
def test_error_model_that_does_not_match_the_model_is_refused(saved, edit, message):
    config = read_config(saved)
    edit(config["fitted"])
    write_config(saved, config)
    with pytest.raises(ValueError, match=message):
        load(saved)
