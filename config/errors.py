"""The project's own error types. Services raise them; the API maps them once to one JSON body."""


class DomainError(Exception):
    """A refused operation, with a stable machine-readable code and a message for people."""

    code = "invalid"
    status = 400

    def __init__(
        self, message: str, *, code: str | None = None, detail: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail  # per-field problems, when there are several
        if code is not None:
            self.code = code


class NotAllowed(DomainError):
    """The operation is valid in general but not from the current state."""

    code = "not_allowed"
    status = 409


class NotFound(DomainError):
    code = "not_found"
    status = 404
