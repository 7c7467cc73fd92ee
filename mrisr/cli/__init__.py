"""The ``mrisr`` command line: a thin Typer layer over the library.

Each command lives in its own module under :mod:`mrisr.cli` and only parses options and calls the
library; heavy packages (torch, MONAI, SimpleITK) are imported inside the commands so that
``mrisr --help`` answers at once.

Exit codes: 0 all studies fine; 1 some studies failed (each recorded in a ``failed`` sidecar; the
others were processed); 2 usage error (bad options, checkpoint or output folder: nothing was done);
3 interrupted by SIGTERM/SIGINT (a preemption) after the current study was finished or abandoned;
4 some studies were not processed because another process holds their lock (no sidecar: a rerun does
them; workflow managers must not take them as done, as they may take 1).
The most urgent code wins: 3, then 4, then 1.

The global options ``--debug``, ``--quiet`` and ``--verbose`` may also be given after the command
(``mrisr enhance ... --debug``); ``-h`` is ``--help`` everywhere. When stdout is not a terminal, help
is plain text (nothing cut at 80 columns); see :mod:`mrisr.cli.console` for the other output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import typer

from mrisr import __version__

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 3
EXIT_LOCKED = 4

app = typer.Typer(
    name="mrisr",
    help="Super-resolution of MRI studies (NIfTI and DICOM) with SRCNN-family networks (ESPCN by default).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


class _State:
    debug: bool = False
    argv: tuple[str, ...] | None = None  # the arguments main() ran with (recorded as provenance)


state = _State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mrisr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only error lines (no progress, no summary)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also the library's informational log lines."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Super-resolution of MRI studies (NIfTI and DICOM) with SRCNN-family networks (ESPCN by default)."""
    from mrisr.cli.console import NORMAL, QUIET, VERBOSE, OneLineFormatter, output

    if quiet and (verbose or debug):
        raise fail("--quiet cannot be combined with --verbose or --debug")
    state.debug = output.debug = debug
    output.verbosity = QUIET if quiet else VERBOSE if verbose else NORMAL
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: once, and not over a host's (pytest's) handlers
        handler = logging.StreamHandler()
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    logging.getLogger().setLevel(level)  # also when called again in one process (tests)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    from mrisr.cli.console import echo

    echo(f"error: {message}")
    return typer.Exit(code)


def _register() -> None:
    from mrisr.cli import (  # noqa: F401
        demo,
        enhance,
        info,
        report,
        train,
    )


_register()


#: Options of the root command that are accepted after the command too.
GLOBAL_FLAGS = frozenset({"--debug", "--quiet", "-q", "--verbose", "-v"})


def hoist_global_flags(args: Sequence[str]) -> list[str]:
    """Move the global flags given after the command in front of it (up to a ``--``)."""
    argv = list(args)
    cmd = next((k for k, a in enumerate(argv) if not a.startswith("-")), None)
    if cmd is None:
        return argv
    end = argv.index("--") if "--" in argv[cmd:] else len(argv)
    moved = [a for a in argv[cmd + 1 : end] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[cmd + 1 : end] if a not in GLOBAL_FLAGS]
    return [*argv[:cmd], *moved, argv[cmd], *rest, *argv[end:]]


def main(args: Sequence[str] | None = None) -> int:
    """Run the CLI with ``args`` (default ``sys.argv[1:]``) and return the exit code."""
    from mrisr.cli.console import is_terminal, native_stderr_aside

    # Help and usage errors as plain text when not at a terminal: rich would cut them at 80 columns.
    app.rich_markup_mode = "rich" if is_terminal(sys.stdout) else None
    argv = hoist_global_flags(sys.argv[1:] if args is None else args)
    state.argv = tuple(sys.argv[1:] if args is None else args)
    try:
        with native_stderr_aside(keep="--debug" in argv[: argv.index("--") if "--" in argv else len(argv)]):
            app(args=argv, prog_name="mrisr", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return int(code) if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
