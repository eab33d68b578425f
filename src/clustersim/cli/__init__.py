"""Command line (DESIGN.md §2): `clustersim run | validate | report | compare | capacity | plan`.

One module per concern: `entry` (main: exit codes, interrupts), `parser` (arguments),
`errors` (exit codes, one-line bad-input messages), `signals` (SIGTERM as Ctrl-C), `points`
(sweep points of a file), `progress` (stderr bars), `tables` (stdout tables), and one module
per command family: `run` + `run_results`, `validate`, `report` (report, compare),
`capacity`, `plan`.
"""

from clustersim.cli.entry import main

__all__ = ["main"]
