"""``facefold label``: open a labeling session on PHOTOS and FACES, then serve its page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from facefold.label.session import Namer, Session
from facefold.label.store import STATE_DIR, add_photos, open_store
from facefold.log import Log


def open_session(photos: str | Path, out: str | Path, model: str | Path | None = None,
                 size: int = 112, min_score: float = 0.9, cache_dir: str | Path | None = None,
                 log: Log = print) -> Session:
    """A session labeling the faces of the photos under ``photos`` into ``out`` (FACES).

    New photos are found, cropped and embedded (cached in ``out/.facefold-label``); the
    decisions log there is replayed. ``model`` (a model folder) proposes names too.
    ``FileNotFoundError`` / ``ValueError`` for folders that cannot be used.
    """
    photos, out = Path(photos).resolve(), Path(out).resolve()
    if not photos.is_dir():
        raise FileNotFoundError(f"photo folder {photos} does not exist")
    if out == photos or out in photos.parents:
        raise ValueError(f"FACES ({out}) must not be PHOTOS or hold it: its person folders "
                         "would be taken for photos")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"FACES {out} exists and is not a folder")
    store = open_store(out / STATE_DIR, size)
    photo_ids = add_photos(store, photos, exclude=out, min_score=min_score,
                           cache_dir=cache_dir, log=log)
    namer = model_namer(model) if model is not None else None
    session = Session(out, store, store.faces_of(photo_ids), namer)
    log(f"{len(session.pool)} faces in {len(photo_ids)} photos; {len(session.state.person)} "
        f"named, {len(session.state.rejected)} rejected, {len(session.state.groups)} groups "
        f"to label; decisions in {session.log.path}")
    return session


def model_namer(model: str | Path) -> Namer:
    """Names from a model folder: each crop's name above the model's calibrated threshold."""
    from PIL import Image

    from facefold.predict import Predictor

    predictor = Predictor.load(model)

    def name(crops: Sequence[Path]) -> list[tuple[str | None, float]]:
        images = []
        for path in crops:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        found = predictor.recognize(images, top_k=1)
        return [(r.name if r.known else None, float(r.score if r.score is not None
                                                    else r.top[0][1])) for r in found]

    return name


def label(photos: str | Path, out: str | Path, model: str | Path | None = None,
          host: str = "127.0.0.1", port: int = 8000, size: int = 112,
          log: Log = print) -> None:
    """Open the session (:func:`open_session`) and serve its page until interrupted."""
    from facefold.label.app import create_label_app
    from facefold.serve.app import require_server_packages
    from facefold.serve.hosts import allowed_hosts_for
    from facefold.serve.server import make_server

    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1-65535, got {port}")
    require_server_packages()
    session = open_session(photos, out, model, size=size, log=log)
    names, ip_literals = allowed_hosts_for(host)
    app = create_label_app(session, names, ip_literals)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"facefold: labeling on {host}: other machines can reach this page")
    log(f"facefold: open http://{host}:{port}/ (every decision is saved at once; "
        "Ctrl+C ends)")
    make_server(app, host, port).run()
