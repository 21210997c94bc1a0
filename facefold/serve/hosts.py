"""The ``Host`` and ``Origin`` check that stops DNS rebinding (403 for other names)."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

# The names a browser uses for this machine; a Host header naming anything else came
# through some other name (DNS rebinding) and is refused.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class HostCheck:
    """ASGI middleware refusing (403) requests whose ``Host`` or ``Origin`` is not allowed.

    ``Host`` must name one of ``names`` (or, with ``ip_literals``, be any IP
    address: a browser that sends one was pointed at that address, so it is
    no rebinding). A request without ``Host`` (HTTP/1.0 tools) passes: every
    browser sends one. ``Origin``, when sent, must be the request's own host
    or one of ``names``; ``null`` (a sandboxed or local file page) is refused.
    """

    def __init__(self, app: Any, names: Collection[str], ip_literals: bool = False) -> None:
        self.app = app
        self.names = frozenset(normal_host(n) for n in names)
        self.ip_literals = ip_literals

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":  # the app has no websocket routes
            problem = self.problem(dict(scope.get("headers") or []))
            if problem:
                body = json.dumps({"error": problem}).encode()
                await send({"type": "http.response.start", "status": 403, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def problem(self, headers: dict[bytes, bytes]) -> str | None:
        """Why these request headers are refused, or None."""
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self._allowed(_hostname(host)):
            return (f"Host {host!r} is not allowed: open the page through "
                    f"{', '.join(sorted(self.names))}")
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1"), host):
            return f"requests from the page at {origin.decode('latin-1')!r} are not allowed"
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        """Same origin as ``host``, or a page on one of the allowed names."""
        try:
            parts = urlsplit(origin)
            name = parts.hostname or ""
        except ValueError:  # "http://[oops", a port out of range …
            return False
        if host and parts.netloc.lower() == host.lower():
            return True
        return bool(name) and normal_host(name) in self.names

    def _allowed(self, name: str) -> bool:
        if name in self.names:
            return True
        if self.ip_literals:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False


def normal_host(name: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets: how names are compared."""
    return name.strip().lower().rstrip(".").strip("[]")


def _hostname(host: str) -> str:
    """The name in a ``Host`` header value: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    host = host.strip()
    if host.startswith("["):
        return normal_host(host[1:host.find("]")] if "]" in host else host)
    return normal_host(host.rsplit(":", 1)[0] if host.count(":") == 1 else host)


def allowed_hosts_for(host: str) -> tuple[frozenset[str], bool]:
    """``(names, ip_literals)`` that :class:`HostCheck` allows for a server bound to ``host``.

    The bound name and the localhost names; for a wildcard address (0.0.0.0,
    ::) also this machine's host names and any IP address.
    """
    names = set(LOCAL_HOSTS) | {normal_host(host)}
    wildcard = host in WILDCARD_HOSTS
    if wildcard:
        names |= {normal_host(socket.gethostname()), normal_host(socket.getfqdn())}
    return frozenset(names - {""}), wildcard


