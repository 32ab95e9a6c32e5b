"""Files of a run are written whole or not at all, readable by all."""

from __future__ import annotations

import stat

import pytest

from aejax import report


def test_write_atomic_writes_whole_readable_files(tmp_path):
  path = report.write_atomic(
    tmp_path / "sub" / "a.json", lambda f: f.write(b"1")
  )
  assert path.read_bytes() == b"1"
  assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_write_leaves_the_old_file_and_no_scratch(tmp_path):
  path = tmp_path / "a.json"
  path.write_bytes(b"old")

  def fail_halfway(f):
    f.write(b"half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    report.write_atomic(path, fail_halfway)
  assert path.read_bytes() == b"old"
  assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
