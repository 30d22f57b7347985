"""Files the pipeline writes are shared like any other file of the user's: their mode follows
the umask (atomic writes go through a private temporary file, which alone would be 0600)."""

import os
import stat

import pytest

from simclr_distill import fileio


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomically_written_files_follow_the_umask(tmp_path, mask, mode):
  previous = os.umask(mask)
  try:
    fileio.write_json(tmp_path / "row.json", {"f1": 0.5})
    fileio.atomic_write(tmp_path / "part.bin", lambda tmp: tmp.write_bytes(b"x"))
  finally:
    os.umask(previous)
  for name in ("row.json", "part.bin"):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
