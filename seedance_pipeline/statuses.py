"""The states a row of the pipeline can be in, from planning to a stored video."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A prompt's state in the ledger and in the tables."""

    REJECTED = "rejected"  # refused by the vendor's rules before any request
    SUBMITTING = "submitting"  # claimed; the create request may be in flight
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # completed, but the result link died before the video was stored
    UNKNOWN = "unknown"  # the create answer was lost: never resubmitted silently
    DOWNLOAD_FAILED = "download_failed"  # completed and charged; no valid video stored yet


# The vendor is still working on these (unknown vendor statuses count as processing).
WAITING = frozenset({Status.PENDING, Status.PROCESSING})
# No answer from the vendor can change these any more.
SETTLED = frozenset(
    {
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
        Status.EXPIRED,
        Status.UNKNOWN,
        Status.DOWNLOAD_FAILED,
    }
)
# The vendor bills these (a completed task whose video we lost was still delivered to us).
CHARGED = frozenset({Status.COMPLETED, Status.EXPIRED, Status.DOWNLOAD_FAILED})
