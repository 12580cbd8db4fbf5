"""How close the clients hold to a key's rate limit, and how many calls it refuses.

Against the emulator at `--rate-limit 20`, one thread creates tasks through the blocking
client while 16 concurrent polls (a poll round's, on 16 threads) hit the tasks made so far, as
many polls as creates, both as fast as they are answered: together they ask far
more than the limit. Printed per pacing: calls answered, the share refused with 429, and the
rate of accepted calls against the limit.

Run: python benchmarks/pacing.py [--creates 1000] [--limit 20]
"""

from __future__ import annotations

import argparse
import collections
import logging
import tempfile
import threading
import time
from pathlib import Path

import httpx

from seedance_pipeline.defs.resources import POLL_RETRY, POLL_TIMEOUT
from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator
from seedance_pipeline.seedance import Client, SeedanceError, _client

BODY = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}
POLLS = 16


class _Counting:
    """Counts every answer's status."""

    def __init__(self):
        self.statuses: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()

    def note(self, response: httpx.Response) -> httpx.Response:
        with self.lock:
            self.statuses[response.status_code] += 1
        return response

    def transport(self) -> httpx.BaseTransport:
        counting = self

        class Transport(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                return counting.note(super().handle_request(request))

        return Transport()


class _NoPacing:
    """The clients before adaptive pacing: send at once, learn nothing (no setting does this)."""

    def take(self) -> float:
        return 0.0

    def answered(self, *args: object) -> None:
        pass


def _drive(url: str, creates: int, cap: float | None, counting: _Counting) -> tuple[int, int]:
    """`creates` creates, one at a time, while 16 workers poll the tasks made so far, as fast
    as they are answered, until as many polls were made; returns the calls that gave up."""
    # As `EvoLinkResource` builds the clients, with transports that count answers.
    common = {"base_url": url, "files_url": url, "max_requests_per_second": cap}
    task_ids: list[str] = []
    failed = collections.Counter()

    def create_all() -> None:
        with Client(DEFAULT_API_KEY, transport=counting.transport(), **common) as client:
            for _ in range(creates):
                try:
                    task_ids.append(client.create_task(BODY).id)
                except SeedanceError:
                    failed["create"] += 1

    def poll_all() -> None:
        polls = iter(range(creates))  # shared by the workers

        def worker(client: Client) -> None:
            for n in polls:
                while not task_ids:
                    time.sleep(0.01)
                try:
                    client.get_task(task_ids[n % len(task_ids)])
                except SeedanceError:
                    failed["poll"] += 1

        with Client(
            DEFAULT_API_KEY,
            timeout=POLL_TIMEOUT,
            retry=POLL_RETRY,
            transport=counting.transport(),
            **common,
        ) as client:
            workers = [threading.Thread(target=worker, args=(client,)) for _ in range(POLLS)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()

    creator = threading.Thread(target=create_all)
    creator.start()
    poll_all()
    creator.join()
    return failed["create"], failed["poll"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--limit", type=float, default=20.0)
    args = parser.parse_args()
    logging.getLogger("seedance_pipeline.seedance").setLevel(logging.ERROR)  # no retry lines
    tmp = Path(tempfile.mkdtemp(prefix="pacing-bench-"))
    print(
        f"{args.creates} creates and their polls ({POLLS} concurrent) against a "
        f"limit of {args.limit:g} requests/s"
    )
    print(f"{'pacing':<22}{'calls':>7}{'429':>6}{'429 share':>11}{'accepted/s':>12}{'seconds':>9}")
    modes = [("none (old behaviour)", None), ("adaptive (default)", None), ("cap 18", 18.0)]
    learned = _client._bucket
    for n, (name, cap) in enumerate(modes):
        _client._bucket = (lambda *lane: _NoPacing()) if n == 0 else learned
        # time_scale 100: no task ends (and renders a video) during the run; polls still count.
        config = EmulatorConfig(
            port=0,
            time_scale=100,
            rate_limit=args.limit,
            state_dir=tmp / f"emulator-{n}",
            credits=1e9,
        )
        counting = _Counting()
        with running_emulator(config) as url:  # a new port: a new base URL, nothing learned
            started = time.monotonic()
            create_failures, poll_failures = _drive(url, args.creates, cap, counting)
            seconds = time.monotonic() - started
        calls = sum(counting.statuses.values())
        refused = counting.statuses[429]
        gave_up = f"  gave up: {create_failures} creates, {poll_failures} polls"
        print(
            f"{name:<22}{calls:>7}{refused:>6}{refused / calls:>11.1%}"
            f"{(calls - refused) / seconds:>12.1f}{seconds:>9.1f}"
            + (gave_up if create_failures or poll_failures else "")
        )
    _client._bucket = learned


if __name__ == "__main__":
    main()
