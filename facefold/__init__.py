"""facefold: train face-identification models on your own labeled face crops and
evaluate them honestly with K-fold cross-validation (TensorFlow 2 / Keras 3)."""

__version__ = "0.1.0"
