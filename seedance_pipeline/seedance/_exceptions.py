"""Errors raised by the Seedance client.

SeedanceError
├── TransportError            no answer came; nothing reached the vendor, safe to retry
├── OutcomeUnknownError       a create went out and its answer was lost: do not resubmit
├── APIError                  the vendor answered with an HTTP error
│   ├── InvalidRequestError   400, 413
│   ├── AuthenticationError   401
│   ├── InsufficientQuotaError 402
│   ├── AccessDeniedError     403
│   ├── NotFoundError         404
│   ├── RateLimitError        429
│   └── ServerError           5xx
├── LinkExpiredError          a result or file link no longer works
└── TaskFailedError           a task ended failed (carries the vendor's code and message)
"""

from __future__ import annotations


class SeedanceError(Exception):
    """Base class of every error the client raises."""


class TransportError(SeedanceError):
    """The request could not be sent or got no answer; it did not reach the vendor."""


class OutcomeUnknownError(SeedanceError):
    """A create request was sent but its answer was lost; a task may or may not exist."""


class APIError(SeedanceError):
    """An HTTP error answer, with the vendor's `code`, `message` and `type`."""

    retryable = False

    def __init__(self, status: int, code: str | None, message: str, type: str | None = None):
        self.status, self.code, self.message, self.type = status, code, message, type
        super().__init__(f"HTTP {status} {code or ''}: {message}".replace("  ", " "))


class InvalidRequestError(APIError):
    """400 or 413: the request breaks a rule; fix it before sending again."""


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or expired (check EVOLINK_API_KEY)."""


class InsufficientQuotaError(APIError):
    """402: not enough credits; top up the account."""


class AccessDeniedError(APIError):
    """403: the key has no access to this model."""


class NotFoundError(APIError):
    """404: unknown or expired task id."""


class RateLimitError(APIError):
    """429: too many requests; `retry_after` seconds when the vendor said."""

    retryable = True

    def __init__(self, *args, retry_after: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the vendor failed; retry later."""

    retryable = True


class LinkExpiredError(SeedanceError):
    """A result link answered 403, 404 or 410: it has expired (links live 24 hours)."""


class TaskFailedError(SeedanceError):
    """A task ended `failed` or `cancelled`."""

    def __init__(self, task_id: str, code: str | None, message: str | None):
        self.task_id, self.code, self.message = task_id, code, message
        super().__init__(f"task {task_id} failed: {code}: {message}")


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientQuotaError,
    403: AccessDeniedError,
    404: NotFoundError,
    413: InvalidRequestError,
    429: RateLimitError,
}


def error_class_for(status: int) -> type[APIError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)
