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

import numpy as np
import pandas as pd

from simclr_distill import augment, checkpointing, fileio, labelling, matrix, models, provenance
from simclr_distill import results
from simclr_distill import distill as distill_lib
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
    data_dir = pathlib.Path(d.data_dir or pathlib.Path(config.workdir) / "data")
    with fileio.file_lock(data_dir.parent / f".{data_dir.name}.lock"):  # Shards start together.
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
                    precision=config.train.precision, jit_compile=config.train.jit_compile,
                    reuse_models=config.train.reuse_models,
                    checkpoint=checkpointing.CheckpointPolicy(config.train.checkpoint_steps,
                                                              config.train.checkpoint_minutes),
                    imagenet_dir=config.student.imagenet_dir,
                    fold_batchnorm=config.teacher.fold_batchnorm,
                    retrain_stale=config.retrain_stale)


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
  """Trains the missing demo teachers into the zoo; their scores go in the results table.
  Processes started together (shards) train them once: the others wait for the zoo's lock."""
  with fileio.file_lock(ctx.zoo_dir / ".zoo.lock"):
    return _ensure_demo_zoo(config, ctx)


def _ensure_demo_zoo(config: DistillConfig, ctx: RunContext) -> list[teachers_lib.TeacherEntry]:
  zoo = ctx.zoo_dir
  existing = {e.teacher_id: e for e in teachers_lib.read_zoo(zoo)} if (
      zoo / teachers_lib.MANIFEST).is_file() else {}
  entries = dict(existing)
  runs = demo_teacher_runs(config, ctx)
  train_runs(runs, ctx, "demo teachers")
  for run in runs:
    teacher_id = f"none-{run.labeling}-{run.split_percent}" + (
        "-multiclass" if run.task == "multiclass" else "")
    row = results.read_row(ctx.workdir, run.run_id)
    if row.get("status") != "ok":
      raise ValueError(f"demo teacher {teacher_id} (run {run.run_id}) failed: {row.get('error')}")
    source = ctx.workdir / results.RUNS / run.run_id / distill_lib.CHECKPOINT
    digest = provenance.file_digest(source)
    listed = entries.get(teacher_id)
    if (listed is not None and listed.resolve(zoo).is_file()
        and provenance.file_digest(listed.resolve(zoo)) == digest):
      continue  # Listed, and the file is the run's checkpoint.
    fileio.atomic_write(zoo / f"{teacher_id}.keras", lambda tmp: shutil.copyfile(source, tmp))
    entries[teacher_id] = teachers_lib.TeacherEntry(
        teacher_id=teacher_id, encoder="none", encoder_optimizer="", labeling=run.labeling,
        split_percent=run.split_percent, path=f"{teacher_id}.keras", output="logits",
        arch=run.arch, provenance={"source_run": run.run_id, "digest": digest})
    teachers_lib.write_zoo(zoo, list(entries.values()))
  results.consolidate(ctx.workdir)
  return list(entries.values())


def check_zoo(entries, zoo_dir: pathlib.Path) -> None:
  """Checks each zoo teacher that records a digest against its file.

  Raises:
    teachers.TeacherError: naming every teacher whose file was replaced, corrupted or deleted
      after it was listed.
  """
  bad = []
  for e in entries:
    recorded = e.provenance.get("digest")
    path = e.resolve(zoo_dir)
    if not recorded:
      continue
    if not path.exists():
      bad.append(f"{e.teacher_id}: {path} is missing")
    elif provenance.file_digest(path) != recorded:
      bad.append(f"{e.teacher_id}: {path} does not match the digest {recorded} its manifest "
                 "records (replaced or corrupted after it was listed)")
  if bad:
    raise teachers_lib.TeacherError(
        f"the teacher zoo {zoo_dir} does not hold the teachers it lists:\n  " + "\n  ".join(bad)
        + f"\nRestore those files, or re-publish them (rerun the stage that trained them; a "
        f"hand-made zoo: clear the digest column of {teachers_lib.MANIFEST} to accept the new files)")


def load_zoo(config: DistillConfig, ctx: RunContext) -> list[teachers_lib.TeacherEntry]:
  if config.teacher.zoo_dir is None:
    ctx.zoo_dir.mkdir(parents=True, exist_ok=True)
    return ensure_demo_zoo(config, ctx)
  entries = teachers_lib.read_zoo(ctx.zoo_dir)
  check_zoo(entries, ctx.zoo_dir)
  return entries


def selected_teachers(config: DistillConfig, entries) -> list[teachers_lib.TeacherEntry]:
  """The single and ensemble teachers `config` distils (see `matrix.teacher_set`)."""
  return matrix.teacher_set(config, entries)


