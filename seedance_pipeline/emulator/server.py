"""Running the emulator with uvicorn: blocking for the CLI, or in a thread for tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from ..serving import in_thread
from .app import create_app
from .config import EmulatorConfig

_GRACE_SECONDS = 1


def _bind(config: EmulatorConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(config: EmulatorConfig, access_log: bool) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="info" if access_log else "warning",
            access_log=access_log,
            timeout_graceful_shutdown=_GRACE_SECONDS,
        )
    )


def serve(config: EmulatorConfig) -> None:
    """Serve until interrupted (Ctrl-C ends it cleanly), printing the URL it listens on
    once it answers (a script may read that line and call at once)."""
    sock = _bind(config)
    server = _server(config, access_log=True)

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        where = f"{_url(sock)} (state in {config.state_dir})"
        print(f"EvoLink emulator listening on {where}", flush=True)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


@contextlib.contextmanager
def running_emulator(config: EmulatorConfig) -> Iterator[str]:
    """Run the emulator in a background thread; yields its base URL (port 0 picks one)."""
    sock = _bind(config)
    server = _server(config, access_log=False)
    try:
        with in_thread(server, "EvoLink emulator", sockets=[sock]):
            yield _url(sock)
    finally:
        sock.close()
