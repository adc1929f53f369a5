"""The project's own exceptions: one base class, raised with full sentences.

HTTP-library and database errors are translated into these at the edges, so the
CLI can turn any expected failure into one line and an exit code.
"""


class InventoryError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(InventoryError):
    """A setting is missing or invalid; raised before anything starts."""


class APIError(InventoryError):
    """DigitalOcean answered with an error we could not recover from."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(APIError):
    """The token is missing, wrong, or lacks a scope (HTTP 401 or 403)."""


class NotFoundError(APIError):
    """The resource does not exist (HTTP 404)."""


class TransportError(APIError):
    """The request failed without an HTTP answer, after every retry."""


class IncompleteListingError(APIError):
    """A paginated listing could not be walked to its last page."""


class DeadlineExceeded(InventoryError):
    """A run's deadline passed, or its rate budget will not return in time."""


class QueryError(InventoryError):
    """A query cannot run as given: refused, malformed, or missing a value."""


class StoreError(InventoryError):
    """The store could not be reached or migrated."""


class AccountBusy(StoreError):
    """Another process is syncing the same account into the same store."""


def one_line(exc: BaseException) -> str:
    """The database's own message, on one line, without SQLAlchemy's boilerplate."""
    original = getattr(exc, "orig", None)  # a DBAPIError wraps the driver's
    if isinstance(original, BaseException):
        exc = original
    message = " ".join(str(exc).split())
    message = message.split(" [SQL:")[0].split(" (Background on this error")[0]
    if message:
        return message
    # A timeout (or a bare driver error) says nothing of itself.
    return "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
