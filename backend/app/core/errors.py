"""Errors as values with codes: every failure a client sees is `{"error": {"code", "message"}}`."""

from typing import Any


class AppError(Exception):
    """An expected failure with a stable snake_case code and the HTTP status it maps to."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"


class InvalidCredentials(AppError):
    status_code = 401
    code = "invalid_credentials"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one JSON shape of every error response."""
    return {"error": {"code": code, "message": message}}


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors an endpoint can return."""
    return {e.status_code: {"description": e.code} for e in errors}
