"""Starting the web server: uvicorn with the connection limits, the model loaded once."""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from facefold.predict import Predictor
from facefold.serve.app import create_app, require_server_packages
from facefold.serve.hosts import allowed_hosts_for, normal_host
from facefold.serve.limits import MAX_UPLOAD_BYTES, Limits

PILLOW_BLOCK_BYTES = 64 * 2**20  # see _big_pictures_in_big_blocks


def header_timeout_protocol(timeout: float) -> Any:
    """uvicorn's HTTP/1.1 protocol, closing connections that send no request for ``timeout`` s.

    uvicorn arms its keep-alive timer only after a response and stops it at
    the first byte received, so a client that connects and sends nothing (or
    a header a byte at a time) would hold its socket forever. Here a timer is
    armed when the connection opens and after every response; if no new
    request has started by then, the connection is closed. Returns "h11" when
    uvicorn's h11 protocol is not where this expects it (the server then runs
    without the timer).
    """
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:
        return "h11"

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            self.loop.call_later(timeout, self._expire, self.cycle)

        def _expire(self, cycle: Any) -> None:
            idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if idle and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000,
                limits: Limits | None = None) -> Any:
    """A ``uvicorn.Server`` for ``app`` with the connection limits of ``limits``."""
    import uvicorn

    limits = limits or Limits()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning",
        http=header_timeout_protocol(limits.header_timeout),
        limit_concurrency=limits.max_connections, timeout_keep_alive=5,
    )
    return uvicorn.Server(config)


def _big_pictures_in_big_blocks() -> None:
    """Have Pillow allocate pictures in blocks of 64 MB rather than 16 MB, in this process.

    malloc maps blocks that large straight from the system and gives them back
    when freed; 16 MB blocks stay in the heap of whichever thread decoded them,
    so bursts of large uploads leave far more memory resident with them
    (``python -m facefold.serve_bench`` measures it: docs/deployment.md, "serve").
    Small pictures are unaffected: a block is never larger than the picture.
    """
    from PIL import Image

    set_block_size = getattr(Image.core, "set_block_size", None)
    if set_block_size is not None:
        set_block_size(PILLOW_BLOCK_BYTES)


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = MAX_UPLOAD_BYTES / 2**20, limits: Limits | None = None,
          allowed_hosts: Collection[str] = (), allow_enroll: bool = False) -> None:
    """Load ``model`` once and serve the page and API until interrupted.

    Browsers may reach it by ``host``, the localhost names and ``allowed_hosts``
    (for a wildcard ``host``, also by this machine's names and IP addresses). ``ValueError``
    for a ``port`` outside 1-65535 or an upload limit that is not a positive number of MB.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1-65535, got {port}")
    if not 0 < max_upload_mb < math.inf:  # NaN fails both comparisons too
        raise ValueError(f"the upload limit must be a positive number of MB, got {max_upload_mb}")
    require_server_packages()
    _big_pictures_in_big_blocks()
    predictor = Predictor.load(model)
    names, ip_literals = allowed_hosts_for(host)
    app = create_app(predictor, int(max_upload_mb * 2**20), limits=limits,
                     allowed_hosts=names | {normal_host(n) for n in allowed_hosts},
                     ip_literals=ip_literals, allow_enroll=allow_enroll)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"facefold: serving on {host}: other machines can reach this page")
    print(f"facefold: {len(predictor.labels)} people; open http://{host}:{port}/")
    make_server(app, host, port, limits).run()