def members(entries) -> list[teachers_lib.TeacherEntry]:
  """The networks behind `entries`: each single teacher, and each ensemble's members, once."""
  out: dict[str, teachers_lib.TeacherEntry] = {}
  for e in entries:
    for m in (e.members or (e,)):
      out.setdefault(m.teacher_id, m)
  return list(out.values())


def _sample_images(ctx: RunContext):
  with ctx.data.reading():
    return next(iter(ctx.data.examples().batch(16)))["image"].numpy()


def _checked_teachers(config: DistillConfig, ctx: RunContext, entries):
  """Yields (entry, teacher), each loaded and checked against a sample of the data."""
  sample = _sample_images(ctx)
  num_outputs = ctx.num_outputs(config.data.task)
  for entry in entries:
    yield entry, teachers_lib.load_teacher(
        entry, ctx.zoo_dir, image_shape=ctx.data.image_shape, num_outputs=num_outputs,
        safe_mode=ctx.safe_mode, sample=sample, fold_batchnorm=ctx.fold_batchnorm)


def check_teachers(config: DistillConfig, ctx: RunContext, entries) -> None:
  """Loads every teacher once and checks it against the data before any student trains."""
  for _ in _checked_teachers(config, ctx, entries):
    pass


def label_all(config: DistillConfig, ctx: RunContext, entries) -> None:
  """Runs each teacher of `entries` once over the data, skipping finished caches (without
  loading their teachers)."""
  entries = [e for e in entries
             if not labelling.is_labelled(ctx.labels_dir, e, e.resolve(ctx.zoo_dir), ctx.data)]
  for i, (entry, teacher) in enumerate(_checked_teachers(config, ctx, entries), start=1):
    checkpoint = entry.resolve(ctx.zoo_dir)
    start = time.perf_counter()
    with ctx.data.reading():
      labelling.label_with_teacher(teacher, checkpoint, ctx.data, ctx.labels_dir,
                                   batch_size=config.teacher.batch_size)
    log.info("[teacher %d/%d] %s labelled %d examples in %.1f s", i, len(entries),
             entry.teacher_id, len(ctx.all_ids), time.perf_counter() - start)


def run_labelling(config: DistillConfig, *, safe_mode: bool = True) -> pathlib.Path:
  """The labelling stage alone: data, zoo and one pass per teacher. Returns the labels dir."""
  ctx = make_context(config, safe_mode=safe_mode)
  entries = sorted(members(selected_teachers(config, load_zoo(config, ctx))),
                   key=lambda e: e.teacher_id)
  label_all(config, ctx, entries[config.shard_index::config.num_shards])
  return ctx.labels_dir


def check_run(run: matrix.RunSpec, ctx: RunContext) -> provenance.Verdict:
  """Whether a run is finished and reusable: its row exists, the inputs it recorded are the
  current ones, and its checkpoint and predictions match their digests."""
  finished = results.is_done(ctx.workdir, run.run_id)
  return provenance.verdict(ctx.workdir, run.run_id,
                            provenance.run_inputs(run, ctx) if finished else None)


def plan_runs(runs, ctx: RunContext, what: str) -> list[matrix.RunSpec]:
  """The runs of `runs` that must train: never finished, corrupt (their files do not match
  their digests: retrained, with a warning), or stale (an input changed since they finished)
  when `ctx.retrain_stale`.

  Raises:
    provenance.StaleRunsError: for stale runs without `ctx.retrain_stale`, before anything
      trains, naming each run and what changed.
  """
  verdicts = {r.run_id: check_run(r, ctx) for r in runs}
  stale = [v for v in verdicts.values() if v.state == "stale"]
  if stale and not ctx.retrain_stale:
    raise provenance.StaleRunsError(provenance.stale_message(ctx.workdir, stale, "--retrain_stale"))
  for v in verdicts.values():
    if v.state in ("stale", "corrupt"):
      log.warning("%s: %s: %s; it will be retrained (its old files are kept in runs/%s/%s/)",
                  what, v.run_id, "; ".join(v.reasons), v.run_id, provenance.SUPERSEDED)
  unverified = sum(v.state == "unverified" for v in verdicts.values())
  if unverified:
    log.info("%s: %d finished run(s) were written before runs recorded their inputs' digests; "
             "reused without verification", what, unverified)
  # Runs of one network follow each other, so each re-initialises the model its predecessor
  # traced (RunContext.reuse_models) instead of tracing its own.
  return sorted((r for r in runs if not verdicts[r.run_id].reusable),
                key=lambda r: (r.arch, r.stage, r.optimizer, r.run_id))


