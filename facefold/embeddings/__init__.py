"""Pretrained face embeddings: computed once per image, cached by content, learned on by a head.

:mod:`~facefold.embeddings.dlib128` computes dlib's 128-d face descriptor (by default with
dlib's network read from its own file by :mod:`~facefold.embeddings.dlib_format` and run by
Keras, :mod:`~facefold.embeddings.resnet`), :mod:`~facefold.embeddings.cache` stores it by the
image's SHA-256 and model version, and :mod:`~facefold.embeddings.shards` turns a dataset's
shards into embedding splits for :mod:`facefold.models.head`.
"""
