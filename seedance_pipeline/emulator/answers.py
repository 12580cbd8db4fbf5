"""JSON answers both APIs share: the two error envelopes, expired links, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import JSONResponse

_ERRORS = {
    400: ("invalid_request", "invalid_request_error"),
    401: ("unauthorized", "authentication_error"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("model_access_denied", "invalid_request_error"),
    404: ("resource_not_found", "not_found_error"),
    405: ("method_not_allowed", "invalid_request_error"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
    500: ("internal_error", "api_error"),
    502: ("upstream_error", "api_error"),
    503: ("service_unavailable", "api_error"),
    504: ("gateway_timeout", "api_error"),
}
FILES_PREFIX = "/api/v1/files"  # and everything under it


def error(status: int, message: str, code: str | None = None, **headers: str) -> JSONResponse:
    """The generation API's `{"error": {code, message, type}}` answer."""
    default_code, kind = _ERRORS[status]
    body = {"error": {"code": code or default_code, "message": message, "type": kind}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def files_error(status: int, message: str, **headers: str) -> JSONResponse:
    """The files API's `{"success": false, "code", "msg"}` answer."""
    body = {"success": False, "code": status, "msg": message, "data": None}
    return JSONResponse(body, status_code=status, headers=headers or None)


def error_for(path: str, status: int, message: str, **headers: str) -> JSONResponse:
    """An error in the envelope of the API that `path` belongs to."""
    if path.startswith(FILES_PREFIX):
        return files_error(status, message, **headers)
    return error(status, message, **headers)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expired(since: float) -> JSONResponse:
    message = f"This link expired at {iso(since)}; links are valid for a limited time."
    return JSONResponse(
        {"error": {"code": "link_expired", "message": message, "type": "invalid_request_error"}},
        status_code=403,
    )
