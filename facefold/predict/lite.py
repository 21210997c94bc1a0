"""A ``.tflite`` model file run by the LiteRT interpreter: inference without TensorFlow.

Importing TensorFlow takes seconds (docs/performance.md, "Start-up"); the LiteRT interpreter
(``ai-edge-litert``, the ``lite`` extra) a tenth of one. A TFLite export (``facefold export
--format tflite``) and the ``lite/`` export a fitted model folder keeps of its newest
checkpoint (:func:`facefold.runs.lite_dir`, checked by :func:`kept_export`) are run by it when
it is installed and loads the file; otherwise by ``tf.lite.Interpreter``, which also runs the
Flex ops LiteRT lacks (the antialiased resize of the ``sizeNN`` presets).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facefold import runs
from facefold.data.images import file_sha256
from facefold.machine import quiet_native_start, start_tensorflow, usable_cores

# uint8 pictures (or chips) in, {"logits", "features"} float32 out (facefold.models.outputs).
Infer = Callable[[np.ndarray], dict[str, np.ndarray]]

# The export.json field naming the checkpoint an export was made from (its SHA-256): a kept
# lite export is used only while it is the run's newest checkpoint.
CHECKPOINT_FIELD = "checkpoint_sha256"


def _interpreter(path: Path) -> tuple[Any, str]:
    """``(interpreter, runtime name)`` of a ``.tflite`` file: LiteRT's when it is installed and
    loads the file, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        pass
    else:
        try:
            with quiet_native_start():
                interpreter = Interpreter(model_path=str(path), num_threads=usable_cores())
                interpreter.allocate_tensors()  # a Flex op LiteRT lacks fails here
            return interpreter, "litert"
        except (RuntimeError, ValueError):
            pass
    tf = start_tensorflow()
    with warnings.catch_warnings():
        # TF 2.21 still ships tf.lite.Interpreter but warns that it moves to ai_edge_litert.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        with quiet_native_start():
            interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=usable_cores())
    return interpreter, "tensorflow"


def tflite_infer(path: Path) -> tuple[Callable[[Any], dict[str, np.ndarray]],
                                      dict[str, tuple[int | None, ...]], str]:
    """``(infer, input shapes, runtime)`` of a ``.tflite`` file: ``infer`` takes one array (a
    network's one input, ``image`` or ``chips``) or a dict of arrays by input name (an
    ensemble's); each input's shape by name, with the batch as None; which runtime runs it
    ("litert" or "tensorflow"). The inputs are resized per batch."""
    interpreter, runtime = _interpreter(path)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    shapes = {name: (None, *(int(v) for v in detail["shape"][1:]))
              for name, detail in details.items()}
    first = next(iter(details))
    return (lambda x: runner(**(dict(x) if isinstance(x, Mapping) else {first: x})), shapes,
            runtime)


def checkpoint_digest(checkpoint: Path) -> str:
    """What an export records of the checkpoint it was made from (:data:`CHECKPOINT_FIELD`)."""
    return file_sha256(checkpoint)


def kept_export(run_dir: Path) -> Path | None:
    """The run's own TFLite export (``RUN/lite``) when it holds the run's newest checkpoint,
    else None (none kept, another format, or a checkpoint trained since)."""
    folder = runs.lite_dir(run_dir)
    if not runs.is_export(folder):
        return None
    try:
        meta = runs.read_json_object(folder / runs.EXPORT_FILE)
    except ValueError:
        return None
    found = runs.latest_checkpoint(run_dir)
    if meta.get("format") != "tflite" or found is None or meta.get(CHECKPOINT_FIELD) != (
            checkpoint_digest(found[1])):
        return None
    # An embedding head's run records the embedding version it learned on; the export the
    # one it was made with: another (the run edited since) leaves the checks to the run.
    if _embedding_version(runs.read_run_info(run_dir)) != _embedding_version(meta):
        return None
    return folder


def _embedding_version(meta: dict[str, Any]) -> str | None:
    embedding = meta.get("embedding")
    return embedding.get("model_version") if isinstance(embedding, dict) else None
