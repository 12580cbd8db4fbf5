"""Real MP4 results rendered with ffmpeg, cached on disk by size, duration and audio."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from ..media import ffmpeg

FPS = 24
_CRF = "45"


class Renderer:
    """Renders each distinct (width, height, seconds, audio) once into `cache_dir`."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def video(self, width: int, height: int, seconds: int, audio: bool) -> Path:
        """Path of the cached MP4, rendering it first if needed (blocking)."""
        name = f"{width}x{height}-{seconds}s-{'audio' if audio else 'mute'}.mp4"
        path = self.cache_dir / name
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if not path.exists():
                self._render(path, width, height, seconds, audio)
        return path

    def _render(self, path: Path, width: int, height: int, seconds: int, audio: bool) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        cmd += ["-i", f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds}"]
        if audio:
            cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", _CRF, "-pix_fmt", "yuv420p"]
        if audio:
            cmd += ["-c:a", "aac", "-b:a", "32k"]
        cmd += ["-t", str(seconds), "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
