"""The two ways the fake says no: ``ApiError``, an answer in Discord's error shape for the bot
under test, and ``FakeDiscordError``, for a test that asked for something Discord would not do.
"""

from __future__ import annotations

from ...errors import DiscordActorError
from .models import JSON


class ApiError(DiscordActorError):
    """An error answer in Discord's shape: ``{"message", "code", "errors"?}``."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {message} (code {code})")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> JSON:
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def unknown(what: str, code: int) -> ApiError:
    return ApiError(404, code, f"Unknown {what}")


def form_error(path: str, code: str, message: str) -> ApiError:
    """Discord's 50035 "Invalid Form Body" with the nested ``errors`` object."""
    errors: JSON = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


class FakeDiscordError(DiscordActorError):
    """A test asked the fake for something Discord would not do (e.g. an unsynced command)."""
