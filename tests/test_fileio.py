"""What a lab shares: files written with the mode the umask gives (atomic writes go through a
private temporary file, which alone would be 0600), and a code version that names only this
code's own commit."""

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


def test_the_code_version_names_a_commit_only_of_the_checkout_that_tracks_the_package(tmp_path):
  """A package installed into a virtualenv inside another repository recorded that
  repository's commit; only a checkout that tracks the package's files names one now."""
  import subprocess

  from simclr_distill import provenance

  def git(*args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

  git("init", "-q")
  (tmp_path / "README").write_text("another project")
  git("add", "README")
  git("commit", "-qm", "x")
  package = tmp_path / ".venv" / "site-packages" / "simclr_distill"
  package.mkdir(parents=True)
  (package / "__init__.py").write_text("")
  assert provenance.checkout_commit(package) == ""  # Untracked: not this code's commit.
  git("add", "-f", str(package / "__init__.py"))
  git("commit", "-qm", "y")
  assert provenance.checkout_commit(package) == git("rev-parse", "--short", "HEAD")
  assert provenance.checkout_commit(tmp_path / "nowhere") == ""
