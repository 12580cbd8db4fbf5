"""Submitting accepted requests exactly once, through the ledger."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .ledger import Ledger
from .polling import first_poll_at
from .seedance import (
    AccessDeniedError,
    AuthenticationError,
    Client,
    InsufficientQuotaError,
    InvalidRequestError,
    OutcomeUnknownError,
    SeedanceError,
)

log = logging.getLogger(__name__)


class SubmissionStopped(RuntimeError):
    """Submission cannot go on (bad key, no credits); the rest stays unsubmitted."""


@dataclass
class SubmitSummary:
    submitted: int = 0
    already_in_ledger: int = 0
    refused: int = 0
    unknown: int = 0
    not_sent: list[str] = field(default_factory=list)
    credits_reserved: float = 0.0


def submit_all(
    ledger: Ledger,
    client: Client,
    partition: str,
    accepted: Iterable[tuple[str, dict[str, Any], float | None]],
) -> SubmitSummary:
    """Submit each (prompt_id, body, estimate) not yet in the ledger.

    Raises:
        SubmissionStopped: the key was refused (401) or credits ran out (402); what was
            submitted before stays recorded and the rest can be submitted by a later run.
    """
    summary = SubmitSummary()
    ledger.resolve_abandoned_claims(partition)
    for prompt_id, body, estimate in accepted:
        if not ledger.claim(partition, prompt_id, body, estimate):
            summary.already_in_ledger += 1
            continue
        try:
            task = client.create_task(body)
        except OutcomeUnknownError as exc:
            ledger.record_outcome_unknown(partition, prompt_id, str(exc))
            summary.unknown += 1
        except (InvalidRequestError, AccessDeniedError) as exc:
            ledger.record_refused(partition, prompt_id, exc.code, exc.message)
            summary.refused += 1
        except (AuthenticationError, InsufficientQuotaError) as exc:
            ledger.release(partition, prompt_id)
            raise SubmissionStopped(
                f"{exc} — submission stopped after {summary.submitted} new task(s); "
                + (
                    "check EVOLINK_API_KEY"
                    if isinstance(exc, AuthenticationError)
                    else "top up the EvoLink account"
                )
                + ", then materialise the partition again to submit the rest"
            ) from None
        except SeedanceError as exc:  # retries exhausted; the answers proved no task was made
            ledger.release(partition, prompt_id)
            summary.not_sent.append(prompt_id)
            log.warning("%s: not submitted (%s); a later run will try again", prompt_id, exc)
        except BaseException:
            # Anything else (including a kill signal turned exception) leaves the claim; a
            # later run decides from the owner's liveness.
            raise
        else:
            ledger.record_submitted(
                partition, prompt_id, task, first_poll_at(body, task, time.time())
            )
            summary.submitted += 1
            summary.credits_reserved += task.credits_reserved or 0.0
    return summary
