"""`atomic_file`: a path to write to, renamed over the target only when the block succeeds."""

import stat

import pytest

from ranker.core.file_io import atomic_file, atomic_write, stale_staging


def test_atomic_file_replaces_the_target_with_the_given_mode(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_file(target, mode=0o600) as temp:
        assert temp.parent == tmp_path and temp != target
        temp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the block ends
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(target, b"public")
    assert target.read_bytes() == b"public" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stale_staging(tmp_path) == []


def test_a_failing_block_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_file(target) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
