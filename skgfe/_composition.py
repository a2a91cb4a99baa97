"""Saving and loading scikit-learn compositions that hold skgfe estimators.

A ``Pipeline`` (or a ``ColumnTransformer``, a ``TransformedTargetRegressor``,
a fitted ``GridSearchCV``, any scikit-learn estimator) whose steps include skgfe
estimators is saved, without pickle, as a folder:

- ``composition.json``: the format version, the SHA-256 of the skops file and
  the table of skgfe estimators (placeholder -> sub-folder, or the parameters
  of an unfitted one);
- ``composition.skops``: the composition written by `skops
  <https://skops.readthedocs.io>`_ (scikit-learn's own types, checked against
  a list of trusted types on loading), with each skgfe estimator replaced by a
  placeholder string;
- ``parts/<i>/``: each fitted skgfe estimator, saved by :func:`skgfe.save`
  (safetensors + JSON).

skops cannot store torch modules, and skgfe's format cannot store scikit-learn's
estimators: each writes what it knows.
"""

import hashlib
import json
import os
import shutil
import uuid

from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

COMPOSITION_FILE = "composition.json"
SKOPS_FILE = "composition.skops"
PARTS_FOLDER = "parts"
FORMAT_NAME = "skgfe-composition"
FORMAT_VERSION = 1
# skgfe's own scikit-learn estimators that hold skgfe estimators: plain
# parameters and fitted attributes, no code, so skops may create them.
TRUSTED_TYPES = ["skgfe._imputer.GradientFlowImputer"]


def _import_skops():
    try:
        import skops.io
    except ImportError as error:
        raise ImportError(
            "Saving or loading a composition of estimators (a Pipeline, for "
            "example) needs skops, which writes scikit-learn's estimators without "
            "pickle: pip install 'skgfe[skops]'."
        ) from error
    return skops.io


def _is_skgfe_estimator(obj):
    from ._persistence import ESTIMATORS

    return ESTIMATORS.get(type(obj).__name__) is type(obj)


def _holds_estimators(obj):
    """Whether ``obj`` is scikit-learn's (estimator, scorer) and may hold others."""
    cls = type(obj)
    return hasattr(obj, "__dict__") and (
        isinstance(obj, BaseEstimator) or cls.__module__.startswith("sklearn.")
    )


def _replace_skgfe_estimators(obj, placeholder, memo):
    """A copy of ``obj`` with each skgfe estimator replaced by ``placeholder(it)``.

    Scikit-learn's objects, lists, tuples and dicts on the way are copied
    (shallowly, and only as far as needed to reach the skgfe estimators); every
    other object is shared with ``obj``, which is left unchanged.
    """
    if id(obj) in memo:
        return memo[id(obj)]
    if _is_skgfe_estimator(obj):
        result = placeholder(obj)
    elif _holds_estimators(obj):
        result = object.__new__(type(obj))
        memo[id(obj)] = result
        result.__dict__.update(
            {
                key: _replace_skgfe_estimators(value, placeholder, memo)
                for key, value in vars(obj).items()
            }
        )
    elif type(obj) in (list, tuple):
        result = type(obj)(_replace_skgfe_estimators(v, placeholder, memo) for v in obj)
    elif type(obj) is dict:
        result = {
            k: _replace_skgfe_estimators(v, placeholder, memo) for k, v in obj.items()
        }
    else:
        return obj
    memo[id(obj)] = result
    return result


def _restore_skgfe_estimators(obj, estimators):
    """Put the loaded skgfe estimators back in place of their placeholders.

    ``obj`` comes fresh from skops and is changed in place (tuples are rebuilt).
    """
    if isinstance(obj, str):
        return estimators.get(obj, obj)
    if _holds_estimators(obj):
        for key, value in vars(obj).items():
            obj.__dict__[key] = _restore_skgfe_estimators(value, estimators)
    elif type(obj) is list:
        obj[:] = [_restore_skgfe_estimators(v, estimators) for v in obj]
    elif type(obj) is tuple:
        return tuple(_restore_skgfe_estimators(v, estimators) for v in obj)
    elif type(obj) is dict:
        for key, value in obj.items():
            obj[key] = _restore_skgfe_estimators(value, estimators)
    return obj


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def clear_saved_model(path):
    """Remove what :func:`skgfe.save` wrote in ``path`` (either layout)."""
    from ._persistence import CONFIG_FILE, WEIGHTS_FILE

    composition = os.path.join(path, COMPOSITION_FILE)
    if os.path.exists(composition):
        shutil.rmtree(os.path.join(path, PARTS_FOLDER), ignore_errors=True)
    for name in (COMPOSITION_FILE, SKOPS_FILE, CONFIG_FILE, WEIGHTS_FILE):
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))


def saved_files(path):
    """The files of a model saved by :func:`skgfe.save` that ``path`` holds."""
    from ._persistence import CONFIG_FILE, WEIGHTS_FILE

    names = (COMPOSITION_FILE, SKOPS_FILE, CONFIG_FILE, WEIGHTS_FILE)
    return [name for name in names if os.path.exists(os.path.join(path, name))]


