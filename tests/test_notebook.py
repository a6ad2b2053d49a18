"""docs/notebook.md runs as written: its python blocks, in order, in one fresh Python process
started outside the repository with a scrubbed environment (PATH, HOME and PAIRSTACK_STORE
only, so ``import ui.research`` must come from the installed package), against a generated
store; each block's printed output must equal the ```text block that follows it. (Its sweep
starts a Ray of its own in that process, as a user's notebook does.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cli_env import scrubbed_env
from history_kit import write_history

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "notebook.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
MARK = "=== pairstack notebook block {} ==="


def blocks(text: str) -> list[tuple[str, str | None]]:
    """(python code, the text block right after it or None), in order."""
    fenced = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    out = []
    for i, (lang, body) in enumerate(fenced):
        if lang == "python":
            after = fenced[i + 1] if i + 1 < len(fenced) else None
            out.append((body, after[1] if after and after[0] == "text" else None))
    return out


def test_blocks_are_found():
    found = blocks(DOC.read_text())
    assert len(found) >= 6 and all(expected is not None for _, expected in found)


def test_notebook_walkthrough_runs_and_prints_what_it_says(tmp_path):
    store = tmp_path / "store"
    write_history(store, days=10)
    found = blocks(DOC.read_text())
    script = "\n".join(
        f"print({MARK.format(i)!r}, flush=True)\n{code}" for i, (code, _) in enumerate(found)
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**scrubbed_env(), "PAIRSTACK_STORE": str(store)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = re.split(r"^=== pairstack notebook block \d+ ===\n", proc.stdout, flags=re.M)[1:]
    assert len(printed) == len(found)
    for (code, expected), got in zip(found, printed, strict=True):
        assert got.rstrip() == expected.rstrip(), f"block:\n{code}\nprinted:\n{got}"
    assert (work / "history.html").stat().st_size > 100_000
