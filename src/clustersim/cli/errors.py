"""Exit codes and the one-line message of a bad input (DESIGN.md §2).

Exit codes: 0 success; 2 bad input (ConfigError, BuildError, PlacementError, an unreadable
input file): exactly one line `clustersim: error: <message>` on stderr, no traceback;
1 internal error (a bug): the traceback on stderr.
"""

from __future__ import annotations

import os
from pathlib import Path

PROG = "clustersim"
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
# file errors that mean the user named a wrong path (others, e.g. a full disk, stay internal)
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class BadInput(Exception):
    """A one-line user-facing error raised by the CLI itself (exit 2)."""


def bad_input_message(err: BaseException) -> str | None:
    """The one-line message for a bad-input error, or None for an internal error.

    The error types are imported here, when an error is being reported: every command imports
    this module, and most of them never load the planner, the report or the simulator."""
    from clustersim.capacity.probe import CapacityError
    from clustersim.config.errors import ConfigError
    from clustersim.jobs import ExecutorError
    from clustersim.planner.search import PlanError
    from clustersim.results.report import ReportError
    from clustersim.sim.engine import BuildError
    from clustersim.topology.placement import PlacementError

    if isinstance(
        err,
        BadInput
        | ConfigError
        | BuildError
        | PlacementError
        | ReportError
        | PlanError
        | ExecutorError
        | CapacityError,
    ):
        return one_line(str(err))
    if isinstance(err, _PATH_ERRORS):
        where = err.filename if err.filename is not None else ""
        return one_line(f"{where}: {err.strerror or err}")
    return None


def check_out_dir(out: Path) -> None:
    """`--out` must be a directory or not exist yet (an existing file, a dangling symlink or a
    symlink loop is a bad input)."""
    try:
        out.resolve(strict=False)
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise BadInput(f"{out}: --out is a symbolic link loop") from None
    if out.is_symlink() and not out.exists():
        raise BadInput(f"{out}: --out is a symbolic link to nothing ({os.readlink(out)})")
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: not a directory")


def one_line(text: str) -> str:
    return " ".join(text.split())