def refuse_saved_model(path, overwrite):
    """The saved-model files in ``path``; raise if any, unless ``overwrite``."""
    existing = saved_files(path)
    if existing and not overwrite:
        raise FileExistsError(
            f"{path!r} already holds a saved model ({', '.join(existing)}); pass "
            "overwrite=True to replace it, or choose another folder."
        )
    return existing


def save_composition(composition, path, *, overwrite=False):
    """Save a scikit-learn estimator that holds skgfe estimators; see skgfe.save."""
    from ._persistence import _to_json, save

    sio = _import_skops()
    path = os.fspath(path)
    existing = refuse_saved_model(path, overwrite)
    token = uuid.uuid4().hex
    parts = {}

    def placeholder(estimator):
        marker = f"skgfe-estimator-{len(parts)}-{token}"
        entry = {"estimator": type(estimator).__name__}
        if _is_fitted(estimator):
            entry["folder"] = f"{PARTS_FOLDER}/{len(parts)}"
        else:
            params = estimator.get_params(deep=False)
            entry["params"] = {k: _to_json(v, k) for k, v in params.items()}
            config = getattr(estimator, "_sklearn_output_config", None)
            if config is not None:
                entry["output_config"] = _to_json(config, "_sklearn_output_config")
        parts[marker] = (estimator, entry)
        return marker

    stripped = _replace_skgfe_estimators(composition, placeholder, {})
    if existing:
        clear_saved_model(path)
    os.makedirs(path, exist_ok=True)
    for estimator, entry in parts.values():
        if "folder" in entry:
            save(estimator, os.path.join(path, entry["folder"]))
    skops_path = os.path.join(path, SKOPS_FILE)
    sio.dump(stripped, skops_path)
    description = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skops_file": SKOPS_FILE,
        "sha256": _sha256(skops_path),
        "estimators": {marker: entry for marker, (_, entry) in parts.items()},
    }
    text = json.dumps(description, indent=2, allow_nan=False)
    # Written last: a save interrupted earlier leaves no composition.json, so
    # load does not mistake the folder for a complete one.
    target = os.path.join(path, COMPOSITION_FILE)
    with open(target + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(target + ".tmp", target)
    return path


def _read_description(path):
    from ._persistence import _corrupt

    with open(os.path.join(path, COMPOSITION_FILE)) as handle:
        try:
            description = json.load(handle)
        except json.JSONDecodeError as error:
            raise _corrupt(f"{COMPOSITION_FILE} is not valid JSON ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        raise _corrupt(f"{COMPOSITION_FILE} does not describe an skgfe composition")
    version = description.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"Cannot load the model: its format version {version!r} is newer than "
            f"this skgfe's ({FORMAT_VERSION}). Upgrade skgfe to load it."
        )
    if description.get("skops_file") != SKOPS_FILE:
        raise _corrupt(f"the skops file is not {SKOPS_FILE!r}")
    if not isinstance(description.get("estimators"), dict):
        raise _corrupt("the table of skgfe estimators is missing")
    return description


def _load_part(path, entry, device):
    from ._persistence import ESTIMATORS, _corrupt, _from_json, load

    cls = ESTIMATORS.get(entry.get("estimator") if isinstance(entry, dict) else None)
    if cls is None:
        raise _corrupt(f"{entry!r} does not name one of skgfe's estimators")
    folder = entry.get("folder")
    if folder is not None:
        if folder != os.path.normpath(folder) or not folder.startswith(PARTS_FOLDER):
            raise _corrupt(f"the part folder {folder!r} is outside {PARTS_FOLDER!r}")
        estimator = load(os.path.join(path, folder), device=device)
        if type(estimator) is not cls:
            raise _corrupt(f"{folder!r} holds a {type(estimator).__name__}")
        return estimator
    params = {k: _from_json(v, k) for k, v in entry.get("params", {}).items()}
    if device is not None:
        params["device"] = device
    try:
        estimator = cls(**params)
    except TypeError as error:
        raise _corrupt(f"invalid parameters for {cls.__name__}: {error}") from None
    if "output_config" in entry:
        estimator._sklearn_output_config = _from_json(entry["output_config"], "output")
    return estimator


def load_composition(path, *, device=None, trusted=None):
    """Load what :func:`save_composition` wrote; see skgfe.load."""
    from ._persistence import _corrupt

    sio = _import_skops()
    description = _read_description(path)
    skops_path = os.path.join(path, SKOPS_FILE)
    if _sha256(skops_path) != description.get("sha256"):
        raise _corrupt(f"the SHA-256 of {SKOPS_FILE} does not match the recorded one")
    untrusted = sio.get_untrusted_types(file=skops_path)
    missing = sorted(set(untrusted) - set(trusted or ()) - set(TRUSTED_TYPES))
    if missing:
        raise TypeError(
            f"The saved composition holds types that skops does not trust by "
            f"default: {missing}. Loading creates them, so check that they come "
            "from code you trust, then pass them as load(..., trusted=[...])."
        )
    composition = sio.load(skops_path, trusted=list(untrusted) or None)
    estimators = {
        marker: _load_part(path, entry, device)
        for marker, entry in description["estimators"].items()
    }
    return _restore_skgfe_estimators(composition, estimators)
