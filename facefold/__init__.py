"""facefold: train face-identification models on your own labeled face crops, evaluate them
honestly with K-fold cross-validation, and deploy a recognizer (TensorFlow 2 / Keras 3).

The public API, imported on first use (``import facefold`` itself stays light)::

    from facefold import Recognizer, build_dataset, cross_validate, evaluate_model, fit
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute): the documented entry points (docs/python-api.md).
_API = {
    "Recognizer": ("facefold.recognizer", "Recognizer"),
    "build_dataset": ("facefold.data.build", "build_dataset"),
    "cross_validate": ("facefold.evaluate.cv", "run_cv"),
    "evaluate_model": ("facefold.evaluate.generalization", "evaluate_model"),
    "fit": ("facefold.fitting", "fit"),
    "resolve_config": ("facefold.models.presets", "resolve_config"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'facefold' has no attribute {name!r}")
    module, attribute = _API[name]
    # Before the API's module starts TensorFlow: oneDNN as measured on this machine, if it was.
    from facefold.machine import apply_onednn_choice

    apply_onednn_choice()
    return getattr(import_module(module), attribute)
