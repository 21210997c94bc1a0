"""Faces in ordinary photos: detection, alignment and cropping (the ``faces`` extra).

:mod:`facefold.faces.detect` finds faces and aligns them; :mod:`facefold.faces.crop`
turns a folder of photos into a folder of aligned crops for ``facefold dataset build``.
Importing this package is cheap: the detector (and TensorFlow) load on first use.
"""

from facefold.faces.detect import ARCFACE_TEMPLATE_112, Face, align_face, detect_faces

__all__ = ["ARCFACE_TEMPLATE_112", "Face", "align_face", "detect_faces"]
