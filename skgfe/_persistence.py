"""Saving and loading fitted estimators without pickle.

A saved model is a folder of two files:

- ``weights.safetensors``: the tensors of the fitted torch modules (named
  ``decoder_.layers.0.weight`` and the like) and the means of the internal
  scaling (``mean_``, or ``x_mean_`` and ``y_mean_``), in the safetensors
  format, which holds raw arrays only;
- ``config.json``: the format version, the estimator's class name, its
  parameters, every other fitted attribute, the dtype of the weights and the
  SHA-256 of the weights file.

Loading executes no code from the files: the class comes from a fixed table of
skgfe's estimators, the modules are rebuilt from the recorded parameters by the
estimator's own ``_build_modules``, and the tensors are copied in after strict
checks of their names, shapes and dtypes.
"""

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import sklearn
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_tensors
from safetensors.torch import save as _save_tensors
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._autoencoders import Autoencoder, VariationalAutoencoder
from ._composition import (
    COMPOSITION_FILE,
    clear_saved_model,
    load_composition,
    refuse_saved_model,
    save_composition,
)
from ._devices import resolve_device
from ._gfe import GradientFlowEncoder
from ._torch_estimator import TRAINING_RECORD
from ._vae_dlm import VAEDLMRegressor

FORMAT_NAME = "skgfe"
# Raised when the layout changes; load refuses files written by a newer version.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"

