"""Errors raised by the Seedance client.

SeedanceError                   `retryable` (marked *): a later try of the same call could succeed
├── TransportError *            no answer came (a create raising it never left)
├── OutcomeUnknownError         a create may have made a task (lost, 5xx, garbled): never resent
├── MalformedAnswerError *      a 2xx answer too large, not JSON, or not the documented shape
├── APIError                    the vendor answered with an HTTP error
│   ├── InvalidRequestError     400, 413
│   ├── AuthenticationError     401
│   ├── InsufficientQuotaError  402
│   ├── AccessDeniedError       403
│   ├── NotFoundError           404
│   ├── RateLimitError *        429
│   └── ServerError *           5xx
└── DownloadError               a result file could not be saved (e.g. an HTML page came instead)
    ├── UnsafeLinkError         not https on a public host, or too many redirects: never fetched
    ├── LinkExpiredError        403, 404 or 410 from the result host
    ├── DownloadTooLargeError   more than `max_bytes`
    └── DownloadTimeoutError *  the download's deadline passed
"""

from __future__ import annotations


class SeedanceError(Exception):
    """Base class of every error the client raises."""

    retryable = False


class TransportError(SeedanceError):
    """The request could not be sent or got no answer (a create raising it was never sent)."""

    retryable = True


class OutcomeUnknownError(SeedanceError):
    """A create request may have made a task (its answer was lost or unusable); never resent."""


class MalformedAnswerError(SeedanceError):
    """A success answer that is too large, not JSON, or not the shape the API documents."""

    retryable = True


class APIError(SeedanceError):
    """An HTTP error answer, with the vendor's `code`, `message` and `type`."""

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


class DownloadError(SeedanceError):
    """A result file could not be saved."""


class UnsafeLinkError(DownloadError):
    """A result link (or a redirect) leads off https on a public host; it is never fetched."""


class LinkExpiredError(DownloadError):
    """A result link answered 403, 404 or 410: it has expired (links live 24 hours)."""


class DownloadTooLargeError(DownloadError):
    """A result file is larger than the download's byte cap (SEEDANCE_MAX_VIDEO_BYTES)."""


class DownloadTimeoutError(DownloadError):
    """A download did not finish within its deadline (a stalled or trickling host)."""

    retryable = True


class CallCutOff(Exception):
    """A call given a deadline had not ended by it (a poll round's end): nothing was learned
    from it, so the question stands; not an answer, and not the vendor's error."""


class CallHalted(Exception):
    """The caller halted a call (`Client.create_task`'s `halt`) before its next try went out:
    that try was not sent."""


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