def train_runs(runs, ctx: RunContext, what: str, after=None, todo=None) -> None:
  """Trains the runs of `runs` that `plan_runs` selects (or `todo`, its result) in order,
  rebuilding the results table after each, with one progress line per run (and an ETA).
  `after(run, row)` runs after each new row."""
  todo = plan_runs(runs, ctx, what) if todo is None else todo
  log.info("%s: %d runs in this shard, %d already finished, %d to train", what, len(runs),
           len(runs) - len(todo), len(todo))
  start = time.perf_counter()
  for i, run in enumerate(todo, start=1):
    # A run is claimed for as long as it trains: another process given the same shard (or an
    # overlapping --only) skips it instead of training it a second time in the same directory.
    with claim_run(ctx, run) as claimed:
      if not claimed:
        log.info("[%s %d/%d] %s: being trained by another process; skipped", what, i, len(todo),
                 run.run_id)
        continue
      verdict = check_run(run, ctx)
      if verdict.reusable:  # Finished by another process meanwhile.
        continue
      if verdict.state in ("stale", "corrupt") and ctx.is_writer:
        # Its finished files move aside; an unfinished run keeps its state and resumes.
        provenance.supersede(ctx.workdir, run.run_id)
      with ctx.data.reading():
        row = execute_run(run, ctx)
    results.consolidate(ctx.workdir)
    if after:
      after(run, row)
    log.info("[%s %d/%d] %s: %s f1=%.3f in %.1f s; ETA %.0f s", what, i, len(todo), run.run_id,
             row["status"], row.get("f1", float("nan")), row["wall_seconds"],
             (time.perf_counter() - start) / i * (len(todo) - i))


CLAIM = ".claim"


def claim_run(ctx: RunContext, run: matrix.RunSpec):
  """A context manager yielding whether this process holds `run`'s claim (a lock file in its
  run directory, released when the block ends or the process dies)."""
  return fileio.try_lock(ctx.workdir / results.RUNS / run.run_id / CLAIM)


def _needs_cache(run: matrix.RunSpec) -> bool:
  return run.teacher_mode in ("offline", "fixed") or run.pool_balance == "teacher"


def _prepare_teachers(config: DistillConfig, ctx: RunContext, runs) -> None:
  """Loads and checks every network the runs' teachers need; labels the data with those whose
  logits a run reads from the cache (offline and fixed teaching, teacher-balanced pools).
  Shards that share a teacher write identical parts atomically; `stages.label --num_shards`
  splits the passes beforehand."""
  teachers = {r.teacher.teacher_id: r.teacher for r in runs}
  cached = {r.teacher.teacher_id for r in runs if _needs_cache(r)}
  to_label = members([t for i, t in teachers.items() if i in cached])
  labelled = {e.teacher_id for e in to_label}
  label_all(config, ctx, to_label)
  check_teachers(config, ctx, [e for e in members(teachers.values()) if e.teacher_id not in labelled])


def run_distillation(config: DistillConfig, *, safe_mode: bool = True,
                     require_match: bool = True) -> pd.DataFrame:
  """Runs stage 3 for `config` and returns the results table of its workdir.

  Generation 1 learns from the zoo's teachers and ensembles; with `student.generations` > 1,
  each finished run then teaches its born-again child, generation by generation, and the
  ensemble of each chain's generations is scored (stage "generation_ensemble").

  Args:
    require_match: a `config.only` that selects no run is an error (False: the caller checks).

  Raises:
    ValueError, FileNotFoundError, teachers.TeacherError: for bad inputs, before training.
    provenance.StaleRunsError: for finished runs whose inputs changed (see `plan_runs`).
  """
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ctx = make_context(config, safe_mode=safe_mode)
  for arch in config.student.archs:  # Unknown or too-small architectures fail before training.
    if arch != matrix.SAME_ARCH:
      models.check_input_size(arch, ctx.data.image_shape)
  if config.teacher.augment != "none":
    augment.POLICIES.get(config.teacher.augment)  # An unknown policy fails here, listing them.
  zoo = load_zoo(config, ctx)
  if not selected_teachers(config, zoo):
    raise ValueError(f"no teacher in {ctx.zoo_dir} matches schemes {config.data.schemes}, "
                     f"split percents {config.data.split_percents} and encoders "
                     f"{config.teacher.encoders or 'any'} (and no ensemble can be formed)")
  if config.student.classes:
    too_big = [c for c in config.student.classes if c >= ctx.data.num_classes]
    if too_big:
      raise ValueError(f"--student_classes names class(es) {too_big}; the data has classes "
                       f"0-{ctx.data.num_classes - 1}")
  runs = matrix.select(matrix.build_matrix(config, zoo, ctx.data.fingerprint()),
                       only=config.only, shard_index=config.shard_index,
                       num_shards=config.num_shards, require_match=require_match)
  chains = {r.run_id: [r] for r in runs if r.stage == "distill"}
  todo = plan_runs(runs, ctx, "distill")
  # Only the runs that train need their teachers: a rerun with nothing to do loads none.
  _prepare_teachers(config, ctx, [r for r in todo if r.stage == "distill"])
  train_runs(runs, ctx, "distill", todo=todo)
  for generation in range(2, config.student.generations + 1):
    # Each shard grows its own chains, so shards never wait for each other.
    children = []
    for chain in chains.values():
      parent = chain[-1]
      if parent.generation == generation - 1 and _finished_ok(ctx, parent):
        child = matrix.next_generation(parent, str(ctx.workdir / results.RUNS / parent.run_id /
                                                    "student.keras"))
        chain.append(child)
        children.append(child)
    if not children:
      break
    todo = plan_runs(children, ctx, f"distill generation {generation}")
    _prepare_teachers(config, ctx, todo)
    train_runs(children, ctx, f"distill generation {generation}", todo=todo)
  for chain in chains.values():
    if len(chain) > 1:
      generation_ensemble(chain, ctx, config.teacher.combine)
  return results.consolidate(workdir)


