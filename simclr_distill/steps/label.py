"""Teacher labelling: each teacher run once over the data, its logits cached.

  python -m stages.label --preset=paper --data_dir=D --teacher_zoo=Z --workdir=W \\
      --num_shards=4 --shard_index=0

Writes `W/labels/<teacher_id>/part-*.parquet` (columns id, logit_0..) and `_COMPLETE.json`.
Every teacher is loaded and checked against a sample of the data first; finished caches are
skipped without loading their teachers. Stage 3 labels whatever is missing itself.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import time

from simclr_distill import fileio, labelling, matrix
from simclr_distill import teachers as teachers_lib
from simclr_distill.config import DistillConfig
from simclr_distill.steps import zoo
from simclr_distill.training import context, progress
from simclr_distill.training.context import RunContext

log = logging.getLogger(__name__)


def _sample_images(ctx: RunContext):
  with ctx.data.reading():
    return next(iter(ctx.data.examples().batch(16)))["image"].numpy()


def _load(config: DistillConfig, ctx: RunContext, entry, sample):
  """`entry`'s teacher, loaded and checked against a sample of the data."""
  return teachers_lib.load_teacher(
      entry, ctx.zoo_dir, image_shape=ctx.data.image_shape,
      num_outputs=ctx.num_outputs(config.data.task), safe_mode=ctx.safe_mode, sample=sample,
      fold_batchnorm=ctx.fold_batchnorm)


def check_teachers(config: DistillConfig, ctx: RunContext, entries) -> None:
  """Loads every teacher once and checks it against the data before any student trains."""
  entries = list(entries)
  sample = _sample_images(ctx) if entries else None
  for entry in entries:
    _load(config, ctx, entry, sample)


CLAIMS = ".claims"  # labels/.claims/<teacher_id>: held while that teacher labels.


def label_all(config: DistillConfig, ctx: RunContext, entries) -> int:
  """Runs each teacher of `entries` over the data once, skipping finished caches (without
  loading their teachers); returns the number of teachers this process labelled.

  Each pass is claimed (a lock file released when the process ends), so processes started
  together (shards, work-queue workers, array tasks) never label a teacher twice: a teacher
  another process is labelling is passed over, and once this process's own are done it waits
  for it, then labels it only if its holder died before finishing.
  """
  labelled = lambda e: labelling.is_labelled(ctx.labels_dir, e, e.resolve(ctx.zoo_dir), ctx.data)
  todo = [e for e in entries if not labelled(e)]
  progress.planned("teacher", len(entries), finished=len(entries) - len(todo))
  sample = _sample_images(ctx) if todo else None
  passes, held = 0, []
  for entry in todo:
    with _claim(ctx, entry.teacher_id) as claimed:
      if not claimed:
        log.info("teacher %s: being labelled by another process; taking the next one",
                 entry.teacher_id)
        held.append(entry)
      elif not labelled(entry):
        passes += 1
        _label_one(config, ctx, entry, sample, f"{passes}/{len(todo)}")
  for entry in held:
    with fileio.file_lock(ctx.labels_dir / CLAIMS / entry.teacher_id):  # Until it is done.
      if not labelled(entry):  # Its labeller died first.
        passes += 1
        _label_one(config, ctx, entry, sample, f"{passes}/{len(todo)}")
  return passes


def _claim(ctx: RunContext, teacher_id: str):
  """A teacher pass's claim (none for the workers of a multi-worker cluster, which label in
  lockstep: see `loop.claim_run`)."""
  if not ctx.claims:
    return contextlib.nullcontext(True)
  return fileio.try_lock(ctx.labels_dir / CLAIMS / teacher_id)


def _label_one(config: DistillConfig, ctx: RunContext, entry, sample, position: str) -> None:
  begin = time.perf_counter()
  teacher = _load(config, ctx, entry, sample)
  start = time.perf_counter()
  with ctx.data.reading():
    labelling.label_with_teacher(teacher, entry.resolve(ctx.zoo_dir), ctx.data, ctx.labels_dir,
                                 batch_size=config.teacher.batch_size)
  seconds = time.perf_counter() - start
  log.info("[teacher %s] %s labelled %d examples in %.1f s (%.0f examples/s)", position,
           entry.teacher_id, len(ctx.all_ids), seconds, len(ctx.all_ids) / max(seconds, 1e-9))
  progress.done("teacher", time.perf_counter() - begin)  # The load too: it is part of the unit.


def run(config: DistillConfig, *, safe_mode: bool = True) -> pathlib.Path:
  """The labelling stage alone: data, zoo and one pass per teacher. Returns the labels dir."""
  ctx = context.make_context(config, safe_mode=safe_mode)
  entries = sorted(zoo.members(zoo.selected_teachers(config, zoo.load_zoo(config, ctx))),
                   key=lambda e: e.teacher_id)
  label_all(config, ctx, entries[config.shard_index::config.num_shards])
  return ctx.labels_dir


def _needs_cache(run: matrix.RunSpec) -> bool:
  return run.teacher_mode in ("offline", "fixed") or run.pool_balance == "teacher"


def prepare_teachers(config: DistillConfig, ctx: RunContext, runs) -> None:
  """Loads and checks every network the runs' teachers need; labels the data with those whose
  logits a run reads from the cache (offline and fixed teaching, teacher-balanced pools).
  Shards that share a teacher label it once (`label_all` claims each pass);
  `stages.label --num_shards` splits the passes beforehand."""
  teachers = {r.teacher.teacher_id: r.teacher for r in runs}
  cached = {r.teacher.teacher_id for r in runs if _needs_cache(r)}
  to_label = zoo.members([t for i, t in teachers.items() if i in cached])
  labelled = {e.teacher_id for e in to_label}
  label_all(config, ctx, to_label)
  check_teachers(config, ctx, [e for e in zoo.members(teachers.values()) if e.teacher_id not in labelled])
