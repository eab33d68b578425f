"""Built-in YAML files shipped as package data, looked up by name (file stem)."""

from __future__ import annotations

from pathlib import Path


class BuiltinFiles:
    """A folder of `<name>.yaml` files inside the package."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.yaml"))

    def path(self, name: str) -> Path | None:
        """The file for `name`, or None when `name` is not a plain built-in name."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        candidate = self.folder / f"{name}.yaml"
        return candidate if candidate.is_file() else None
