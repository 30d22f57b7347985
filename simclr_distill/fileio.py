"""Atomic file writes and an inter-process lock.

Every file a later run trusts (results rows, manifests, cached logits, checkpoints) is written
to a temporary name in its final directory and renamed into place, so a kill at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterator


def _fsync_dir(directory: pathlib.Path) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


class DiskFullError(OSError):
  """No space (or quota) left while writing a file; the file was not replaced."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds.

  Args:
    path: the final file.
    suffix: ending the temporary name must keep (Keras insists on ".keras").
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp)
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # As a plain open() would: mkstemp's files are 0600.
    os.replace(tmp, path)
    _fsync_dir(path.parent)
  except OSError as e:
    if e.errno not in _FULL or isinstance(e, DiskFullError):
      raise
    raise DiskFullError(e.errno, f"no space left on the device (or quota) while writing {path}; "
                        f"it was left as it was. Free space under {path.parent} (or use another "
                        "--workdir) and rerun the same command: finished results are kept and "
                        "interrupted runs resume from their last checkpoint") from e
  finally:
    if tmp.exists():
      tmp.unlink()


def _umask() -> int:
  """The process's umask (read without changing it where Linux tells it)."""
  try:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
      if line.startswith("Umask:"):
        return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def atomic_write(path: str | os.PathLike, writer: Callable[[pathlib.Path], None],
                 suffix: str = "") -> None:
  """Calls `writer(tmp_path)` and renames the result onto `path`."""
  with atomic_path(path, suffix) as tmp:
    writer(tmp)


def write_json(path: str | os.PathLike, data: Any) -> None:
  """Writes `data` as indented JSON, atomically."""
  text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
  atomic_write(path, lambda tmp: tmp.write_text(text))


def write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | os.PathLike, remedy: str = "delete it to have it rebuilt") -> Any:
  """Reads JSON, with an error that names the file when it is not valid JSON (empty, cut
  short, binary).

  Args:
    path: the file.
    remedy: what the error tells the user to do.

  Raises:
    ValueError: naming the file, what is wrong and `remedy`.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text()
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not valid JSON (not UTF-8 text: {e.reason} at byte "
                     f"{e.start}); {remedy}") from None
  if not text.strip():
    raise ValueError(f"{path} is empty, not JSON ({len(text)} bytes); {remedy}")
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); {remedy}") from e


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
  """Holds an exclusive advisory lock on `path` (created if missing) for the block.

  Processes on one machine, or on a shared filesystem with working POSIX locks, serialise on
  it; the lock is released when the process dies, so a killed holder never blocks the rest.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def try_lock(path: str | os.PathLike) -> Iterator[bool]:
  """Tries to take the exclusive lock on `path` without waiting; yields whether it got it (and
  holds it for the block if so). A killed holder's lock is released by the OS."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def digest(path: str | os.PathLike) -> str:
  """A short SHA-256 of a file's bytes, or of a directory's files (names and bytes), streamed."""
  import hashlib

  path = pathlib.Path(path)
  files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
  h = hashlib.sha256()
  for f in files:
    h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
    with open(f, "rb") as stream:
      for chunk in iter(lambda: stream.read(1 << 20), b""):
        h.update(chunk)
  return h.hexdigest()[:16]


def align_history(history: str | os.PathLike, epochs_done: int | None) -> None:
  """Keeps a CSVLogger history to the epochs a run's checkpoint holds, so a resumed run logs
  each epoch once.

  Args:
    history: the CSV file (epoch index first).
    epochs_done: epochs finished at the checkpoint, or None without one: the run starts
      afresh and older lines go; with one, lines of later epochs (logged before a kill, then
      redone) go.
  """
  history = pathlib.Path(history)
  if not history.is_file():
    return
  if epochs_done is None:
    history.unlink()
    return
  lines = history.read_text().splitlines(keepends=True)
  kept = lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) < epochs_done]
  write_text(history, "".join(kept))


def relative_to(path: str | os.PathLike, root: str | os.PathLike) -> str:
  """`path` relative to `root` when it lies inside it (what a workdir records, so a copied or
  moved workdir still points at its own files), else absolute."""
  path, root = pathlib.Path(path).absolute(), pathlib.Path(root).absolute()
  try:
    return str(path.relative_to(root))
  except ValueError:
    return str(path)


def check_writable(path: str | os.PathLike, *, directory: bool = True,
                   flag: str | None = None, example: str = "output") -> None:
  """Checks, creating nothing, that `path` can be written: as a directory (made if missing)
  or, with `directory=False`, as a file. A command calls it before any work, so a path it
  cannot use stops it at once, not after hours or halfway through writing.

  Args:
    path: the output directory or file.
    directory: whether `path` is a directory (else a file).
    flag: the flag that gave `path`, named in the message.
    example: a file name the message suggests when a file path names a directory.

  Raises:
    ValueError: "cannot write <path>: <reason>; <what to do>".
  """
  path = pathlib.Path(path)
  given = f"{flag}={path}" if flag else str(path)
  other = f"give another {flag}" if flag else "choose another path"
  if directory and path.exists() and not path.is_dir():
    raise ValueError(f"cannot write {path}: it is a file, and {given} must be a directory "
                     f"(created if missing); {other}, or move the file away")
  if not directory and path.is_dir():
    raise ValueError(f"cannot write {path}: it is a directory, and {given} must be a file; "
                     f"give a file name, e.g. {path / example}")
  existing = path if path.is_dir() else path.parent
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    raise ValueError(f"cannot write {path}: {existing} is a file, not a directory; {other}, or "
                     "move the file away")
  try:  # A real write: permission bits say nothing to root, nor about read-only mounts.
    os.rmdir(tempfile.mkdtemp(prefix=".write-check.", dir=existing))
  except OSError as e:
    raise ValueError(f"cannot write {path}: {e.strerror} (in {existing}); make {existing} "
                     f"writable, or {other}") from None
