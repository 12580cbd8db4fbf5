"""Following a day's tasks while they run: polls, and each video stored as soon as its task
completes, so downloads hide under the rate-limited waiting instead of adding to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .callbacks import awaits_callback
from .ledger import Ledger, LedgerRow
from .polling import poll_round
from .statuses import WAITING, Status
from .storage import VideoStore
from .videos import DOWNLOAD_WORKERS, max_video_bytes, needs_download, store_video


def follow_day(
    partition: str,
    ledger: Ledger,
    evolink,
    store: VideoStore,
    submitting: threading.Event,
    progress: Callable[[list[LedgerRow]], None] = lambda rows: None,
) -> None:
    """Poll the day's tasks and store their videos until submission is over (`submitting`
    cleared) and no task runs, no claim is open, no download is under way and no callback
    that could settle an `unknown` row is still to come.

    A prompt another run is submitting right now counts as running: its answer comes soon, or
    its process died and the claim becomes `unknown`.

    Raises:
        PollingRefused: the API refused the key while polling.
    """
    cap = max_video_bytes()
    with evolink.client() as client, ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        downloads: dict[str, Future] = {}
        while True:
            ledger.resolve_abandoned_claims(partition)
            rows = ledger.rows(partition)
            now = time.time()
            for row in rows:
                if row.prompt_id not in downloads and needs_download(row, now):
                    downloads[row.prompt_id] = pool.submit(
                        store_video, row, client, store, ledger, cap
                    )
            for prompt_id, job in list(downloads.items()):
                if job.done():
                    job.result()  # an unexpected error surfaces here
                    del downloads[prompt_id]
            progress(rows)
            claims = any(r.status == Status.SUBMITTING for r in rows)
            running = any(r.status in WAITING for r in rows)
            # An `unknown` row whose callback may still come: the receiver settles it.
            callbacks = any(awaits_callback(r, now) for r in rows)
            if not (submitting.is_set() or claims or running or downloads or callbacks):
                return
            due = ledger.next_poll_at(partition) or now + 5.0
            if claims or downloads or submitting.is_set():
                due = min(due, now + 0.5)
            elif any(r.callback_token_sha256 for r in rows):
                due = min(due, now + 1.0)  # callbacks settle rows in the receiver's process
            time.sleep(min(5.0, max(0.0, due - time.time())))
            if running:
                poll_round(
                    ledger,
                    evolink.async_client,
                    max_requests_per_second=evolink.max_requests_per_second,
                )
