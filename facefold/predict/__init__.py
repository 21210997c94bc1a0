"""Recognition with a trained model: load a model folder, name the faces in pictures.

- :mod:`.loading`: run and export folders into an inference function (no training code);
- :mod:`.predictor`: :class:`Predictor` — probabilities, open-set scores, names, faces in photos;
- :mod:`.files`: many files at once, and the CLI's text.
"""

from facefold.data.images import MAX_CROP_SIDE, looks_like_face_crop
from facefold.predict.files import FILES_PER_CHUNK, format_results, predict_files
from facefold.predict.loading import LoadedModel, ModelInfo, load_model_folder
from facefold.predict.predictor import (
    UNKNOWN,
    NoFaceError,
    Predictor,
    Recognition,
    load_detector,
)

__all__ = [
    "FILES_PER_CHUNK", "MAX_CROP_SIDE", "UNKNOWN", "LoadedModel", "ModelInfo", "NoFaceError",
    "Predictor", "Recognition", "format_results", "load_detector", "load_model_folder",
    "looks_like_face_crop", "predict_files",
]
