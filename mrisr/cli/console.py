"""How the CLI writes: a live display for a person at a terminal, plain timestamped lines for a log file.

A cluster job's output is a file, read later (often with ``grep``): there a line is written per
event, each with its time, and nothing is ever cut. At a terminal, rich's live progress display is
used instead. Tables are drawn at their full width when the stream is not a terminal (rich would
otherwise assume 80 columns and cut ids and paths with an ellipsis).

Verbosity: ``--quiet`` leaves only error lines and the final interruption line; ``--verbose`` adds
the library's INFO log lines; ``--debug`` adds DEBUG lines and tracebacks.

Native libraries write to file descriptor 2 themselves: GDCM (under SimpleITK) prints its JPEG
decoder's chatter, such as "Unsupported JPEG data precision 12" for every 12-bit slice it then decodes
fine. :func:`native_stderr_aside` keeps that off the terminal while a command runs (not under
``--debug``); a failed decode still raises, and becomes the study's one ``error:`` line.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

#: Width of a console that does not write to a terminal: wide enough that no table is ever cut.
LOG_WIDTH = 100_000
QUIET, NORMAL, VERBOSE = -1, 0, 1
#: The most ``--threads`` accepted (torch takes a C int; far more threads than cores only thrash).
MAX_THREADS = 4096
#: The largest ``--seed`` (torch and NumPy take seeds in [0, 2**63)).
MAX_SEED = 2**63 - 1


class _Output:
    verbosity: int = NORMAL
    debug: bool = False


output = _Output()


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal."""
    s = stream if stream is not None else sys.stderr
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):  # closed, or a stream without isatty
        return False


def live() -> bool:
    """Whether a live progress display is wanted: stderr is a terminal, not ``--quiet``/``--debug``."""
    return is_terminal() and output.verbosity > QUIET and not output.debug


def make_console(*, stderr: bool = False) -> Console:
    """A rich console; when its stream is not a terminal, wide enough that nothing is cut and uncoloured."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if is_terminal(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=LOG_WIDTH, color_system=None, highlight=False)


def stamp() -> str:
    """The local time as ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def echo(text: str, *, err: bool = True) -> None:
    """Write ``text`` as one line (stderr by default): control characters in it, such as a newline in
    a file name, are written as escapes (:func:`mrisr.errors.printable`) so that the line, and the
    reason after the name, is never cut or split. Every error, warning and log line goes through here."""
    from mrisr.errors import printable

    typer.echo(printable(text), err=err)


def log_line(text: str) -> None:
    """One timestamped line on stderr (unless ``--quiet``), flushed at once for a log file."""
    if output.verbosity > QUIET:
        echo(f"{stamp()} {text}")
        sys.stderr.flush()


class OneLineFormatter(logging.Formatter):
    """Log records as one line each: control characters in the message escaped as by :func:`echo`
    (a traceback added by ``--debug`` keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        from mrisr.errors import printable

        return printable(super().formatMessage(record))


def available_cpus() -> int:
    """CPUs this process may use: ``SLURM_CPUS_PER_TASK`` in a SLURM job, else the affinity mask's size."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return None


@contextmanager
def native_stderr_aside(*, keep: bool = False) -> Iterator[None]:
    """Send what native libraries write to file descriptor 2 to ``/dev/null`` while the block runs,
    and Python's ``sys.stderr`` (every line mrisr prints, logging) to a duplicate of the real stderr,
    so that only mrisr's own lines show. ``keep``: change nothing (``--debug`` shows everything).

    The swap of descriptors is process-wide, so Python's writes must not go through descriptor 2:
    when ``sys.stderr`` is descriptor 2 it is replaced for the block by a stream on the duplicate
    (which stays open afterwards, for handlers that kept a reference to it); when ``sys.stderr`` is
    something else (a test's capture) it is left alone.
    """
    if keep:
        yield
        return
    try:
        real = os.dup(2)
        sink = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no descriptor 2 (a daemon), or none left: leave everything as it is
        yield
        return
    old = sys.stderr
    swapped = _fileno(old) == 2
    try:
        if swapped:
            old.flush()
            sys.stderr = io.TextIOWrapper(
                io.FileIO(real, "w", closefd=False),
                encoding=getattr(old, "encoding", None) or "utf-8",
                errors=getattr(old, "errors", None) or "backslashreplace",
                line_buffering=True,
                write_through=True,
            )
        os.dup2(sink, 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real, 2)
    finally:
        os.close(sink)
        if swapped:
            sys.stderr = old
        else:
            os.close(real)
