from __future__ import annotations

from pathlib import Path

import pytest

from invprop.files import write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_previous_content_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    write_text_atomically(target, "old")

    def broken(handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken, durable=True)
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]
    write_text_atomically(target, "new", durable=True)
    assert target.read_text() == "new"
