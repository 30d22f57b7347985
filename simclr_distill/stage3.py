"""Stage 3 end to end: data -> teacher zoo -> teacher labels -> student matrix -> results.

Every step skips what is already done, so rerunning a command resumes it, and a finished
study reruns in seconds without training anything:
  * data: the prepared directory (the digits demo is prepared into `<workdir>/data`);
  * teachers: a zoo manifest (`--teacher_zoo`), or the demo zoo trained into
    `<workdir>/teachers` (one teacher per labelling scheme and split, no pretraining);
  * labels: each teacher's logits over every example, cached once in `<workdir>/labels`;
  * runs: each run of the matrix writes `<workdir>/runs/<run_id>/` and its results row;
  * the table `<workdir>/results.{parquet,csv}` is rebuilt after each run.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import time

import pandas as pd

from simclr_distill import labelling, matrix, models, results
from simclr_distill import teachers as teachers_lib
from simclr_distill.config import STUDY_SPLIT_PERCENTS, DistillConfig
from simclr_distill.data import digits, records
from simclr_distill.distill import RunContext, build_strategy, execute_run

log = logging.getLogger(__name__)


def open_data(config: DistillConfig) -> records.PreparedData:
  """Opens the configured data, preparing the digits demo on first use."""
  d = config.data
  data_dir = d.data_dir
  if d.source == "digits":
    percents = sorted(set(STUDY_SPLIT_PERCENTS) | set(d.split_percents))
    data_dir = d.data_dir or pathlib.Path(config.workdir) / "data"
    digits.prepare_digits(data_dir, percents=percents)
  data = records.PreparedData.open(data_dir, bands=d.bands or None, image_size=d.image_size,
                                   standardize=d.standardize)
  for scheme in d.schemes:
    available = data.splits(scheme)
    for pct in d.split_percents:
      for kind in ("train", "val"):
        if f"{kind}_{pct}" not in available:
          raise ValueError(f"{data.root} has no {kind}_{pct} split for scheme {scheme}; prepare "
                           f"it or choose --split_percents from those present")
  return data


def make_context(config: DistillConfig, *, safe_mode: bool = True,
                 encoders: dict | None = None) -> RunContext:
  data = open_data(config)
  zoo_dir = config.teacher.zoo_dir or pathlib.Path(config.workdir) / "teachers"
  return RunContext(workdir=config.workdir, data=data,
                    strategy=build_strategy(config.strategy, config.tpu), zoo_dir=zoo_dir,
                    safe_mode=safe_mode, preset=config.preset,
                    shuffle_buffer=config.data.shuffle_buffer, cache=config.data.cache,
                    steps_per_execution=config.train.steps_per_execution, encoders=encoders,
                    imagenet_dir=config.student.imagenet_dir)


def demo_teacher_runs(config: DistillConfig, ctx: RunContext) -> list[matrix.RunSpec]:
  """The demo zoo: one supervised teacher per scheme and split (no pretraining, stage 1 is
  not part of this command), trained like a stage-2 model with early stopping on val AUC."""
  t = config.teacher
  return [matrix.RunSpec(
      stage="finetune", arch=t.demo_arch, labeling=scheme, split_percent=pct, optimizer="adam",
      learning_rate=1e-3, seed=0, protocol="holdout", task=config.data.task,
      epochs=t.demo_epochs, batch_size=32, early_stopping=config.train.early_stopping,
      patience=10,
      monitor="val_label_loss",
      head="pooled", dropout=0.25, width=t.demo_width, dataset=ctx.data.fingerprint())
      for scheme in config.data.schemes for pct in config.data.split_percents]


def ensure_demo_zoo(config: DistillConfig, ctx: RunContext) -> list[teachers_lib.TeacherEntry]:
  """Trains the missing demo teachers into the zoo; their scores go in the results table."""
  zoo = ctx.zoo_dir
  existing = {e.teacher_id: e for e in teachers_lib.read_zoo(zoo)} if (
      zoo / teachers_lib.MANIFEST).is_file() else {}
  entries = dict(existing)
  for run in demo_teacher_runs(config, ctx):
    teacher_id = f"none-{run.labeling}-{run.split_percent}" + (
        "-multiclass" if run.task == "multiclass" else "")
    if teacher_id in entries and entries[teacher_id].resolve(zoo).is_file():
      continue
    if not results.is_done(ctx.workdir, run.run_id):
      log.info("training demo teacher %s", teacher_id)
      row = execute_run(run, ctx)
      log.info("teacher %s: test f1=%.3f", teacher_id, row.get("f1", float("nan")))
    source = ctx.workdir / results.RUNS / run.run_id / "student.keras"
    shutil.copyfile(source, zoo / f".{teacher_id}.keras.tmp")
    (zoo / f".{teacher_id}.keras.tmp").replace(zoo / f"{teacher_id}.keras")
    entries[teacher_id] = teachers_lib.TeacherEntry(
        teacher_id=teacher_id, encoder="none", encoder_optimizer="", labeling=run.labeling,
        split_percent=run.split_percent, path=f"{teacher_id}.keras", output="logits",
        arch=run.arch)
    teachers_lib.write_zoo(zoo, list(entries.values()))
  results.consolidate(ctx.workdir)
  return list(entries.values())


def load_zoo(config: DistillConfig, ctx: RunContext) -> list[teachers_lib.TeacherEntry]:
  if config.teacher.zoo_dir is None:
    ctx.zoo_dir.mkdir(parents=True, exist_ok=True)
    return ensure_demo_zoo(config, ctx)
  return teachers_lib.read_zoo(ctx.zoo_dir)


def selected_teachers(config: DistillConfig, entries) -> list[teachers_lib.TeacherEntry]:
  d = config.data
  return [e for e in entries if e.labeling in d.schemes and e.split_percent in d.split_percents
          and (not config.teacher.encoders or e.encoder in config.teacher.encoders)]


def _sample_images(ctx: RunContext):
  return next(iter(ctx.data.examples().batch(16)))["image"].numpy()


def _checked_teachers(config: DistillConfig, ctx: RunContext, entries):
  """Yields (entry, teacher), each loaded and checked against a sample of the data."""
  sample = _sample_images(ctx)
  num_outputs = ctx.num_outputs(config.data.task)
  for entry in entries:
    yield entry, teachers_lib.load_teacher(
        entry, ctx.zoo_dir, image_shape=ctx.data.image_shape, num_outputs=num_outputs,
        safe_mode=ctx.safe_mode, sample=sample)


def check_teachers(config: DistillConfig, ctx: RunContext, entries) -> None:
  """Loads every teacher once and checks it against the data before any student trains."""
  for _ in _checked_teachers(config, ctx, entries):
    pass


def label_all(config: DistillConfig, ctx: RunContext, entries) -> None:
  """Runs each teacher of `entries` once over the data, skipping finished caches."""
  for i, (entry, teacher) in enumerate(_checked_teachers(config, ctx, entries), start=1):
    checkpoint = entry.resolve(ctx.zoo_dir)
    if labelling.is_labelled(ctx.labels_dir, teacher, checkpoint, ctx.data):
      continue
    start = time.perf_counter()
    labelling.label_with_teacher(teacher, checkpoint, ctx.data, ctx.labels_dir,
                                 batch_size=config.teacher.batch_size)
    log.info("[teacher %d/%d] %s labelled %d examples in %.1f s", i, len(entries),
             entry.teacher_id, len(ctx.all_ids), time.perf_counter() - start)


def run_labelling(config: DistillConfig, *, safe_mode: bool = True) -> pathlib.Path:
  """The labelling stage alone: data, zoo and one pass per teacher. Returns the labels dir."""
  ctx = make_context(config, safe_mode=safe_mode)
  entries = sorted(selected_teachers(config, load_zoo(config, ctx)), key=lambda e: e.teacher_id)
  label_all(config, ctx, entries[config.shard_index::config.num_shards])
  return ctx.labels_dir


def train_runs(runs, ctx: RunContext, what: str, after=None) -> None:
  """Trains the unfinished runs of `runs` in order, rebuilding the results table after each,
  with one progress line per run (and an ETA). `after(run, row)` runs after each new row."""
  todo = [r for r in runs if not results.is_done(ctx.workdir, r.run_id)]
  log.info("%s: %d runs in this shard, %d already finished, %d to train", what, len(runs),
           len(runs) - len(todo), len(todo))
  start = time.perf_counter()
  for i, run in enumerate(todo, start=1):
    row = execute_run(run, ctx)
    results.consolidate(ctx.workdir)
    if after:
      after(run, row)
    log.info("[%s %d/%d] %s: %s f1=%.3f in %.1f s; ETA %.0f s", what, i, len(todo), run.run_id,
             row["status"], row.get("f1", float("nan")), row["wall_seconds"],
             (time.perf_counter() - start) / i * (len(todo) - i))


def run_distillation(config: DistillConfig, *, safe_mode: bool = True) -> pd.DataFrame:
  """Runs stage 3 for `config` and returns the results table of its workdir.

  Raises:
    ValueError, FileNotFoundError, teachers.TeacherError: for bad inputs, before training.
  """
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ctx = make_context(config, safe_mode=safe_mode)
  for arch in config.student.archs:  # Unknown or too-small architectures fail before training.
    models.check_input_size(arch, ctx.data.image_shape)
  entries = selected_teachers(config, load_zoo(config, ctx))
  if not entries:
    raise ValueError(f"no teacher in {ctx.zoo_dir} matches schemes {config.data.schemes}, "
                     f"split percents {config.data.split_percents} and encoders "
                     f"{config.teacher.encoders or 'any'}")
  runs = matrix.select(matrix.build_matrix(config, entries, ctx.data.fingerprint()),
                       only=config.only, shard_index=config.shard_index,
                       num_shards=config.num_shards)
  needed = [e for e in entries if any(r.teacher == e for r in runs)]
  if config.teacher.mode == "offline" or any(r.pool_balance == "teacher" for r in runs):
    # Every teacher a run needs labels the data before any student trains (online runs use
    # the cache only to balance their pool). Shards that share a teacher write identical
    # parts atomically; `stages.label --num_shards` splits the passes beforehand.
    label_all(config, ctx, needed)
  else:
    check_teachers(config, ctx, needed)
  train_runs(runs, ctx, "distill")
  return results.consolidate(workdir)
