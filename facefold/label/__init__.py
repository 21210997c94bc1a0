"""``facefold label PHOTOS --out FACES``: a local page to name the faces of unsorted photos.

The faces of PHOTOS are found, aligned and embedded once (:mod:`~facefold.label.store`),
grouped by identity, and shown group by group with a proposed name
(:mod:`~facefold.label.session`); every decision is appended to a log on disk before the page
hears back (:mod:`~facefold.label.decisions`) and the person folders in FACES follow it.
Named faces whose name looks wrong are listed by the confident-learning ranking of ``dataset
audit`` (:meth:`~facefold.label.session.Session.suspects`), to be moved, kept or rejected. The
page and API are :mod:`~facefold.label.app` (``label.html`` beside it), the server
:mod:`~facefold.label.server`. It reuses the serving stack's Host/Origin check and uvicorn
set-up and imports no training code.
"""

from facefold.label.decisions import ACTIONS, REJECT_REASONS, DecisionLog, read_log
from facefold.label.server import label, open_session
from facefold.label.session import Session

__all__ = ["ACTIONS", "REJECT_REASONS", "DecisionLog", "Session", "label", "open_session",
           "read_log"]
