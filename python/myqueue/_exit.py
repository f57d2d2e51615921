"""The exit statuses of the ``myqueue`` command, and the error that carries one."""

from __future__ import annotations

OK = 0
FAILED = 1  # a request the broker refused, or a broker that cannot be reached
USAGE = 2  # bad arguments
INTERRUPTED = 130  # Ctrl-C where it is not the normal way to stop (128 + SIGINT, as shells do)


class CliError(Exception):
    """A failure the command reports as one line on stderr, with its exit status."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status
