"""The console entry point: parse, run the command, map what it raises to an exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from clustersim.cli.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, PROG, bad_input_message
from clustersim.cli.parser import build_parser
from clustersim.cli.signals import Terminated, sigterm_as_interrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit)."""
    one_blas_thread()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse: usage error (2) or --help / --version (0)
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        with sigterm_as_interrupt():
            return command(args)
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        print(f"{PROG}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + int(signum)  # the shell convention: 130 for SIGINT, 143 for SIGTERM
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:
        message = bad_input_message(err)
        if message is None:
            traceback.print_exc()
            return EXIT_INTERNAL
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def one_blas_thread() -> None:
    """Ask OpenBLAS for one thread, unless the user chose a number or numpy is loaded already.

    The simulator does no linear algebra worth a thread pool, yet numpy's import starts
    OpenBLAS's: a thread a core, busy-waiting while they start (≈ 0.1 CPU-s a process on a
    2-core machine, in every run and every sweep worker, which inherit the setting)."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
