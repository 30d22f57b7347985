"""Teacher labelling: one pass of each teacher over the data, logits cached on disk.

All students of a teacher read the same cache, so the 180-run matrix costs 36 teacher passes,
not 180. `_COMPLETE.json` records how the logits were obtained (`logits`: "model",
"pre_activation" for a probability teacher whose last sigmoid/softmax was skipped, "inverted"
for probabilities inverted in float64; see `teachers.LOGITS_SOURCES`). The cache of a teacher is a directory with one Parquet file per input shard (columns
`id`, `logit_0` .. `logit_{K-1}`) and `_COMPLETE.json`, written last. Each part is written
atomically, so an interrupted pass resumes at the first missing part.
"""

from __future__ import annotations

import logging
import pathlib
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import tensorflow as tf

from simclr_distill import fileio, provenance
from simclr_distill.data import records
from simclr_distill.teachers import Teacher, TeacherEntry, combine_logits

log = logging.getLogger(__name__)

COMPLETE = "_COMPLETE.json"
PROGRESS_SECONDS = 60.0  # A labelling pass says how far it is at most this often.


def cache_dir(labels_dir: str | pathlib.Path, teacher_id: str) -> pathlib.Path:
  return pathlib.Path(labels_dir) / teacher_id


def _part_path(directory: pathlib.Path, shard: str) -> pathlib.Path:
  return directory / (pathlib.Path(shard).stem + ".parquet")


def _cache_key(entry: TeacherEntry, checkpoint: pathlib.Path, data: records.PreparedData) -> dict:
  """What a cache was made from: the teacher's content digest (not its path or time, so a
  copied or moved workdir keeps its caches), its declared output and the data's digest."""
  return {"teacher_id": entry.teacher_id, "checkpoint_digest": provenance.file_digest(checkpoint),
          "declared_output": entry.output, "data": data.fingerprint(),
          "data_digest": provenance.data_digest(data.root, data.shards)}


def is_labelled(labels_dir, entry: TeacherEntry, checkpoint: pathlib.Path,
                data: records.PreparedData) -> bool:
  """True when the cache is complete and was made by this checkpoint's contents on this data
  (checked without loading the teacher)."""
  marker = cache_dir(labels_dir, entry.teacher_id) / COMPLETE
  if not marker.is_file() or not checkpoint.exists():  # A missing teacher is named as it loads.
    return False
  done = fileio.read_json(marker)
  return all(done.get(k) == v for k, v in _cache_key(entry, checkpoint, data).items())


def label_with_teacher(teacher: Teacher, checkpoint: pathlib.Path, data: records.PreparedData,
                       labels_dir: str | pathlib.Path, *, batch_size: int = 256) -> pathlib.Path:
  """Runs `teacher` over every example of `data` once and caches its logits.

  Args:
    teacher: a loaded, checked teacher.
    checkpoint: its file (recorded, so a changed checkpoint invalidates the cache).
    data: the prepared data.
    labels_dir: root of all teachers' caches.
    batch_size: examples per forward pass.

  Returns:
    The teacher's cache directory.

  Raises:
    ValueError: if the teacher gives NaN/inf logits (the part is not written).
  """
  directory = cache_dir(labels_dir, teacher.entry.teacher_id)
  if is_labelled(labels_dir, teacher.entry, checkpoint, data):
    return directory
  key = {**_cache_key(teacher.entry, checkpoint, data), "output": teacher.output,
         "logits": teacher.logits_source}
  stale = directory / "_KEY.json"
  if stale.is_file() and fileio.read_json(stale) != key:
    # A different checkpoint or data set wrote these parts: none of them can be trusted.
    for part in directory.glob("*.parquet"):
      part.unlink()
  fileio.write_json(stale, key)
  todo = [shard for shard in data.shards if not _part_path(directory, shard).is_file()]
  start, count = time.perf_counter(), 0
  # A line per shard is debug output; a long pass (paper scale: many shards) says how far it
  # is at most once a minute.
  said = start
  # One pipeline over every missing shard (building one per shard costs more than labelling a
  # small shard); its batches never span two shards, so each part is written once its shard ends.
  pending: dict[int, tuple[list, list]] = {index: ([], []) for index in range(len(todo))}

  def write_part(index: int) -> None:
    nonlocal count, said
    shard = todo[index]
    ids, logits = pending.pop(index)
    ids_array = np.concatenate(ids).astype(str) if ids else np.zeros([0], str)
    logits_array = np.concatenate(logits) if logits else np.zeros([0, 1], np.float32)
    if not np.isfinite(logits_array).all():
      bad = int((~np.isfinite(logits_array)).any(-1).sum())
      raise ValueError(f"teacher {teacher.entry.teacher_id!r} gave NaN/inf logits for {bad} "
                       f"example(s) of {shard}; check the checkpoint and the data")
    frame = pd.DataFrame(logits_array.reshape(len(ids_array), -1).astype(np.float32))
    frame.columns = [f"logit_{i}" for i in range(frame.shape[1])]
    frame.insert(0, "id", ids_array)
    fileio.atomic_write(_part_path(directory, shard), lambda tmp: frame.to_parquet(tmp, index=False))
    count += len(frame)
    now = time.perf_counter()
    due = now - said >= PROGRESS_SECONDS
    said = now if due else said
    log.log(logging.INFO if due else logging.DEBUG, "labelled %s with %s: %d examples (%.0f/s)",
            shard, teacher.entry.teacher_id, count, count / max(now - start, 1e-9))

  if todo:
    for batch in data.batches(batch_size, shards=todo, by_shard=True, labels=False).prefetch(tf.data.AUTOTUNE):
      index = int(batch["shard"])
      for finished in [i for i in pending if i < index]:
        write_part(finished)
      pending[index][0].append(batch["id"].numpy())
      pending[index][1].append(teacher.compiled_logits(batch["image"]).numpy())
  for index in sorted(pending):  # The last shard, and shards without records.
    write_part(index)
  # Parts from an earlier, interrupted pass are counted from their footers, not re-read.
  fileio.write_json(directory / COMPLETE, {**key, "examples": sum(
      pq.read_metadata(_part_path(directory, s)).num_rows for s in data.shards)})
  return directory


