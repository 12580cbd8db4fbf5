"""Put on PYTHONPATH by `day.py --by-thread` for the `seedance-pipeline run` it starts: every
thread's CPU time (`time.thread_time` as it ends), summed by the name of its pool (`submit`,
`poll`, `store`, `follow`, and `main`), written as JSON to $SEEDANCE_BENCH_THREAD_CPU when the
process exits. Threads still running then (daemons) are not counted."""

import atexit
import collections
import json
import os
import threading
import time

_OUT = os.environ.get("SEEDANCE_BENCH_THREAD_CPU")
if _OUT:
    _spent: collections.Counter = collections.Counter()
    _lock = threading.Lock()
    _run = threading.Thread.run

    def _timed_run(self: threading.Thread) -> None:
        try:
            _run(self)
        finally:
            pool = self.name.split("-")[0].rstrip("_0123456789")  # poll_3, follow-2026-11-20
            with _lock:
                _spent[pool] += time.thread_time()

    def _write() -> None:
        with _lock:
            _spent["main"] += time.thread_time()
            with open(_OUT, "w") as out:
                json.dump(_spent, out)

    threading.Thread.run = _timed_run
    atexit.register(_write)
