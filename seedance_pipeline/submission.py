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
    resubmitted: int = 0
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
    max_attempts: int = 1,
) -> SubmitSummary:
    """Submit each (prompt_id, body, estimate) not yet in the ledger, then resubmit failed
    tasks with a transient vendor error while they have attempts left (`max_attempts`).

    Raises:
        SubmissionStopped: the key was refused (401) or credits ran out (402); what was
            submitted before stays recorded and the rest can be submitted by a later run.
    """
    summary = SubmitSummary()
    ledger.resolve_abandoned_claims(partition)
    for prompt_id, body, estimate in accepted:
        if ledger.claim(partition, prompt_id, body, estimate):
            _submit_claimed(ledger, client, partition, prompt_id, body, summary)
        else:
            summary.already_in_ledger += 1
    for row in ledger.resubmittable(partition, max_attempts):
        if ledger.claim_resubmission(partition, row.prompt_id, max_attempts):
            log.info(
                "%s: resubmitting (attempt %d) after %s",
                row.prompt_id,
                row.attempt + 1,
                row.error_code,
            )
            if _submit_claimed(ledger, client, partition, row.prompt_id, row.request, summary):
                summary.resubmitted += 1
    return summary


def _submit_claimed(
    ledger: Ledger,
    client: Client,
    partition: str,
    prompt_id: str,
    body: dict,
    summary: SubmitSummary,
) -> bool:
    """Send one claimed request and record what became of it; True if a task was made."""
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
        hint = (
            "check EVOLINK_API_KEY"
            if isinstance(exc, AuthenticationError)
            else "top up the EvoLink account"
        )
        raise SubmissionStopped(
            f"{exc} — submission stopped after {summary.submitted} new task(s); {hint}, "
            "then materialise the partition again to submit the rest"
        ) from None
    except SeedanceError as exc:  # retries exhausted; the answers proved no task was made
        ledger.release(partition, prompt_id)
        summary.not_sent.append(prompt_id)
        log.warning("%s: not submitted (%s); a later run will try again", prompt_id, exc)
    else:
        ledger.record_submitted(partition, prompt_id, task, first_poll_at(body, task, time.time()))
        summary.submitted += 1
        summary.credits_reserved += task.credits_reserved or 0.0
        return True
    return False
