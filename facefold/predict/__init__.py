"""Recognition with a trained model: load a model folder, name the faces in pictures.

- :mod:`.loading`: run and export folders into an inference function (no training code);
- :mod:`.predictor`: :class:`Predictor` — probabilities, open-set scores, names, faces in photos;
- :mod:`.files`: many files at once, and the CLI's text;
- :mod:`.gallery`: people enrolled without retraining (SQLite);
- :mod:`.lite`: a ``.tflite`` file by the LiteRT interpreter, and the TFLite copy a run keeps
  (what lets ``verify`` and ``identify`` start without TensorFlow).

The names below are imported on first use; none of these modules imports TensorFlow until a
model needs it (a checkpoint or a Keras or SavedModel export).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> the module that defines it
_NAMES = {
    "MAX_CROP_SIDE": "facefold.data.images",
    "looks_like_face_crop": "facefold.data.images",
    "FILES_PER_CHUNK": "facefold.predict.files",
    "format_results": "facefold.predict.files",
    "predict_files": "facefold.predict.files",
    "LoadedModel": "facefold.predict.loading",
    "ModelInfo": "facefold.predict.loading",
    "load_model_folder": "facefold.predict.loading",
    "UNKNOWN": "facefold.predict.predictor",
    "NoFaceError": "facefold.predict.predictor",
    "Predictor": "facefold.predict.predictor",
    "Recognition": "facefold.predict.predictor",
    "load_detector": "facefold.predict.predictor",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'facefold.predict' has no attribute {name!r}")
    return getattr(import_module(_NAMES[name]), name)
