"""Failures the CLI reports, each with the exit status a script can branch on."""

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_ACCESS = 3
EXIT_NOT_FOUND = 4
EXIT_VERIFICATION = 5
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """Something went wrong; `message` is for people, `exit_code` for scripts."""

    exit_code = EXIT_OTHER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    exit_code = EXIT_USAGE


class AccessError(CliError):
    """401/403: no token, a bad token, or no access to a gated or proprietary artifact."""

    exit_code = EXIT_ACCESS


class NotFoundError(CliError):
    exit_code = EXIT_NOT_FOUND


class VerificationError(CliError):
    """Bytes or a signature that do not match what was signed: never kept as a good file."""

    exit_code = EXIT_VERIFICATION
