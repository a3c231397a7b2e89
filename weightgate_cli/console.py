"""Lines for people: plain text on standard error or output, and rich's live progress bars only
when there is a terminal to draw them on. rich is imported only then: it cost every run ~40 ms of
start-up, most of it for a script or a pipe that never shows a bar."""

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress

# Control characters, but for tab and newline: a server's message printed as it came could move
# the cursor or rewrite the line above (rich removed them too).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def size_text(size: int) -> str:
    """'536.9 MB': decimal units with one decimal, as the progress bars count."""
    if size < 1000:
        return f"{size} bytes" if size != 1 else "1 byte"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95 or unit == "PB":
            return f"{value:,.1f} {unit}"
    raise AssertionError("unreachable")


class Console:
    def __init__(self, *, stderr: bool = False, quiet: bool = False) -> None:
        self.stderr = stderr
        self.quiet = quiet
        self._live: Progress | None = None
        self._lock = threading.Lock()  # whole lines from every thread

    @property
    def file(self) -> TextIO:
        # Looked up on every line: tests (and some embedders) swap sys.stdout/sys.stderr.
        return sys.stderr if self.stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        """A terminal, or FORCE_COLOR set (rich's own rule: bars drawn anyway)."""
        return bool(os.environ.get("FORCE_COLOR")) or self.file.isatty()

    def print(self, message: str) -> None:
        if self.quiet:
            return
        message = _CONTROL.sub("", message)
        live = self._live
        if live is not None:  # above the bars, which are redrawn below it
            live.console.print(message, highlight=False, markup=False, soft_wrap=True)
            return
        with self._lock:
            self.file.write(message + "\n")
            self.file.flush()

    @contextmanager
    def progress(self) -> "Iterator[Progress]":
        """Live bars: overall and per file (rich, imported here)."""
        from rich.console import Console as RichConsole
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bars = Progress(
            TextColumn("{task.description}", table_column=None),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=RichConsole(file=self.file, soft_wrap=True),
        )
        with bars:
            self._live = bars
            try:
                yield bars
            finally:
                self._live = None
