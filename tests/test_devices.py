"""The ``device`` parameter: any torch device string, checked at fit and transform."""

import numpy as np
import pytest
import torch

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder
from skgfe._devices import resolve_device  # was in skgfe._base (issue 21)

ESTIMATORS = [GradientFlowEncoder, Autoencoder, VariationalAutoencoder]


# Few epochs on purpose: reaching max_iter is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def X(digits_split):
    return digits_split[0][:60]


def small(cls=GradientFlowEncoder, **params):
    defaults = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=2, random_state=0)
    return cls(**{**defaults, **params})


@pytest.mark.parametrize("device", ["cuda:x", "gpu", "", "cpu:-1:2", "cuda:0:1"])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unparseable_device_fails_at_fit_not_init(cls, device, X):
    model = small(cls, device=device)  # no error yet (scikit-learn convention)
    assert model.get_params()["device"] == device
    with pytest.raises(ValueError, match="is not a torch device"):
        model.fit(X)


def test_wrong_type_is_a_parameter_error(X):
    with pytest.raises(ValueError, match="'device' parameter"):
        small(device=0).fit(X)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="two CUDA devices")
def test_cuda_index_out_of_range_is_a_clear_error(X):
    message = "finds no CUDA device" if not torch.cuda.is_available() else "CUDA device"
    with pytest.raises(ValueError, match=f"device='cuda:1'.*{message}"):
        small(device="cuda:1").fit(X)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available")
def test_unavailable_mps_is_a_clear_error(X):
    with pytest.raises(ValueError, match="device='mps'.*MPS backend"):
        small(device="mps").fit(X)


def test_meta_device_is_refused(X):
    with pytest.raises(ValueError, match="holds no data"):
        small(device="meta").fit(X)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unavailable_device_at_transform_is_a_clear_error(cls, X):
    model = small(cls).fit(X)
    model.set_params(device="cuda:7" if torch.cuda.device_count() < 8 else "meta")
    with pytest.raises(ValueError, match="device="):
        model.transform(X)
    with pytest.raises(ValueError, match="device="):
        model.inverse_transform(np.zeros((2, 2)))


@pytest.mark.parametrize("device", ["cpu", "cpu:0", torch.device("cpu")])
def test_cpu_spellings_give_the_same_model(device, X):
    reference = small().fit(X).transform(X)
    model = small(device=device).fit(X)
    assert next(model.decoder_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(model.transform(X), reference)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu", 0)) == torch.device("cpu", 0)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="must be a string"):
        resolve_device(3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 0)])
def test_cuda_spellings_work(device, X):
    model = small(device=device).fit(X)
    assert next(model.decoder_.parameters()).device.type == "cuda"
    assert model.transform(X).shape == (len(X), 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_seed_gives_the_same_initial_weights_on_the_gpu(cls):
    # The weights are drawn from the CPU generator of random_state, then copied
    # to the device (torch refuses to fill a CUDA tensor from a CPU generator).
    weights = {}
    for device in ("cpu", "cuda"):
        model = small(cls)
        model._build_modules(
            64, torch.Generator().manual_seed(0), torch.float64, device
        )
        weights[device] = [p.detach().cpu() for p in model.decoder_.parameters()]
    for cpu, cuda in zip(weights["cpu"], weights["cuda"], strict=True):
        assert torch.equal(cpu, cuda)


def test_rows_at_once_on_the_cpu_and_from_a_cuda_devices_free_memory(monkeypatch):
    from skgfe._devices import rows_at_once

    assert rows_at_once(torch.device("cpu"), 1000, 8192) == 8192
    # A quarter of the free memory, at least the CPU's rows.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4e9, 8e9))
    assert rows_at_once(torch.device("cuda"), 1000, 8192) == 1_000_000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1e6, 8e9))
    assert rows_at_once(torch.device("cuda"), 1000, 8192) == 8192


def test_cpu_encoding_keeps_its_chunks_and_lm_rows(X):
    from skgfe._torch_estimator import CHUNK_ROWS

    model = small().fit(X)
    X_t = model._scale(model._to_tensor(X))
    assert model._encoding_block(X_t) == (CHUNK_ROWS, None)


def test_lm_codes_do_not_depend_on_the_rows_iterated_at_once(X):
    # The GPU iterates all rows at once; the CPU 1024. LM is per sample.
    model = small(max_iter=5).fit(X)
    X_t = model._scale(model._to_tensor(X))
    with torch.no_grad():
        codes = [model._flow(X_t, max_rows=rows).z for rows in (None, 7, len(X))]
    for other in codes[1:]:
        torch.testing.assert_close(other, codes[0], rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_encodes_all_rows_at_once_as_the_cpu_does(digits_split):
    X_train, X_test = digits_split[0], digits_split[1]
    model = GradientFlowEncoder(n_components=4, max_iter=20, random_state=0)
    model.fit(X_train)
    X_big = np.tile(X_test, (20, 1))
    codes_cpu = model.transform(X_big)
    model.set_params(device="cuda")
    X_t = model._scale(model._to_tensor(X_big))
    rows, lm_rows = model._encoding_block(X_t)
    assert X_t.device.type == "cuda" and rows >= len(X_big) and lm_rows == rows
    codes_gpu = model.transform(X_big)
    # Both stop within flow_tol of the stationary code; rounding differs.
    np.testing.assert_allclose(codes_gpu, codes_cpu, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_missing_entries_and_error_bars_on_the_gpu(digits_split):
    X_train, X_test = digits_split[0].copy(), digits_split[1][:200].copy()
    rng = np.random.RandomState(0)
    X_train[rng.rand(*X_train.shape) < 0.1] = np.nan
    X_test[rng.rand(*X_test.shape) < 0.3] = np.nan
    params = dict(n_components=4, max_iter=10, random_state=0)
    gpu = GradientFlowEncoder(**params, device="cuda").fit(X_train)
    assert np.all(np.isfinite(gpu.noise_variance_))
    codes, std = gpu.encode(X_test, return_std=True)
    _, reconstruction_std = gpu.reconstruct(X_test, return_std=True)
    assert np.all(np.isfinite(std)) and np.all(np.isfinite(reconstruction_std))
    # The same weights encode alike on the CPU (training on either device is
    # not comparable: the PCA start's singular vectors may differ in sign).
    gpu.set_params(device="cpu")
    codes_cpu, std_cpu = gpu.encode(X_test, return_std=True)
    np.testing.assert_allclose(codes, codes_cpu, atol=1e-3)
    np.testing.assert_allclose(std, std_cpu, rtol=1e-3)
