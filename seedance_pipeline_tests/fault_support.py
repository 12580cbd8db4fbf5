"""Fault-injection helpers: generated catalogs, a restartable emulator that counts requests
and can kill a pipeline process at an exact moment, and a `seedance-pipeline` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import uvicorn

from seedance_pipeline.catalog import PROMPT_COLUMNS
from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig
from seedance_pipeline.emulator.app import create_app
from seedance_pipeline.serving import in_thread

from .pipeline_support import DAY

RATIOS = ("16:9", "16:9", "9:16", "1:1")
SUBJECTS = ("a red fox", "a paper boat", "a lighthouse", "a tea kettle", "a city tram")


def write_catalog(data_dir: Path, count: int, day: str = DAY) -> list[str]:
    """`count` text-to-video prompts for `day` (4 s, 480p) and an empty media catalog."""
    catalog = data_dir / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    ids = [f"p{i:03d}" for i in range(count)]
    with open(catalog / "prompts.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PROMPT_COLUMNS)
        for i, prompt_id in enumerate(ids):
            text = f"Shot {i}: {SUBJECTS[i % len(SUBJECTS)]} at dawn, slow dolly-in, soft light"
            audio = "true" if i % 3 else "false"
            writer.writerow(
                [prompt_id, day, "seedance-2.0-text-to-video", text, "", "", "", 4, "480p"]
                + [RATIOS[i % len(RATIOS)], audio, "false", "", "faults"]
            )
    (catalog / "media.csv").write_text("media_id,kind,uri\n", encoding="utf-8")
    return ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Stand-ins for `LocalTableStore.write_if`: the day's record of submissions not written.
def record_beaten(*args) -> bool:
    return False  # other workers always wrote it first


def record_unwritable(*args):
    raise PermissionError(13, "Permission denied", "data/warehouse")  # read-only, full


def request_kind(path: str) -> str:
    if path == "/v1/videos/generations":
        return "create"
    if path.startswith("/v1/tasks/"):
        return "poll"
    if path.startswith("/results/"):
        return "download"
    if path.startswith("/emulator/"):
        return "emulator"
    return "other"


# A hook decides what happens to the n-th request of a kind: None (serve it), or one of
# "kill_before" (kill the victim, never serve), "kill_after" (serve, kill the victim before
# the answer leaves), "kill_mid_body" (send half of the body, then kill the victim) or "hold"
# (serve it HOLD_SECONDS late, keeping the run in the state it had).
Hook = Callable[[str, int], str | None]
HOLD_SECONDS = 5.0


class Emulator:
    """The emulator in a thread on a fixed port: stoppable and restartable on the same state.

    Counts API requests by kind, and runs `hook` to kill `victim` (a process) at the moment
    a request arrives or its answer leaves.
    """

    def __init__(self, config: EmulatorConfig):
        if config.port == 0:
            config = replace(config, port=free_port())
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # 429 answers, by request kind
        self.hook: Hook | None = None
        self.victim: subprocess.Popen | None = None
        self._running = contextlib.ExitStack()  # the server, while it runs

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        app = create_app(self.config)
        server = uvicorn.Server(
            uvicorn.Config(
                self._wrap(app),
                host=self.config.host,
                port=self.config.port,
                log_level="critical",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        self._running.enter_context(in_thread(server, "fault emulator"))

    def stop(self) -> None:
        self._running.close()

    def restart(self, pause: float = 0.5) -> None:
        self.stop()
        time.sleep(pause)
        self.start()

    def api_requests(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != "emulator")

    def _kill_victim(self) -> None:
        if self.victim is not None and self.victim.poll() is None:
            os.kill(self.victim.pid, signal.SIGKILL)
            self.victim.wait(timeout=10)

    def _wrap(self, app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            kind = request_kind(scope["path"])
            self.counts[kind] += 1
            action = self.hook(kind, self.counts[kind]) if self.hook else None
            if action is None:

                async def counted(message):
                    if message["type"] == "http.response.start" and message["status"] == 429:
                        self.refused[kind] += 1
                    await send(message)

                return await app(scope, receive, counted)
            if action == "hold":
                await asyncio.sleep(HOLD_SECONDS)
                return await app(scope, receive, send)
            if action == "kill_before":
                self._kill_victim()
                return None
            if action == "kill_after":
                held = []

                async def hold(message):
                    held.append(message)

                await app(scope, receive, hold)
                self._kill_victim()
                return None
            assert action == "kill_mid_body", action

            async def cut(message):
                if message["type"] == "http.response.body":
                    body = message.get("body", b"")
                    await send({**message, "body": body[: len(body) // 2], "more_body": True})
                    await asyncio.sleep(0.3)  # the client has opened its `.part` file
                    self._kill_victim()
                    raise _Cut
                await send(message)

            with contextlib.suppress(_Cut):
                await app(scope, receive, cut)
            return None

        return wrapped


class _Cut(Exception):
    pass


# Imported by every Python process started with `kill_hook_env`: SIGKILLs the process itself
# at the moment it renames a temporary file whose path contains FAULT_KILL_ON_RENAME (the
# write is complete, the rename has not happened). Test-only; product code knows nothing.
_SITECUSTOMIZE = """\
import os, sys
_pattern = os.environ.get("FAULT_KILL_ON_RENAME")
if _pattern:
    import signal

    def _kill_on_rename(event, args):
        if event == "os.rename" and _pattern in str(args[0]):
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(_kill_on_rename)
"""


def pipeline_env(tmp_path: Path, url: str, data_dir: Path) -> dict[str, str]:
    hooks = tmp_path / "kill-hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "EVOLINK_"))}
    env.update(
        EVOLINK_BASE_URL=url,
        EVOLINK_FILES_URL=url,
        EVOLINK_API_KEY=DEFAULT_API_KEY,
        SEEDANCE_DATA_DIR=str(data_dir),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        PYTHONPATH=str(hooks),
    )
    return env


def cli() -> list[str]:
    return [str(Path(sys.executable).with_name("seedance-pipeline"))]


def start_run(env: dict[str, str], day: str = DAY, **extra_env: str) -> subprocess.Popen:
    """`run` in a process group of its own (see `kill_group`)."""
    return subprocess.Popen(
        [*cli(), "run", day],
        env={**env, **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """Kill what a killed `run` left: Dagster's log capture runs `tail -F` into its output with a
    watcher that ends it once `run` dies, but a kill between starting the two orphans the tail,
    which keeps the output pipe open (CI once waited 30 s for its end)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def temporaries(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob(".*") if p.name.endswith((".part", ".tmp"))]
