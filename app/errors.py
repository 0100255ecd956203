"""Domain errors: what went wrong, as a stable code and a sentence a user can act on.

The stages (decode, predict, encode), the batcher, admission and the model registry raise these
and know nothing of HTTP; `app.responses` maps each kind to its status code at the edge.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base: `code` is stable and machine-readable, `message` says what to do about it;
    `retry_after` (seconds) is set when trying again later may succeed."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


class InvalidInput(ServingError):
    """The request or upload is malformed (empty, corrupt, not an image)."""


class Unauthorized(ServingError):
    """The request lacks the key its route requires."""


class NotFound(ServingError):
    """No such model, version or resource."""


class Conflict(ServingError):
    """The request collides with work in progress or a configured limit (model loads)."""


class TooLarge(ServingError):
    """Over a size limit: bytes, pixels, side, files or a budget."""


class UnsupportedFormat(ServingError):
    """An image format we know and refuse."""


class ClientGone(ServingError):
    """The client closed the connection before its answer was ready."""


class Failed(ServingError):
    """A server fault that is not the client's doing; it has been logged."""


class Unavailable(ServingError):
    """Not now: warming up, loading, at capacity or shutting down."""


class TimedOut(ServingError):
    """The work did not finish within the request's deadline."""


class LoadFailed(ServingError):
    """A model or version could not be loaded; the message names the file and the reason."""


def not_ready(state: str) -> Unavailable:
    """The server as a whole cannot take work yet (or any more): warming up, shutting down."""
    return Unavailable("not_ready", f"the service is {state}; retry shortly", retry_after=1)


def model_not_ready(name: str, state: str, retry: bool = True) -> Unavailable:
    """A model exists but has no version that can serve (loading, unloaded, failed)."""
    return Unavailable("model_not_ready", f"model '{name}' is {state}",
                       retry_after=1 if retry else None)


def queue_full(max_queue: int) -> Unavailable:
    return Unavailable("queue_full", f"the server is at capacity ({max_queue} images queued); "
                                     "retry after the Retry-After delay", retry_after=1)