def load_cached_logits(labels_dir: str | pathlib.Path, teacher_id: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (ids [N], logits [N, K] float32) of a complete cache.

  Raises:
    FileNotFoundError: if the teacher's pass has not finished (run `stages.label`).
  """
  directory = cache_dir(labels_dir, teacher_id)
  if not (directory / COMPLETE).is_file():
    raise FileNotFoundError(f"no complete label cache for teacher {teacher_id!r} in {directory}; "
                            "run `python -m stages.label` with the same flags first")
  frame = pd.concat([pd.read_parquet(p) for p in sorted(directory.glob("*.parquet"))])
  logits = frame[[c for c in frame.columns if c.startswith("logit_")]].to_numpy(np.float32)
  if not np.isfinite(logits).all():
    bad = frame["id"].to_numpy(str)[~np.isfinite(logits).all(1)]
    raise ValueError(f"the label cache of teacher {teacher_id!r} in {directory} holds NaN/inf "
                     f"logits for {len(bad)} example(s) (e.g. {bad[0]}); delete {directory} and "
                     "rerun `python -m stages.label` (the teacher is checked as it labels)")
  return frame["id"].to_numpy(str), logits


def load_teacher_logits(labels_dir: str | pathlib.Path,
                        entry: TeacherEntry) -> tuple[np.ndarray, np.ndarray]:
  """`load_cached_logits` for any teacher: an ensemble combines its members' caches (so an
  ensemble costs no teacher pass of its own), aligned on the first member's ids.

  Raises:
    FileNotFoundError: if a (member's) pass has not finished.
    ValueError: if the members' caches cover different examples.
  """
  if not entry.members:
    return load_cached_logits(labels_dir, entry.teacher_id)
  ids, first = load_cached_logits(labels_dir, entry.members[0].teacher_id)
  row_of = {i: r for r, i in enumerate(ids.tolist())}
  logits = [first]
  for member in entry.members[1:]:
    member_ids, member_logits = load_cached_logits(labels_dir, member.teacher_id)
    if len(member_ids) != len(ids) or set(member_ids.tolist()) != row_of.keys():
      raise ValueError(f"ensemble {entry.teacher_id}: the caches of {entry.members[0].teacher_id} "
                       f"and {member.teacher_id} cover different examples; relabel both with "
                       "`python -m stages.label` on the same data")
    order = np.empty(len(ids), np.int64)
    order[[row_of[i] for i in member_ids.tolist()]] = np.arange(len(ids))
    logits.append(member_logits[order])
  return ids, np.asarray(combine_logits(logits, entry.combine), np.float32)
