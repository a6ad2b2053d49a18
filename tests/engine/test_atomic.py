"""The one atomic write: the final name holds the old or the new content, never a half file;
no temporary file is left behind, on success or on an error."""

from __future__ import annotations

import pytest

from engine.atomic import atomic_path, write_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "rules.json"
    write_atomic(path, "old")
    write_atomic(path, b"new \xff")
    assert path.read_bytes() == b"new \xff"
    assert [p.name for p in path.parent.iterdir()] == ["rules.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_an_error_while_writing_keeps_the_old_file(tmp_path, durable):
    path = tmp_path / "engine.json"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(path, durable=durable) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".engine.json.")
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["engine.json"]
