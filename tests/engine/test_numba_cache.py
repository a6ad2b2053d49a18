"""The numba cache directory follows the kernel sources, so an inlined step never runs stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import numba

import engine

ROOT = Path(engine.__file__).resolve().parent.parent


def copy_sources(dst: Path) -> None:
    for folder in ("engine", "strategies"):
        shutil.copytree(ROOT / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__"))


def test_cache_dir_is_named_by_the_sources_hash():
    assert Path(numba.config.CACHE_DIR).name == engine.kernel_sources_hash()


def test_any_kernel_source_change_gives_a_new_cache_dir(tmp_path):
    copy_sources(tmp_path)
    before = engine.kernel_sources_hash(tmp_path)
    assert before == engine.kernel_sources_hash(ROOT)
    kalman = tmp_path / "engine" / "kalman.py"
    kalman.write_text(kalman.read_text() + "\n# a change to an inlined step\n")
    changed = engine.kernel_sources_hash(tmp_path)
    assert changed != before
    (tmp_path / "strategies" / "extra.py").write_text("X = 1\n")
    assert engine.kernel_sources_hash(tmp_path) not in (before, changed)


def test_numba_cache_dir_env_is_the_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert engine._numba_cache_dir() == tmp_path / engine.kernel_sources_hash()
