"""Settling an `unknown` row by hand (`seedance-pipeline resolve`).

A task id someone typed is checked with the API before it is attached: an attached task cannot
be taken back, and a mistyped one was polled into `failed` (the paid video never stored), an id
the API refuses kept `run` waiting for ever, and another prompt's task was stored as this
prompt's video.
"""

from __future__ import annotations

import time

from .ledger import Ledger, LedgerRow
from .seedance import (
    SAFE_TASK_ID,
    Client,
    InvalidRequestError,
    NotFoundError,
    SeedanceError,
    Task,
)
from .statuses import Status

UNCHANGED = "nothing was changed"
# The vendor's clock may be this far behind this host's (`created` against the claim's time).
CLOCK_SLACK_SECONDS = 600.0
# A 404 is asked about this many times, this far apart, before `resolve` believes it.
NOT_FOUND_TRIES = 4
NOT_FOUND_PAUSE_SECONDS = 3.0


def attach_task(
    ledger: Ledger, client: Client, partition: str, prompt_id: str, task_id: str
) -> None:
    """Attach `task_id` to the `unknown` row once the API shows it is a task for its request.

    Raises:
        LookupError: the id, the task or the row does not fit (the message says which and
            what to check); nothing was changed.
    """
    if not SAFE_TASK_ID.fullmatch(task_id):
        raise LookupError(
            f"{task_id!r} is not a task id (the dashboard shows them as "
            f"task-unified-1774857405-abc123): check it; {UNCHANGED}"
        )
    ledger.resolve_abandoned_claims(partition)  # a crashed run's claim is `unknown`: checked too
    row = next((r for r in ledger.rows(partition) if r.prompt_id == prompt_id), None)
    if row is not None and row.status == Status.UNKNOWN:  # else the ledger says what is wrong
        try:
            task = _asked(client, task_id)
        except NotFoundError:
            raise LookupError(
                f"the API answered 404 for task {task_id} {NOT_FOUND_TRIES} times: check the id "
                "on the EvoLink dashboard. A 404 can pass: if the dashboard lists the task, try "
                "again in a few minutes, and do not `--forget` the prompt (it would be sent and "
                "paid again); a task the API has forgotten, some time after it ended, cannot be "
                f"attached; {UNCHANGED}"
            ) from None
        except InvalidRequestError as exc:  # 400: the vendor's `invalid_task_id`
            raise LookupError(
                f"the API says {task_id!r} is not a task id ({exc}): check it; {UNCHANGED}"
            ) from None
        except SeedanceError as exc:
            raise LookupError(
                f"task {task_id} could not be checked with the API ({exc}); {UNCHANGED}"
            ) from None
        if problem := mismatch(row, task):
            raise LookupError(
                f"task {task_id} {problem}: it is not the task of {partition}/{prompt_id}; "
                f"check the id; {UNCHANGED}"
            )
    ledger.resolve(partition, prompt_id, task_id)


def _asked(client: Client, task_id: str) -> Task:
    """The API's answer on the task; a 404 is asked again, as polling believes one only when
    it repeats (a gateway's or a replica's can pass), and a user told the task is gone would
    `--forget` a prompt that was paid for."""
    for tried in range(1, NOT_FOUND_TRIES + 1):
        try:
            return client.get_task(task_id)
        except NotFoundError:
            if tried == NOT_FOUND_TRIES:
                raise
            time.sleep(NOT_FOUND_PAUSE_SECONDS)
    raise AssertionError("unreachable")


def mismatch(row: LedgerRow, task: Task) -> str | None:
    """How the task differs from the row's request, in what the API's answer tells: its model,
    its length, or a task made before the request was claimed (and so sent)."""
    model = row.request.get("model")
    if task.model and model and task.model != model:
        return f"is a {task.model} task, and the row asked for {model}"
    duration = row.request.get("duration")
    asked = isinstance(duration, int) and duration > 0
    if asked and task.video_duration and task.video_duration != duration:
        return f"is {task.video_duration} s long, and the row asked for {duration} s"
    if task.created and row.claimed_at and task.created < row.claimed_at - CLOCK_SLACK_SECONDS:
        return "was made before the row's request was sent"
    return None
