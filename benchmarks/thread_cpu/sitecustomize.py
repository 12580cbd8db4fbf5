"""Put on PYTHONPATH by `day.py --by-thread` for the `seedance-pipeline run` it starts: every
thread's CPU time (`time.thread_time` as it ends), summed by the name of its pool (`submit`,
`poll`, `store`, `follow`, and `main`), written as JSON to $SEEDANCE_BENCH_THREAD_CPU when the
process exits. Threads still running then (daemons) are not counted. Also the CPU spent in
the garbage collector, by generation (`gc 0`..`gc 2`), already counted in the thread it ran on."""

import atexit
import collections
import gc
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

    _collecting: dict[int, float] = {}
    _collected: collections.Counter = collections.Counter()

    def _time_gc(phase: str, info: dict) -> None:
        """Runs with the GIL held, so no other thread collects meanwhile."""
        if phase == "start":
            _collecting[threading.get_ident()] = time.thread_time()
        else:
            started = _collecting.pop(threading.get_ident())
            _collected[f"gc {info['generation']}"] += time.thread_time() - started

    def _write() -> None:
        with _lock:
            _spent["main"] += time.thread_time()
            with open(_OUT, "w") as out:
                json.dump({"threads": _spent, "gc": _collected}, out)

    threading.Thread.run = _timed_run
    gc.callbacks.append(_time_gc)
    atexit.register(_write)