def _finished_ok(ctx: RunContext, run: matrix.RunSpec) -> bool:
  return results.is_done(ctx.workdir, run.run_id) and results.read_row(
      ctx.workdir, run.run_id).get("status") == "ok"


def generation_ensemble(chain, ctx: RunContext, combine: str = "logits") -> dict | None:
  """Scores the ensemble of a chain's finished generations from their saved test predictions
  (no training, no teacher pass), writing a results row of stage "generation_ensemble" whose
  teacher columns compare it with the chain's first teacher. Returns the row, or None when a
  generation failed; an existing row is kept."""
  done = [r for r in chain if _finished_ok(ctx, r)]
  if len(done) < 2 or len(done) < len(chain):
    return None
  last = chain[-1]
  run_id = f"generation_ensemble-{len(chain)}-{chain[0].run_id}"
  if results.is_done(ctx.workdir, run_id):
    return results.read_row(ctx.workdir, run_id)
  start = time.perf_counter()
  frames = [pd.read_parquet(ctx.workdir / results.RUNS / r.run_id / distill_lib.PREDICTIONS)
            for r in chain]
  first = frames[0]
  frames = [f.set_index("id").loc[first["id"]].reset_index() for f in frames]
  frame = first[["id", "label"]].copy()
  if last.task == "binary":
    logits = [f["student_logit"].to_numpy()[:, None] for f in frames]
    combined = np.asarray(teachers_lib.combine_logits(logits, combine))[:, 0]
    frame["student_logit"] = combined
    frame["student_prob"] = 1.0 / (1.0 + np.exp(-np.clip(combined, -80, 80)))
    frame["teacher_prob"] = first["teacher_prob"]
  else:
    columns = [c for c in first.columns if c.startswith("student_prob_")]
    probs = np.mean([f[columns].to_numpy() for f in frames], axis=0)  # Saved as probabilities.
    frame["student_pred"] = probs.argmax(-1)
    frame[columns] = probs
    for c in [c for c in first.columns if c.startswith("teacher_")]:
      frame[c] = first[c]
  base = results.read_row(ctx.workdir, last.run_id)
  keep = ("protocol", "task", "model", "labeling", "split_percent", "arch", "encoder",
          "encoder_optimizer", "teacher_mode", "teacher_members", "ensemble_combine", "augment",
          "mixup", "pool_balance", "student_optimizer", "learning_rate", "schedule", "loss_kind",
          "temperature", "alpha", "student_classes", "max_epochs", "batch_size", "replicas",
          "seed", "test_examples", "train_examples", "dataset", "preset", "code_version")
  row = {k: base.get(k) for k in keep}
  root = matrix.root_teacher_id(chain[0])
  row.update(distill_lib.score(frame, last.task, last.student_classes), run_id=run_id,
             stage="generation_ensemble", status="ok", error="", generation=len(chain),
             teacher_id=root, root_teacher_id=root,
             teacher_members=" ".join(r.run_id for r in chain), ensemble_combine=combine,
             method=f"{chain[0].method} / ensemble of {len(chain)} generations")
  run_dir = ctx.workdir / results.RUNS / run_id
  run_dir.mkdir(parents=True, exist_ok=True)
  fileio.atomic_write(run_dir / distill_lib.PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
  row["wall_seconds"] = time.perf_counter() - start
  row["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
  results.write_row(ctx.workdir, row)
  return row
