"""HTML building blocks of every report: one self-contained page (inline CSS, no scripts),
escaped tables, embedded PNG figures, and the cell formats they use."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import yaml

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.k, th.k { text-align: left; font-family: monospace; }
tr.worse td.d { color: #b00020; } tr.better td.d { color: #1b7f3b; }
.verdict { padding: 0.8em 1em; border-radius: 6px; margin: 1em 0; }
.met { background: #e6f4ea; border: 1px solid #1b7f3b; }
.notmet { background: #fdecea; border: 1px solid #b00020; }
.unset { background: #f4f4f4; border: 1px solid #999; }
.verdict b.big { font-size: 1.2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell: None → '–', floats to 4 significant digits, ints with separators."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100.0 * value:.2f} %"


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]], key_cols: int = 1) -> str:
    """A table; the first `key_cols` columns left-aligned (cells are escaped)."""
    head = "".join(
        f'<th class="k">{esc(h)}</th>' if i < key_cols else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="k">{esc(c)}</td>' if i < key_cols else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img_html(png: bytes, alt: str, caption: str) -> str:
    """A figure with the PNG embedded as a data: URI."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document: inline CSS, no scripts, no external references."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mapping → [(dotted key path, leaf value)] in the mapping's order."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(flatten(value, path + "."))
        else:
            out.append((path, value))
    return out


def config_yaml(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
