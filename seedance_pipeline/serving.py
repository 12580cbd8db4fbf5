"""Running a uvicorn server on a background thread of this process (tests and demos)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


@contextlib.contextmanager
def in_thread(server: uvicorn.Server, name: str, **run: Any) -> Iterator[None]:
    """Runs `server` (with `server.run(**run)`) on a daemon thread until the block ends;
    enters the block once the server accepts connections.

    Raises:
        RuntimeError: the server stopped before it started (its log says why, e.g. the port
            is taken).
    """
    thread = threading.Thread(target=server.run, kwargs=run, name=name, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the {name} failed to start; see its log above")
            time.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
