"""What each finished run depended on and what it wrote, as content digests.

A run's row (`runs/<run_id>/result.json`) records under "provenance":
  inputs:  the data (its manifest, id list and shard sizes), every split list the run read,
           its teacher's checkpoint (each member's for an ensemble, the parent student for a
           born-again generation) and the label cache it read, each as a content digest;
  outputs: the checkpoint and test predictions it wrote, as content digests;
  code_version: recorded, not compared (a new commit does not invalidate finished results).
A rerun reuses a finished run only when its inputs are unchanged and its outputs intact. A run
whose inputs changed is "stale": the command refuses, naming what changed, unless it is asked
to retrain exactly those runs (`retrain_stale`). A run whose files do not match their digests
is "corrupt" and is retrained. Either way the old files are moved aside (`supersede`), never
deleted. Digests are of contents, never of paths or times, so a copied or moved workdir
verifies as it did where it was made.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
from typing import Any, Mapping, Sequence

import pandas as pd

import simclr_distill
from simclr_distill import fileio, results
from simclr_distill.data import splits as splits_lib

log = logging.getLogger(__name__)

KEY = "provenance"
SUPERSEDED = "superseded"
# What a finished run's outputs are: checked before the run is reused.
OUTPUT_FILES = ("student.keras", "predictions.parquet")

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
  """A short SHA-256 of a file's bytes (whatever its name: a teacher copied into a zoo keeps
  the digest of the run's checkpoint), or `fileio.digest` of a directory (a SavedModel);
  computed once per process for an unchanged file (same path, size and modification time)."""
  path = pathlib.Path(path)
  stat = path.stat()
  key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
  if key not in _DIGESTS:
    if path.is_dir():
      _DIGESTS[key] = fileio.digest(path)
    else:
      h = hashlib.sha256()
      with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
          h.update(chunk)
      _DIGESTS[key] = h.hexdigest()[:16]
  return _DIGESTS[key]


def list_digest(ids: Sequence[str]) -> str:
  """A split list's digest: of its ids in order (the file's format and spacing do not count)."""
  return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def data_digest(root: str | os.PathLike, shards: Sequence[str]) -> str:
  """Prepared data's digest: its manifest, its id list and each shard's name and size (not the
  shards' bytes: hashing 590k patches on every rerun would cost more than it protects; a
  re-preparation rewrites the manifest and the id list)."""
  root = pathlib.Path(root)
  h = hashlib.sha256()
  for name in ("dataset.json", "ids.txt"):
    path = root / name
    h.update(name.encode() + (path.read_bytes() if path.is_file() else b""))
  for shard in shards:
    path = root / shard
    h.update(f"{shard}:{path.stat().st_size if path.is_file() else -1}".encode())
  return h.hexdigest()[:16]


def split_digests(data, schemes: Sequence[str]) -> dict[str, str]:
  """{"splits/<scheme>/<list>": digest} for every list of the schemes."""
  return {f"splits/{scheme}/{name}": list_digest(ids)
          for scheme in schemes for name, ids in data.splits(scheme).items()}


def lists_read(stage: str, scheme: str, percent: int, *, protocol: str = "holdout",
               validated: bool = True, pool_lists: Sequence[str] = ()) -> list[str]:
  """The split lists a run reads, as keys of `split_digests`.

  Args:
    stage: "distill" (a student learns from the unlabelled pool) or any supervised stage.
    scheme, percent: the run's labelling scheme and label split.
    protocol: "holdout" (the pool excludes every scheme's test and validation lists, so those
      lists shape it) or "original" (the pool is the test list).
    validated: the run reads its validation list (model selection, early stopping).
    pool_lists: every key of `split_digests` (for a holdout pool).
  """
  own = f"splits/{scheme}/"
  used = {own + splits_lib.TEST}
  if validated:
    used.add(own + splits_lib.split_name("val", percent))
  if stage != "distill" or protocol == "holdout":
    used.add(own + splits_lib.split_name("train", percent))  # Labels, or the labelled mask.
  if stage == "distill" and protocol == "holdout":
    used.update(k for k in pool_lists
                if k.endswith("/" + splits_lib.TEST) or k.rsplit("/", 1)[-1].startswith("val_"))
  return sorted(used)


def describe(key: str) -> str:
  """A reader's name for an input key."""
  kind, _, name = key.partition("/")
  return {"data": "the prepared data (manifest, ids or shards)",
          "splits": f"split list {name}",
          "teacher": f"teacher {name}'s checkpoint",
          "labels": f"the label cache of teacher {name}",
          "encoder": f"pretrained encoder {name}"}.get(kind, key)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Whether a run can be reused.

  state: "todo" (never finished), "done" (finished, inputs and outputs verified), "unverified"
  (finished by a version that recorded no provenance), "stale" (an input changed since), or
  "corrupt" (its row or files do not match what was recorded).
  """

  run_id: str
  state: str
  reasons: tuple[str, ...] = ()

  @property
  def reusable(self) -> bool:
    return self.state in ("done", "unverified")


def record(inputs: Mapping[str, str], run_dir: pathlib.Path, outputs: Sequence[str],
           code_version: str) -> dict[str, Any]:
  """The provenance a row records: its inputs and the digests of `outputs` (file names in
  `run_dir` that exist)."""
  return {"inputs": dict(sorted(inputs.items())), "code_version": code_version,
          "outputs": {name: file_digest(run_dir / name) for name in outputs
                      if (run_dir / name).exists()}}


def verdict(workdir: str | os.PathLike, run_id: str, inputs: Mapping[str, str] | None) -> Verdict:
  """Checks a run's row against its current inputs and its files against their digests.

  Args:
    inputs: the run's inputs now; None skips the comparison (only the outputs are checked).
  """
  path = results.row_path(workdir, run_id)
  if not path.is_file():
    return Verdict(run_id, "todo")
  try:
    row = results.read_row(workdir, run_id)
  except ValueError:
    return Verdict(run_id, "corrupt", (f"{path.name} is not valid JSON",))
  recorded = row.get(KEY)
  if not recorded:
    return Verdict(run_id, "unverified")
  if inputs is not None:
    before = recorded.get("inputs", {})
    changed = [describe(k) + " changed" for k, v in sorted(before.items())
               if k in inputs and inputs[k] != v]
    # A list or teacher the run read that is gone now; a deleted label cache is only rebuilt.
    changed += [describe(k) + " is gone" for k in sorted(before)
                if k not in inputs and not k.startswith("labels/")]
    if changed:
      return Verdict(run_id, "stale", tuple(changed))
  overtrained = _overtrained(row)
  if overtrained:
    return Verdict(run_id, "stale", (overtrained,))
  run_dir = path.parent
  bad = []
  for name, digest in sorted(recorded.get("outputs", {}).items()):
    if not (run_dir / name).exists():
      bad.append(f"{name} is missing")
    elif file_digest(run_dir / name) != digest:
      bad.append(f"{name} does not match its recorded digest (corrupt, truncated or replaced)")
  return Verdict(run_id, "corrupt", tuple(bad)) if bad else Verdict(run_id, "done")


def _overtrained(row: Mapping[str, Any]) -> str:
  """Why a finished run trained more steps than it declares, or "": compiled with more steps
  per call than divide its steps per epoch, Keras ran whole executions (1 step per epoch at 4
  per call trained 4). Runs since then use a divisor (`training.runtime.steps_per_execution`);
  earlier ones are stale, so a comparison never mixes the two."""
  try:
    per_call, per_epoch = int(row["steps_per_execution"]), int(row["steps_per_epoch"])
  except (KeyError, TypeError, ValueError):
    return ""
  if per_call <= 1 or per_epoch % per_call == 0:
    return ""
  trained = -(-per_epoch // per_call) * per_call
  return (f"it trained {trained} steps per epoch, not its {per_epoch} (steps_per_execution "
          f"{per_call} does not divide them: Keras runs whole executions; fixed since)")


def supersede(workdir: str | os.PathLike, run_id: str) -> pathlib.Path | None:
  """Moves a finished run's files to `runs/<run_id>/superseded/<time>/` so it trains afresh
  (nothing is deleted). Returns that directory, or None when there was nothing to move."""
  # The row first: once it is gone the run counts as unfinished, whatever a kill leaves.
  return supersede_dir(pathlib.Path(workdir) / results.RUNS / run_id, first=results.ROW_FILE)


def supersede_dir(directory: pathlib.Path, *, first: str) -> pathlib.Path | None:
  """Moves everything in `directory` (but earlier superseded files and a claim) to
  `directory/superseded/<time>/`, the file `first` first: the one whose presence marks the
  work finished. Returns that directory, or None when there was nothing to move."""
  moving = [p for p in directory.iterdir() if p.name not in (SUPERSEDED, ".claim")] if (
      directory.is_dir()) else []
  if not moving:
    return None
  stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S.%fZ")
  target = directory / SUPERSEDED / stamp
  target.mkdir(parents=True)
  for p in sorted(moving, key=lambda p: p.name != first):
    shutil.move(str(p), str(target / p.name))
  return target


class StaleRunsError(ValueError):
  """Finished runs whose inputs changed; the message lists them and what to do."""


def stale_message(workdir: str | os.PathLike, stale: Sequence[Verdict], flag: str,
                  kept: str = f"runs/<run_id>/{SUPERSEDED}/") -> str:
  shown = [f"  {v.run_id}: {'; '.join(v.reasons)}" for v in stale[:12]]
  if len(stale) > 12:
    shown.append(f"  ... and {len(stale) - 12} more")
  return "\n".join([
      f"{len(stale)} finished run(s) in {workdir} depend on inputs that changed since they "
      "finished, so their results no longer describe these inputs:", *shown,
      f"Rerun into a new --workdir to keep both, or rerun this command with {flag} to retrain "
      f"exactly these runs (their old files are kept in {kept})."])


def reusable(workdir: str | os.PathLike, run_id: str, inputs: Mapping[str, str], *,
             retrain_stale: bool = False) -> bool:
  """For a result computed outside the run matrix (a probe, a reference): True when it is
  finished and verified; False when it must be computed, after moving a corrupt one's files
  (or a stale one's, with `retrain_stale`) aside.

  Raises:
    StaleRunsError: when its inputs changed and `retrain_stale` is False.
  """
  v = verdict(workdir, run_id, inputs)
  if v.reusable:
    return True
  if v.state == "stale" and not retrain_stale:
    raise StaleRunsError(stale_message(workdir, [v], "--retrain_stale"))
  if v.state in ("stale", "corrupt"):
    log.warning("%s: %s; it will be computed again (its old files are kept in runs/%s/%s/)",
                run_id, "; ".join(v.reasons), run_id, SUPERSEDED)
    supersede(workdir, run_id)
  return False


def inputs_of(data, keys: Sequence[str], digests: Mapping[str, str] | None = None) -> dict[str, str]:
  """The data's digest and the named split lists' (`digests`: `split_digests` of the data,
  when the caller has them)."""
  digests = split_digests(data, data.schemes) if digests is None else digests
  return {"data": data_digest(data.root, data.shards), **{k: digests[k] for k in keys if k in digests}}


@functools.lru_cache(maxsize=None)
def code_version() -> str:
  """The code that runs, as results rows record it.

  An installed package (a wheel, a non-editable install) names itself by its version metadata,
  written at build time from git (setuptools-scm, pyproject.toml), e.g. `0.1.dev240+g43d4fcd`:
  the commit it was built from, whatever directory or repository it runs in. A package that
  runs from its own git checkout (an editable install, `make install`) would carry the
  version of its install, stale after the next commit; there the checkout's current commit
  replaces the build's, with `.dirty` when the package's tracked files have uncommitted
  changes. Only a checkout that tracks the package's own files counts (`checkout_commit`).
  """
  version = simclr_distill.__version__
  package_dir = pathlib.Path(simclr_distill.__file__).parent
  commit = checkout_commit(package_dir)
  if not commit:
    return version
  dirty = _uncommitted_changes(package_dir.parent)
  return f"{version.split('+')[0]}+g{commit}{'.dirty' if dirty else ''}"


def _uncommitted_changes(checkout: pathlib.Path) -> bool:
  """Whether the package's or the stages' tracked files differ from the checkout's commit."""
  try:
    return subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "simclr_distill", "stages"],
                          cwd=checkout, capture_output=True, timeout=10).returncode == 1
  except (OSError, subprocess.SubprocessError):
    return False


def checkout_commit(package_dir: str | os.PathLike) -> str:
  """The short commit of the git checkout `package_dir` is tracked in, or "". A package
  installed into a virtualenv that sits inside some other repository is not tracked there:
  that repository's commit says nothing about this code, so none is recorded."""
  def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=package_dir, capture_output=True, text=True,
                          timeout=5)

  try:
    if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
      return ""
    return git("rev-parse", "--short", "HEAD").stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""
