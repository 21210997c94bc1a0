"""The closed sets of names that the library checks and the command line offers (``choices=``).

One tuple each, read by both: a name added here is accepted everywhere at once. It imports
nothing, so that the parser can read it before TensorFlow starts (the oneDNN choice must be
made first; see :func:`facefold.machine.apply_onednn_choice`).
"""

from __future__ import annotations

# What a network computes in (weights stay float32; see facefold.models.cnn.build_model).
PRECISIONS = ("float32", "bfloat16")
# train.precision and --precision: one of the two, or "auto" = both timed here, the faster kept
# (facefold.train.precision.resolve_precision).
PRECISION_SETTINGS = ("auto", *PRECISIONS)
# Where the (preset, fold) trials of cv and experiment run (facefold.evaluate.executor).
EXECUTORS = ("local", "ray")
# What `facefold export` writes (facefold.export; each format's file: facefold.runs.MODEL_FILES).
EXPORT_FORMATS = ("keras", "savedmodel", "tflite")
# Open-set scores: how "unknown" is decided (facefold.models.scores.SCORES computes each).
SCORES = ("msp", "max_logit", "energy", "cosine", "nearest")
# How `fit --far` bounds the strangers accepted (facefold.fitting._pooled): "pooled", the share
# of all the calibration strangers' pictures together (what fit did first: a few people with
# many pictures decide it); "upper", the 95 % upper bound over strangers of the mean
# per-person rate; "worst", every calibration stranger's own rate (facefold.models.identities).
FAR_BOUNDS = ("pooled", "upper", "worst")
DEFAULT_FAR_BOUND = "pooled"
