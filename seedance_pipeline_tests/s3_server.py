"""moto's S3 server, run as a real process for the tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from .fault_support import free_port


@contextlib.contextmanager
def running_moto(log: Path, **env: str) -> Iterator[str]:
    """moto's S3 server as a real process on loopback (`moto_server`); its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1"]
            + ["-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, f"moto_server exited: {log.read_text()}"
                assert time.monotonic() < deadline, "moto_server did not start in 30 s"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
