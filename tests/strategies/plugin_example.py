"""The worked example of docs/strategies.md, taken from the page itself: its files (each code
block right after a line "`path`:") written into a directory, as a reader would copy them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
#: "`path`:", a blank line, then a fenced block: the file ``path`` of the example
_FILE_BLOCK = re.compile(r"^`(?P<path>[\w./-]+)`:\n\n```\w*\n(?P<body>.*?)^```$", re.M | re.S)
#: the modules the example package brings (dropped from sys.modules after an in-process test)
PACKAGE = "my_strategies"


def example_files() -> dict[str, str]:
    """path -> text of every file of the worked example."""
    return {m["path"]: m["body"] for m in _FILE_BLOCK.finditer(DOC.read_text())}


def write_example(root: Path) -> dict[str, str]:
    """Write the example's files under ``root``; returns them (path -> text)."""
    files = example_files()
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def write_dist_info(root: Path) -> Path:
    """What installing the example's pyproject.toml leaves on ``root`` for importlib.metadata:
    a ``*.dist-info`` with METADATA and the entry points of its
    ``[project.entry-points]`` tables (as pip writes them)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    dist = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return dist


def forget_example() -> None:
    """Drop the example's modules from this process (so the next test imports its own copy)."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
