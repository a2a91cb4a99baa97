"""Warnings that point at the user's line, whatever the call depth inside.

skgfe warns from several levels below the public method (``fit`` -> ``_fit`` ->
the training loop), scikit-learn's ``_fit_context`` wraps ``fit`` in one more
frame, and its meta-estimators call ``fit`` through joblib. A fixed
``stacklevel`` breaks with every refactoring; this walks up the stack to the
first frame outside skgfe, scikit-learn and joblib instead (for a grid search:
the line that called its ``fit``).
"""

import sys
import warnings
from pathlib import Path

import joblib
import sklearn

# scikit-learn's meta-estimators call fit through joblib.
_INTERNAL = tuple(
    str(Path(module.__file__).parent)
    for module in (sys.modules[__package__], sklearn, joblib)
)


def _is_internal(filename):
    return filename.startswith(_INTERNAL)


def warn_user(message, category=UserWarning):
    """``warnings.warn`` attributed to the first caller outside skgfe and sklearn."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
