"""The Seedance 2.0 layer: the vendor's rules, pricing, and an httpx client for EvoLink."""

from ._client import DEFAULT_BASE_URL, DEFAULT_FILES_URL, AsyncClient, Client, RetryPolicy
from ._exceptions import (
    AccessDeniedError,
    APIError,
    AuthenticationError,
    InsufficientQuotaError,
    InvalidRequestError,
    LinkExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitError,
    SeedanceError,
    ServerError,
    TaskFailedError,
    TransportError,
)
from ._models import TERMINAL_STATUSES, Download, GenerationRequest, Task, UploadedFile
from ._pricing import PriceTable
from ._rules import (
    MEDIA_LIMITS,
    MODELS,
    PIXELS,
    MediaFacts,
    Violation,
    output_pixels,
    validate_request,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FILES_URL",
    "MEDIA_LIMITS",
    "MODELS",
    "PIXELS",
    "TERMINAL_STATUSES",
    "APIError",
    "AccessDeniedError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Download",
    "GenerationRequest",
    "InsufficientQuotaError",
    "InvalidRequestError",
    "LinkExpiredError",
    "MediaFacts",
    "NotFoundError",
    "OutcomeUnknownError",
    "PriceTable",
    "RateLimitError",
    "RetryPolicy",
    "SeedanceError",
    "ServerError",
    "Task",
    "TaskFailedError",
    "TransportError",
    "UploadedFile",
    "Violation",
    "output_pixels",
    "validate_request",
]