# The only classes load instantiates: nothing is imported by name from a file.
ESTIMATORS = {
    cls.__name__: cls
    for cls in (
        GradientFlowEncoder,
        Autoencoder,
        VariationalAutoencoder,
        VAEDLMRegressor,
    )
}

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Attributes that are not part of a fitted model: the optimiser (rebuilt by the
# next partial_fit or warm start, as after unpickling), state that lives for one
# call of fit, and scikit-learn's callbacks.
_TRANSIENT = {
    "_optimizer",
    "_train_codes",
    "_train_prior",
    "_start_code_moments",
    "_prior_waiting_rows",
    "_train_samples",
    "_train_pool",
    "_validation_neighbours",
    "_final_train_codes",
    # The training / held-out split, kept for GradientFlowImputer's fit.
    "_keep_split",
    "_split",
    "_short_solves",
    "_group_flow_steps",
    # A warm-start fit's training codes: a loaded model's next warm start
    # restarts them from init.
    "_train_fingerprint",
    "_last_train_codes",
    "_last_code_prior_moments",
    "_last_split",
    "_skl_callbacks",
    "_skl_callbacks_to_teardown",
    "_callback_fit_ctx",
    "_parent_callback_ctx",
    "_metadata_request",
}


def _is_int(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_float(value):
    return isinstance(value, Real) and not isinstance(value, bool)


def _float_list(value):
    return isinstance(value, list) and all(_is_float(v) for v in value)


def _optional_float(value):
    return value is None or _is_float(value)


def _optional_float_list(value):
    return value is None or _float_list(value)


def _str_dict(value):
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _positive(value):
    return _is_float(value) and math.isfinite(value) and value > 0


def _finite(value):
    return _is_float(value) and math.isfinite(value)


# Checks of the decoded JSON values of the training record (TRAINING_RECORD).
_TRAINING_RECORD_CHECKS = {
    "loss_curve_": _float_list,
    "best_loss_": _is_float,
    "validation_scores_": _optional_float_list,
    "best_validation_score_": _optional_float,
    "n_iter_": _is_int,
    "t_": _is_int,
    "_no_improvement_count": _is_int,
}
# Fitted attributes every estimator keeps in config.json: name -> check of the
# decoded JSON value.
_TRAINING_STATE = {
    "n_features_in_": _is_int,
    "n_components_": _is_int,
    "_fitted_architecture": lambda v: isinstance(v, dict),
    **{name: _TRAINING_RECORD_CHECKS[name] for name in TRAINING_RECORD},
}
# Set by some fits only.
_FITTED_OPTIONAL = {
    "feature_names_in_": lambda v: (
        isinstance(v, list) and all(isinstance(s, str) for s in v)
    ),
    # GradientFlowEncoder with init='random': the seed of the start codes.
    "_random_start_seed": _is_int,
    # GradientFlowEncoder with init='amortized': how many training samples
    # (and their codes) the nearest-sample start keeps.
    "_n_neighbour_samples": _is_int,
    # fit (not partial_fit): whether training kept the weights it started from.
    "kept_start_": lambda v: isinstance(v, bool),
    # GradientFlowEncoder.fit: the code prior's weight, and the intrinsic
    # dimension 'auto' chose it from (None: no estimate).
    "code_prior_weight_": lambda v: _finite(v) and v >= 0,
    "intrinsic_dimension_": lambda v: v is None or _positive(v),
    # set_output's configuration.
    "_sklearn_output_config": _str_dict,
    # GradientFlowEncoder.fit: the noise and code prior of its error bars.
    "noise_variance_": lambda v: _float_list(v) and all(_positive(x) for x in v),
    "_code_mean": _float_list,
    "_code_covariance": lambda v: (
        isinstance(v, list)
        and all(_float_list(row) and len(row) == len(v) for row in v)
    ),
}
# Optional attributes that are float64 arrays, kept as (nested) JSON lists:
# Python writes floats to JSON exactly.
_FLOAT_ARRAYS = {"noise_variance_", "_code_mean", "_code_covariance"}
# Fitted attributes that config.json holds under an earlier name, so that files
# written before the rename load and files written since load in older versions.
_SAVED_NAMES = {"_random_start_seed": "_init_seed"}
_ATTRIBUTE_NAMES = {saved: name for name, saved in _SAVED_NAMES.items()}


@dataclass(frozen=True)
class _Schema:
    """What a saved estimator of one family holds, and how it is rebuilt.

    ``required``: its JSON fitted attributes (name -> check). ``arrays``: the
    numpy attributes stored in the weights file (name -> expected length, from
    the fitted attributes), in the data's dtype. ``other``: attributes that are
    neither (set from the dtype, or None-valued modules). ``sizes``: the
    leading arguments of its ``_build_modules``. ``module_dtype``: the dtype of
    its modules' tensors, from the data's. ``dtype_attributes``: set on loading,
    from the data's numpy dtype and the modules' torch dtype. ``data_dtype``:
    the data's dtype of a fitted estimator. ``optional_modules``: modules that
    some fitted estimators have (None-valued or absent in others) -> the
    method of the estimator that builds one, untrained, from the fitted
    attributes, the modules' dtype and the device.
    """

    required: dict
    arrays: dict
    other: frozenset
    sizes: Callable
    module_dtype: Callable
    dtype_attributes: Callable
    data_dtype: Callable
    optional_modules: dict = dataclasses.field(default_factory=dict)


_DECODER_TRANSFORMERS = _Schema(
    required={**_TRAINING_STATE, "scale_": _positive},
    arrays={"mean_": lambda fitted: fitted["n_features_in_"]},
    other=frozenset({"_fit_dtype", "_dtype"}),
    sizes=lambda fitted: (fitted["n_features_in_"],),
    module_dtype=lambda dtype: dtype,
    dtype_attributes=lambda fit_dtype, dtype: {
        "_fit_dtype": fit_dtype,
        "_dtype": dtype,
    },
    data_dtype=lambda estimator: np.dtype(estimator._fit_dtype),
)
_VAE_DLM = _Schema(
    required={
        **_TRAINING_STATE,
        "n_outputs_": _is_int,
        "x_scale_": _positive,
        "y_scale_": _positive,
        "t_min_": _finite,
        "t_scale_": _positive,
        "_y_ndim": lambda v: v in (1, 2),
        "_validation_seed": _is_int,
    },
    arrays={
        "x_mean_": lambda fitted: fitted["n_features_in_"] - 1,
        "y_mean_": lambda fitted: fitted["n_outputs_"],
    },
    # None without geometry (no metric or operator network).
    other=frozenset({"metric_", "operator_"}),
    sizes=lambda fitted: (fitted["n_features_in_"] - 1, fitted["n_outputs_"]),
    module_dtype=lambda dtype: VAEDLMRegressor._dtype,
    dtype_attributes=lambda fit_dtype, dtype: {},
    data_dtype=lambda estimator: estimator.x_mean_.dtype,
)
# GradientFlowEncoder.fit's start encoder and kept training codes
# (init='amortized'): None after partial_fit, or with another init.
_GFE = dataclasses.replace(
    _DECODER_TRANSFORMERS,
    other=_DECODER_TRANSFORMERS.other | {"_start_encoder", "_neighbour_codes"},
    optional_modules={
        "_start_encoder": "_build_start_encoder",
        "_neighbour_codes": "_build_neighbour_codes",
    },
)
SCHEMAS = {
    "GradientFlowEncoder": _GFE,
    "Autoencoder": _DECODER_TRANSFORMERS,
    "VariationalAutoencoder": _DECODER_TRANSFORMERS,
    "VAEDLMRegressor": _VAE_DLM,
}


# ---------------------------------------------------------------- JSON values
def _to_json(value, name):
    """A JSON-representable copy of ``value``; raise a ValueError if there is none.

    Tuples become ``{"__tuple__": [...]}`` and non-finite floats
    ``{"__float__": "inf"}``, so that they come back as they were.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if _is_int(value):
        return int(value)
    if _is_float(value):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, name) for v in value]}
    if isinstance(value, list):
        return [_to_json(v, name) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if any(k.startswith("__") for k in value):
            raise ValueError(f"{name} has a key starting with '__', reserved.")
        return {k: _to_json(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, np.random.RandomState):
        raise ValueError(
            f"{name} is a RandomState instance, whose state cannot be saved without "
            "pickle. Set an int (or None) first, e.g. "
            "estimator.set_params(random_state=0), then save."
        )
    raise ValueError(
        f"{name}={value!r} ({type(value).__name__}) cannot be saved: only None, "
        "bool, int, float, str and lists, tuples or dicts of them are "
        "representable in JSON."
    )


def _from_json(value, name):
    """Inverse of :func:`_to_json`."""
    if isinstance(value, list):
        return [_from_json(v, name) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value or "__float__" in value:
            (tag, content), *rest = value.items()
            if rest:
                raise _corrupt(f"{name} has a malformed tagged value {value!r}")
            if tag == "__tuple__" and isinstance(content, list):
                return tuple(_from_json(v, name) for v in content)
            if tag == "__float__" and content in ("inf", "-inf", "nan"):
                return float(content)
            raise _corrupt(f"{name} has a malformed tagged value {value!r}")
        return {k: _from_json(v, f"{name}[{k!r}]") for k, v in value.items()}
    return value


def _reject_constant(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


def _corrupt(reason):
    return ValueError(
        f"Cannot load the model: {reason}. The file is corrupted, "
        "was edited, or was not written by skgfe.save."
    )


# ------------------------------------------------------------------------ save
def _fitted_state(estimator, schema):
    """Modules (name -> module) and JSON attributes of a fitted estimator."""
    params = estimator.get_params(deep=False)
    known = set(schema.required) | set(_FITTED_OPTIONAL) | set(schema.arrays)
    known |= schema.other
    modules, attributes, unknown = {}, {}, []
    for name, value in vars(estimator).items():
        if name in params or name in _TRANSIENT:
            continue
        if isinstance(value, torch.nn.Module):
            modules[name] = value
        elif name in _FITTED_OPTIONAL and value is None:
            continue
        elif name in schema.required or name in _FITTED_OPTIONAL:
            if name == "feature_names_in_":
                value = [str(s) for s in value]
            elif name in _FLOAT_ARRAYS:
                value = np.asarray(value, dtype=np.float64).tolist()
            attributes[_SAVED_NAMES.get(name, name)] = _to_json(value, name)
        elif name not in known:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"Cannot save {type(estimator).__name__}: it has attributes that skgfe's "
            f"format does not know, {sorted(unknown)}. Remove them (or pickle the "
            "estimator instead)."
        )
    missing = sorted(set(schema.required) - set(attributes))
    if missing:
        raise ValueError(
            f"Cannot save {type(estimator).__name__}: fitted attributes {missing} "
            "are missing."
        )
    return modules, attributes


def save(estimator, path, *, overwrite=False):
    """Save a fitted skgfe estimator, or a pipeline holding some, without pickle.

    For an skgfe estimator the folder receives two files:
    ``weights.safetensors`` (the weights of the torch modules, the means of
    the internal scaling and, for a GradientFlowEncoder with the amortized
    start, up to 1000 scaled training samples and their codes, in the
    `safetensors <https://huggingface.co/docs/safetensors>`_ format) and
    ``config.json`` (the class name, the parameters, the other fitted
    attributes, a format version and the SHA-256 of the weights file). Both
    hold data only: :func:`load` runs no code from them. A folder that already
    holds a saved model is refused unless ``overwrite=True``.

    Any other scikit-learn estimator (a ``Pipeline``, ``ColumnTransformer``,
    ``TransformedTargetRegressor``, a fitted ``GridSearchCV``, ...) is saved
    with `skops <https://skops.readthedocs.io>`_, scikit-learn's format without
    pickle (``pip install 'skgfe[skops]'``), in ``composition.skops``; the
    skgfe estimators it holds, fitted or not, are replaced there by
    placeholders and saved in sub-folders of ``parts/`` in skgfe's own format.
    See :ref:`persistence` in the user guide.

    Weights on a GPU are copied to the CPU; the optimiser's state is not saved
    (as with pickle, the next ``partial_fit`` or warm-started ``fit`` starts a
    fresh optimiser).

    Parameters
    ----------
    estimator : skgfe estimator or scikit-learn estimator
        A fitted :class:`~skgfe.GradientFlowEncoder`,
        :class:`~skgfe.Autoencoder`, :class:`~skgfe.VariationalAutoencoder` or
        :class:`~skgfe.VAEDLMRegressor`, or a scikit-learn estimator that may
        hold them. The parameters of the skgfe estimators must be
        representable in JSON: ``random_state`` an int or None (not a
        RandomState instance).
    path : str or path-like
        The folder to write to; it is created if needed.
    overwrite : bool, default=False
        Replace a model already saved in ``path``. Without it, such a folder
        raises a FileExistsError and is left as it was.

    Returns
    -------
    path : str
        The folder written to.

    Raises
    ------
    TypeError
        If ``estimator`` is neither one of skgfe's estimators nor a
        scikit-learn estimator.
    ImportError
        If ``estimator`` is a composition and skops is not installed.
    sklearn.exceptions.NotFittedError
        If ``estimator`` is an skgfe estimator and is not fitted.
    ValueError
        If a parameter or an attribute cannot be represented in JSON.
    FileExistsError
        If ``path`` holds a saved model and ``overwrite`` is False.

    See Also
    --------
    load : Load a model saved by this function.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.datasets import load_digits
    >>> from skgfe import GradientFlowEncoder, load, save
    >>> X = load_digits().data[:200]
    >>> gfe = GradientFlowEncoder(n_components=4, max_iter=5, random_state=0)
    >>> gfe = gfe.fit(X)
    >>> folder = save(gfe, tempfile.mkdtemp())
    >>> restored = load(folder)
    >>> bool((restored.transform(X[:5]) == gfe.transform(X[:5])).all())
    True

    A pipeline (this needs skops):

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> pipe = make_pipeline(StandardScaler(), gfe).fit(X)
    >>> restored = load(save(pipe, tempfile.mkdtemp()))
    >>> bool((restored.transform(X[:5]) == pipe.transform(X[:5])).all())
    True
    """
    name = type(estimator).__name__
    if ESTIMATORS.get(name) is not type(estimator):
        if isinstance(estimator, BaseEstimator):
            return save_composition(estimator, path, overwrite=overwrite)
        raise TypeError(
            f"save handles skgfe's estimators {sorted(ESTIMATORS)} and scikit-learn "
            f"estimators that hold them (a Pipeline, for example), got {name}."
        )
    check_is_fitted(estimator)
    params = {
        key: _to_json(value, key)
        for key, value in estimator.get_params(deep=False).items()
    }
    schema = SCHEMAS[name]
    modules, attributes = _fitted_state(estimator, schema)
    dtype = str(schema.data_dtype(estimator))
    tensors = {
        f"{module_name}.{key}": tensor.detach().cpu().contiguous()
        for module_name, module in modules.items()
        for key, tensor in module.state_dict().items()
    }
    for array in schema.arrays:
        values = np.ascontiguousarray(getattr(estimator, array), dtype=dtype)
        tensors[array] = torch.from_numpy(values)
    data = _save_tensors(tensors, metadata={"format": "pt"})
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": name,
        "dtype": dtype,
        "modules": sorted(modules),
        "params": params,
        "fitted": attributes,
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        # For information only: what wrote the file.
        "versions": {
            "skgfe": _skgfe_version(),
            "torch": torch.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }
    text = json.dumps(config, indent=2, allow_nan=False)
    return _write_files(os.fspath(path), data, text.encode(), overwrite)


def _write_files(path, weights, config, overwrite):
    """Write the weights and config files (bytes) to the folder ``path``."""
    if COMPOSITION_FILE in refuse_saved_model(path, overwrite):
        clear_saved_model(path)
    os.makedirs(path, exist_ok=True)
    # Weights first, config last: a save interrupted half-way leaves a config
    # whose SHA-256 does not match, and load refuses it.
    for file_name, content in ((WEIGHTS_FILE, weights), (CONFIG_FILE, config)):
        target = os.path.join(path, file_name)
        with open(target + ".tmp", "wb") as handle:
            handle.write(content)
        os.replace(target + ".tmp", target)
    return path


def _skgfe_version():
    from . import __version__

    return __version__


# ------------------------------------------------------------------------ load
def _read_config(path):
    with open(os.path.join(path, CONFIG_FILE), "rb") as handle:
        raw = handle.read()
    try:
        config = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError too
        raise _corrupt(f"{CONFIG_FILE} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise _corrupt(f"{CONFIG_FILE} is not an skgfe model description")
    version = config.get("format_version")
    if not _is_int(version) or version < 1:
        raise _corrupt(f"format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"The model was saved in format version {version}, newer than this "
            f"skgfe reads (up to {FORMAT_VERSION}). Upgrade skgfe to load it."
        )
    for key, kind in [
        ("estimator", str),
        ("dtype", str),
        ("modules", list),
        ("params", dict),
        ("fitted", dict),
        ("weights", dict),
    ]:
        if not isinstance(config.get(key), kind):
            raise _corrupt(f"{CONFIG_FILE} lacks a valid {key!r} entry")
    return config


def _read_weights(path, config):
    weights = config["weights"]
    if weights.get("file") != WEIGHTS_FILE or not isinstance(
        weights.get("sha256"), str
    ):
        raise _corrupt(f"the 'weights' entry of {CONFIG_FILE} is malformed")
    with open(os.path.join(path, WEIGHTS_FILE), "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != weights["sha256"]:
        raise _corrupt(
            f"the SHA-256 of {WEIGHTS_FILE} does not match the one recorded in "
            f"{CONFIG_FILE} (truncated or modified weights)"
        )
    try:
        return _load_tensors(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise _corrupt(
            f"{WEIGHTS_FILE} is not a valid safetensors file ({error})"
        ) from None


def _check_fitted(fitted, schema):
    """Decode and check the JSON fitted attributes (name -> value)."""
    fitted = {_ATTRIBUTE_NAMES.get(name, name): value for name, value in fitted.items()}
    unknown = set(fitted) - set(schema.required) - set(_FITTED_OPTIONAL)
    if unknown:
        raise _corrupt(f"unknown fitted attributes {sorted(unknown)}")
    missing = set(schema.required) - set(fitted)
    if missing:
        raise _corrupt(f"fitted attributes {sorted(missing)} are missing")
    decoded = {}
    for name, value in fitted.items():
        value = _from_json(value, name)
        check = schema.required.get(name) or _FITTED_OPTIONAL[name]
        if not check(value):
            raise _corrupt(
                f"the fitted attribute {name}={value!r} has a wrong type, or is "
                "not finite or not positive where it must be"
            )
        decoded[name] = value
    return decoded


def _build(cls, params, fitted, sizes, dtype, device):
    """A new estimator with the recorded parameters and freshly built modules."""
    try:
        estimator = cls(**params)
    except TypeError as error:
        raise _corrupt(f"the parameters do not fit {cls.__name__} ({error})") from None
    architecture = fitted["_fitted_architecture"]
    if set(architecture) != set(estimator._architecture()):
        raise _corrupt(
            "_fitted_architecture names other parameters than "
            f"{cls.__name__}'s architecture"
        )
    try:
        estimator._validate_params()
        estimator._check_params()
        # Build the modules with the parameters they were fitted with, which
        # set_params may have changed since (they apply at the next fit).
        estimator.set_params(**architecture)
        estimator._validate_params()
        estimator._check_params()
        if estimator._architecture() != architecture:
            raise ValueError("_fitted_architecture is not in its resolved form")
        generator = torch.Generator().manual_seed(0)  # overwritten by the weights
        with torch.no_grad():
            estimator._build_modules(*sizes, generator, dtype, device)
    except ValueError as error:  # InvalidParameterError too
        raise _corrupt(f"invalid parameters ({error})") from None
    estimator.set_params(**params)
    return estimator


def _build_optional_modules(estimator, schema, config, fitted, device):
    """Build, untrained, the optional modules that ``config`` records."""
    dtype = schema.module_dtype(DTYPES[config["dtype"]])
    for module_name, build in schema.optional_modules.items():
        if module_name in config["modules"]:
            getattr(estimator, build)(fitted, dtype, device)


def _load_modules(estimator, module_names, tensors, arrays, array_dtype):
    """Copy the tensors into the estimator's modules, after strict checks.

    ``arrays`` maps the names of the stored numpy attributes to their lengths,
    all in ``array_dtype``; the modules' tensors must have the dtype of the
    freshly built modules.
    """
    built = {
        name: value
        for name, value in vars(estimator).items()
        if isinstance(value, torch.nn.Module)
    }
    if sorted(built) != sorted(module_names):
        raise _corrupt(
            f"the recorded modules {sorted(module_names)} are not those of "
            f"{type(estimator).__name__}, {sorted(built)}"
        )
    expected = {
        f"{module_name}.{key}": tensor
        for module_name, module in built.items()
        for key, tensor in module.state_dict().items()
    }
    for name, length in arrays.items():
        expected[name] = torch.empty(length, dtype=array_dtype, device="meta")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _corrupt(
            f"the weights do not match the recorded parameters (missing tensors "
            f"{missing}, unexpected tensors {unexpected})"
        )
    for key, reference in expected.items():
        tensor = tensors[key]
        if tensor.shape != reference.shape:
            raise _corrupt(
                f"tensor {key!r} has shape {tuple(tensor.shape)}, but the recorded "
                f"parameters give {tuple(reference.shape)}"
            )
        if tensor.dtype != reference.dtype:
            raise _corrupt(
                f"tensor {key!r} has dtype {tensor.dtype}, but the model is "
                f"recorded as {reference.dtype}"
            )
    for module_name, module in built.items():
        prefix = module_name + "."
        state = {
            key[len(prefix) :]: value
            for key, value in tensors.items()
            if key.startswith(prefix)
        }
        module.load_state_dict(state, strict=True)


def load(path, device=None, *, trusted=None):
    """Load a model or pipeline saved by :func:`save`, without pickle.

    For an skgfe estimator, only skgfe's own estimators are created: the
    class is looked up in a fixed table, the networks are rebuilt from the
    recorded parameters, and the weights are copied in after strict checks of
    their names, shapes and dtypes. The SHA-256 of the weights file must match
    the one recorded. The loaded model transforms, inverse-transforms and
    scores exactly (bit for bit, on the same device) as the saved one, and can
    be trained further with ``partial_fit`` or ``warm_start`` (with a fresh
    optimiser).

    A composition (a pipeline, for example) is read by skops, which creates
    only the types it trusts (scikit-learn's and numpy's by default, plus
    ``trusted``), and its skgfe estimators are loaded as above; it needs skops.

    Parameters
    ----------
    path : str or path-like
        The folder :func:`save` wrote.
    device : str, torch.device or None, default=None
        Where to put the weights, and the ``device`` parameter of the loaded
        estimator: None loads onto the CPU (whatever device the model was
        trained on), else any device the estimators accept ('cuda', 'cuda:1',
        'mps', 'auto', ...). The parameter recorded at saving time is replaced.
        In a composition, this applies to every skgfe estimator it holds
        (unfitted ones keep their recorded ``device`` when None).
    trusted : list of str or None, default=None
        For a composition only: the types outside skops' default trusted set
        (scikit-learn's and numpy's own) that the skops file may create, as
        full names (``"mypackage.MyTransformer"``). Loading a composition
        that holds other types raises a TypeError naming them; check where
        they come from before trusting them.

    Returns
    -------
    estimator : skgfe estimator or scikit-learn estimator
        The fitted estimator, or the composition as it was saved.

    Raises
    ------
    TypeError
        If a saved composition holds types that are neither trusted by skops
        by default nor listed in ``trusted``.
    ValueError
        If the files come from a newer format version, are corrupted or were
        edited inconsistently (missing or unexpected tensors, wrong shapes or
        dtypes, a weights file whose SHA-256 does not match, a class name that
        is not one of skgfe's estimators, invalid parameters), or if ``device``
        is not available.
    FileNotFoundError
        If a file is missing.

    See Also
    --------
    save : Save a fitted estimator.

    Notes
    -----
    The checks detect corruption and edits that make the description and the
    weights disagree; they do not authenticate the files (whoever can edit
    both can rewrite the checksum). Loading untrusted files is nonetheless
    safe in the sense that no code from them runs: at worst the model computes
    something other than the original.
    """
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, COMPOSITION_FILE)):
        return load_composition(path, device=device, trusted=trusted)
    target = "cpu" if device is None else device
    torch_device = resolve_device(target)
    config = _read_config(path)
    name = config["estimator"]
    cls = ESTIMATORS.get(name)
    if cls is None:
        raise _corrupt(
            f"estimator {name!r} is not one of skgfe's estimators {sorted(ESTIMATORS)}"
        )
    dtype = DTYPES.get(config["dtype"])
    if dtype is None:
        raise _corrupt(f"dtype {config['dtype']!r} is not float32 or float64")
    params = {k: _from_json(v, k) for k, v in config["params"].items()}
    if "device" not in params:
        raise _corrupt("the parameters lack 'device'")
    params["device"] = target
    schema = SCHEMAS[name]
    fitted = _check_fitted(config["fitted"], schema)
    n_features = fitted["n_features_in_"]
    names = fitted.get("feature_names_in_")
    if names is not None and len(names) != n_features:
        raise _corrupt(f"{len(names)} feature names for n_features_in_={n_features}")
    if fitted["n_components_"] != fitted["_fitted_architecture"].get("n_components"):
        raise _corrupt("n_components_ differs from the fitted architecture's")
    if len(fitted.get("noise_variance_", [0] * n_features)) != n_features:
        raise _corrupt(f"noise_variance_ does not hold n_features_in_={n_features}")
    if (
        len(fitted.get("_code_covariance", [0] * fitted["n_components_"]))
        != (fitted["n_components_"])
    ):
        raise _corrupt("the code covariance is not n_components x n_components")
    arrays = {array: length(fitted) for array, length in schema.arrays.items()}
    if min(arrays.values()) < 1:
        raise _corrupt(f"the recorded sizes {arrays} are not positive")
    tensors = _read_weights(path, config)
    estimator = _build(
        cls, params, fitted, schema.sizes(fitted), schema.module_dtype(dtype),
        torch_device,
    )  # fmt: skip
    _build_optional_modules(estimator, schema, config, fitted, torch_device)
    _load_modules(estimator, config["modules"], tensors, arrays, dtype)
    for array in arrays:
        setattr(estimator, array, tensors[array].numpy())
    attributes = schema.dtype_attributes(np.dtype(config["dtype"]), dtype)
    for attr, value in attributes.items():
        setattr(estimator, attr, value)
    for attr, value in fitted.items():
        if attr == "feature_names_in_":
            value = np.asarray(value, dtype=object)
        elif attr in _FLOAT_ARRAYS:
            value = np.asarray(value, dtype=np.float64)
        setattr(estimator, attr, value)
    estimator._optimizer = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_is_fitted(estimator)
    return estimator
