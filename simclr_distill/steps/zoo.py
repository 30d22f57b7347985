"""Where stage 3's teachers come from: a zoo manifest (`--teacher_zoo`, checked against the
digests it records), or the demo zoo trained into `<workdir>/teachers` (one supervised teacher
per labelling scheme and split, no pretraining); and which of them a config distils.
"""

from __future__ import annotations

import pathlib
import shutil

from simclr_distill import fileio, matrix, provenance, results
from simclr_distill import teachers as teachers_lib
from simclr_distill.config import DistillConfig
from simclr_distill.training import executor, loop
from simclr_distill.training.context import RunContext


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
  loop.train_runs(runs, ctx, "demo teachers")
  for run in runs:
    teacher_id = matrix.teacher_name("none", run.labeling, run.split_percent, 0, run.task)
    row = results.read_row(ctx.workdir, run.run_id)
    if row.get("status") != "ok":
      raise ValueError(f"demo teacher {teacher_id} (run {run.run_id}) failed: {row.get('error')}")
    source = ctx.workdir / results.RUNS / run.run_id / executor.CHECKPOINT
    digest = provenance.file_digest(source)
    if lists_file(entries.get(teacher_id), zoo, digest):
      continue  # Listed, and the file is the run's checkpoint.
    fileio.atomic_write(zoo / f"{teacher_id}.keras", lambda tmp: shutil.copyfile(source, tmp))
    entries[teacher_id] = teachers_lib.TeacherEntry(
        teacher_id=teacher_id, encoder="none", encoder_optimizer="", labeling=run.labeling,
        split_percent=run.split_percent, path=f"{teacher_id}.keras", output="logits",
        arch=run.arch, provenance={"source_run": run.run_id, "digest": digest})
    teachers_lib.write_zoo(zoo, list(entries.values()))
  results.consolidate(ctx.workdir)
  return list(entries.values())


def lists_file(entry: teachers_lib.TeacherEntry | None, zoo_dir: pathlib.Path,
               digest: str) -> bool:
  """Whether the zoo lists `entry` with a file whose content has `digest` (a run's
  checkpoint, published there)."""
  if entry is None:
    return False
  path = entry.resolve(zoo_dir)
  return path.is_file() and provenance.file_digest(path) == digest


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
