"""Pretrained face embeddings: computed once per image, cached by content, learned on by a head.

:mod:`~facefold.embeddings.dlib128` computes dlib's 128-d face descriptor,
:mod:`~facefold.embeddings.cache` stores it by the image's SHA-256 and model
version, and :mod:`~facefold.embeddings.shards` turns a dataset's shards into
embedding splits for :mod:`facefold.models.head`.
"""
