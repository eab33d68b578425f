"""The package's shape (docs/architecture.md): import directions, no cycles, module sizes.

Every module under src/clustersim is parsed with `ast`; every import counts, at module level,
inside functions and under `if TYPE_CHECKING:` alike.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "clustersim"

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250

# Modules being split on other branches (issue 13): exempt from the size limits until they
# merge; each entry must still exist and still be over a limit (then drop it from the set).
PENDING_SPLIT: frozenset[str] = frozenset()

# The top-level packages (and modules) each one may import; `clustersim` is the root
# package's __init__ (__version__). A back-arrow is an import not allowed here.
_SIM_BASE = frozenset(
    {ROOT, "collector", "config", "catalog", "topology", "model", "workload", "metrics", "faults"}
)
_SIMULATION = frozenset({"network", "serving", "moe", "deployment", "disagg", "sim"})
_BELOW_APPS = _SIM_BASE | _SIMULATION | {"results"}
MAY_IMPORT: dict[str, frozenset[str]] = {
    ROOT: frozenset(),
    "collector": frozenset(),
    "config": frozenset({ROOT}),
    "catalog": frozenset({ROOT, "config"}),
    "workload": frozenset({ROOT, "config"}),
    "topology": frozenset({ROOT, "config", "catalog"}),
    "model": frozenset({ROOT, "config", "catalog"}),
    "metrics": frozenset({ROOT, "collector", "config", "workload"}),
    "faults": frozenset({ROOT, "config", "catalog", "topology"}),
    "network": frozenset({ROOT, "config", "catalog", "topology"}),
    "serving": _SIM_BASE | {"network"},
    "moe": _SIM_BASE | {"network", "serving"},
    "deployment": _SIM_BASE | {"network", "serving", "moe"},
    "disagg": _SIM_BASE | {"network", "serving", "moe", "deployment"},
    "sim": _SIM_BASE | _SIMULATION - {"sim"},
    "results": _SIM_BASE,
    "jobs": frozenset({ROOT, "config"}),
    "runner": _BELOW_APPS | {"jobs"},
    "planner": _BELOW_APPS | {"jobs", "runner"},
    "capacity": _BELOW_APPS | {"jobs", "runner", "planner"},
    "cli": _BELOW_APPS | {"jobs", "runner", "planner", "capacity"},
    "__main__": frozenset({"cli"}),
}

# Back-arrows that exist today between modules with no cycle between them, tolerated until
# they are moved: (importing top-level package, imported module).
TOLERATED = frozenset(
    {
        ("config", "clustersim.workload.traces"),  # a trace file is read (checked) at load
    }
)


# ------------------------------------------------------------------ the parsed tree


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Module name → file, for every module under src/clustersim."""
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), filename=str(modules()[name]))


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def imported_modules(name: str) -> set[str]:
    """The clustersim modules `name` imports anywhere in its body (a `from package import
    submodule` counts as importing the submodule)."""
    found: set[str] = set()
    known = modules()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if _is_package(name) else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            if base.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def top_level(name: str) -> str:
    """`clustersim.serving.scheduler` → `serving`; `clustersim.cli` → `cli`."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def import_edges() -> Iterator[tuple[str, str]]:
    for name in modules():
        for target in sorted(imported_modules(name)):
            yield name, target


# ------------------------------------------------------------------ import direction


def test_every_top_level_package_has_a_row() -> None:
    assert {top_level(m) for m in modules()} == set(MAY_IMPORT)


def test_the_allowed_table_is_one_directional() -> None:
    """No cycle among the allowed arrows themselves: a row that lets a lower package import a
    higher one fails here, not only when the import appears."""
    done: set[str] = set()

    def visit(pkg: str, path: tuple[str, ...]) -> None:
        assert pkg not in path, f"cycle in MAY_IMPORT: {' → '.join((*path, pkg))}"
        if pkg in done:
            return
        for dep in MAY_IMPORT[pkg]:
            visit(dep, (*path, pkg))
        done.add(pkg)

    for pkg in MAY_IMPORT:
        visit(pkg, ())


def test_no_import_runs_against_the_allowed_direction() -> None:
    bad = [
        f"{src} imports {dst}"
        for src, dst in import_edges()
        if top_level(dst) != top_level(src)
        and top_level(dst) not in MAY_IMPORT[top_level(src)]
        and (top_level(src), dst) not in TOLERATED
    ]
    assert not bad, "imports against the direction of docs/architecture.md:\n" + "\n".join(bad)


def test_tolerated_back_arrows_still_exist() -> None:
    """Keeps TOLERATED exact: a back-arrow that has been removed leaves the list."""
    edges = {(top_level(src), dst) for src, dst in import_edges()}
    assert not TOLERATED - edges, f"no longer imported, drop from TOLERATED: {TOLERATED - edges}"


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("network", "serving"),
        ("network", "moe"),
        ("serving", "moe"),
        ("serving", "disagg"),
        ("moe", "disagg"),
        ("disagg", "sim"),
        ("sim", "planner"),
        ("sim", "results"),
        ("serving", "planner"),
        ("metrics", "results"),
        ("model", "sim"),
        ("config", "sim"),
    ],
)
def test_examples_of_forbidden_arrows(lower: str, higher: str) -> None:
    assert higher not in MAY_IMPORT[lower]


# ------------------------------------------------------------------ cycles


def test_no_import_cycles_between_modules() -> None:
    graph = {name: sorted(imported_modules(name) & modules().keys()) for name in modules()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in graph[name]:
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name)


# ------------------------------------------------------------------ sizes


def _relative(name: str) -> str:
    return modules()[name].relative_to(SRC / ROOT).as_posix()


def _oversized(name: str) -> list[str]:
    path = modules()[name]
    lines = len(path.read_text().splitlines())
    out = [f"{_relative(name)}: {lines} lines"] if lines > MAX_MODULE_LINES else []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            size = node.end_lineno - node.lineno + 1
            if size > MAX_CLASS_LINES:
                out.append(f"{_relative(name)}: class {node.name} {size} lines")
    return out


def test_modules_and_classes_stay_small() -> None:
    over = [
        line
        for name in modules()
        if _relative(name) not in PENDING_SPLIT
        for line in _oversized(name)
    ]
    assert not over, (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_CLASS_LINES} per class:\n"
        + "\n".join(over)
    )


def test_pending_splits_are_still_pending() -> None:
    """Keeps PENDING_SPLIT exact: a split module leaves the set."""
    by_path = {_relative(name): name for name in modules()}
    missing = sorted(PENDING_SPLIT - by_path.keys())
    assert not missing, f"no such module, drop from PENDING_SPLIT: {missing}"
    done = sorted(p for p in PENDING_SPLIT if not _oversized(by_path[p]))
    assert not done, f"within the limits now, drop from PENDING_SPLIT: {done}"
