"""Errors that mean "bad input": the CLI prints them as one line, the service maps them to 4xx."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a flag, a file, a folder): reported as one line, never a traceback."""


class ImageError(UserError):
    """An image that cannot be used, with the reason; `status` is the HTTP status the service answers."""

    def __init__(self, reason: str, status: int = 400, code: str = "bad_image") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code


class CatalogUnavailable(RuntimeError):
    """The catalog engine failed after it was opened (a Milvus server went away, a timeout): not the caller's
    bad input. The service answers 503 with Retry-After; the CLI prints one line."""
