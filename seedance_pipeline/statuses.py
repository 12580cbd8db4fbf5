"""The states a row of the pipeline can be in, from planning to a stored video."""

from __future__ import annotations

from enum import StrEnum

from .seedance import TaskStatus


class RequestStatus(StrEnum):
    """A planned row's verdict in the `generation_requests` table."""

    ACCEPTED = "accepted"  # a request body the vendor's rules allow
    REJECTED = "rejected"  # breaks a rule; never sent


class Status(StrEnum):
    """A prompt's state in the ledger and in the tables: the vendor's task statuses and ours."""

    REJECTED = RequestStatus.REJECTED.value  # refused by the vendor's rules before any request
    SUBMITTING = "submitting"  # claimed; the create request may be in flight
    PENDING = TaskStatus.PENDING.value
    PROCESSING = TaskStatus.PROCESSING.value
    COMPLETED = TaskStatus.COMPLETED.value
    FAILED = TaskStatus.FAILED.value
    CANCELLED = TaskStatus.CANCELLED.value
    EXPIRED = "expired"  # completed, but the result link died before the video was stored
    UNKNOWN = "unknown"  # the create answer was lost: never resubmitted silently
    DOWNLOAD_FAILED = "download_failed"  # completed and charged; no valid video stored yet


# The error code of a prompt not sent for a day because another day sent it: its task, video and
# charge are that day's.
SENT_ON_OTHER_DAY = "sent_on_other_day"

# The vendor is still working on these (unknown vendor statuses count as processing).
WAITING = frozenset({Status.PENDING, Status.PROCESSING})
# Charged, but no valid video stored: the check of the videos table reports each.
UNDELIVERED = frozenset({Status.EXPIRED, Status.DOWNLOAD_FAILED})
# The vendor bills these (a completed task whose video we lost was still delivered to us).
CHARGED = frozenset({Status.COMPLETED, *UNDELIVERED})
# No answer from the vendor can change these any more.
SETTLED = frozenset({*CHARGED, Status.FAILED, Status.CANCELLED, Status.UNKNOWN})
# Each a column of the cost report and a count in the videos asset's metadata.
COUNTED = (
    Status.COMPLETED,
    Status.FAILED,
    Status.CANCELLED,
    Status.REJECTED,
    Status.UNKNOWN,
    Status.EXPIRED,
    Status.DOWNLOAD_FAILED,
)
