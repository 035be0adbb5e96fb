"""Run the review app with uvicorn on a socket bound here, so a taken port is a clear error.

Why Starlette + uvicorn: both are maintained (encode), small, pure Python, already on the
project's index, serve static files and async handlers that wait on the tile worker pool
without holding a thread per request; uvicorn is a production ASGI server (the standard
library's `http.server` is documented as not for production). Flask + waitress would do too,
but waitress gives every request a thread, and tile requests come in bursts of dozens.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

from wsi_prognosis.review.errors import PortInUseError, ReviewError

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def remote_warning(host: str) -> str | None:
    """The warning printed when the server is reachable from other machines (None for localhost)."""
    if host in LOCAL_HOSTS:
        return None
    return (f"host={host}: the review server is reachable from other machines and has no login; anyone who can "
            "reach it sees the scored slides. Use it only on a trusted network or in a container whose published "
            "port is bound to the host's localhost (docker run -p 127.0.0.1:8765:8765 ...).")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; `PortInUseError` naming the fix when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop still binds
        # no Nagle delay: a response goes out as headers + body writes, and the second one would otherwise
        # wait for the client's delayed ACK (~40 ms on Linux) on every tile; accepted sockets inherit this
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"review: port {port} on {host} is already in use (another review server, or another program). "
                f"Fix: pass a free port, e.g. `port={port + 1}`, or stop the program that holds it "
                f"(`ss -ltnp 'sport = :{port}'` shows which).") from exc
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
            raise ReviewError(f"review: cannot listen on host={host} ({exc}). Fix: host=127.0.0.1 (this machine "
                              "only) or host=0.0.0.0 (every interface, e.g. in a container).") from exc
        if exc.errno == errno.EACCES:
            raise ReviewError(f"review: no permission to listen on port {port} ({exc}). Fix: a port above 1023, "
                              "e.g. port=8765.") from exc
        raise ReviewError(f"review: cannot listen on {host}:{port} ({exc}).") from exc
    return sock


def serve(app: Any, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve `app` on the bound socket until Ctrl+C / SIGTERM."""
    import uvicorn

    import signal
    import threading

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", server_header=False)
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then raises the signal again with the previous
    # handler in place: for SIGTERM (docker stop) make that an exit, so the caller's cleanup (the tile
    # worker pool) runs instead of the default handler killing the process mid-way
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None

    def exit_on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    if main_thread:
        signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


class BackgroundServer:
    """The app served on a thread (tests, benchmarks, notebooks): `with BackgroundServer(app) as s: s.url`."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        import uvicorn

        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="review-server")

    def __enter__(self) -> BackgroundServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise ReviewError("review: the background server did not start within 30 s")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
