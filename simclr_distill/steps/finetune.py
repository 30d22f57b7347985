"""Stage 2: fine-tune pretrained encoders into the teacher zoo that stage 3 reads.

  python -m stages.finetune --preset=demo --workdir=results/study_demo

Each encoder (`W/pretrain/<name>/simclr.keras` from stage 1, or `--encoder=NAME:checkpoint=F`)
gets the study's head (`teacher_net`), then trains on every labelling scheme, split and seed
like every other run (`training.loop`), early-stopped on validation with the best weights
restored. Finished teachers are copied into the zoo (`<zoo>/<teacher_id>.keras`) and listed in
its `manifest.csv` with their provenance: the run, the pretraining checkpoint and its digest,
the freeze, the seed, the best epoch and the test F1.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
from typing import Sequence

from simclr_distill import fileio, matrix, provenance, results, teacher_net
from simclr_distill import teachers as teachers_lib
from simclr_distill.data import source
from simclr_distill.steps import pretrain
from simclr_distill.steps import zoo as zoo_lib
from simclr_distill.study_config import StudyConfig
from simclr_distill.training import context, loop, runtime

log = logging.getLogger(__name__)

ZOO = "zoo"


def run(cfg: StudyConfig, *, zoo_dir: str | pathlib.Path | None = None,
        safe_mode: bool = True) -> pathlib.Path:
  """Stage 2 alone: finds the study's pretrained encoders (stage 1 must have finished them;
  nothing is pretrained here) and fine-tunes them into the zoo. Returns the zoo directory."""
  data = source.open_data(cfg.distill)
  encoders = pretrain.pretrain_encoders(
      cfg, data, runtime.strategy_of(cfg.distill), train=False)
  return finetune_teachers(cfg, encoders, zoo_dir=zoo_dir, safe_mode=safe_mode)


def finetune_teachers(cfg: StudyConfig, encoders: Sequence[teacher_net.Encoder], *,
                      zoo_dir: str | pathlib.Path | None = None, safe_mode: bool = True,
                      only: str | None = None) -> pathlib.Path:
  """Stage 2: fine-tunes every encoder on every split (this shard's share) into the zoo.

  Args:
    only: a run filter (default: `cfg.distill.only`).

  Returns the zoo directory. Finished runs are (re)published, so an interrupted stage never
  leaves a trained teacher out of the manifest.
  """
  zoo = pathlib.Path(zoo_dir or cfg.workdir / ZOO)
  zoo.mkdir(parents=True, exist_ok=True)
  ctx = context.make_context(cfg.distill, safe_mode=safe_mode,
                             encoders={e.name: e for e in encoders})
  runs = matrix.select(matrix.finetune_matrix(cfg.distill, cfg.finetune, encoders,
                                              ctx.data.fingerprint()),
                       only=cfg.distill.only if only is None else only,
                       shard_index=cfg.distill.shard_index, num_shards=cfg.distill.num_shards)
  by_name = {e.name: e for e in encoders}

  def publish(run, row):
    if row["status"] == "ok":
      publish_teacher(zoo, run, row, ctx.workdir / row["checkpoint"], by_name[run.encoder])

  loop.train_runs(runs, ctx, "finetune", after=publish)
  listed = {e.provenance.get("source_run"): e for e in teachers_lib.read_zoo(zoo)} if (
      zoo / teachers_lib.MANIFEST).is_file() else {}
  for run in runs:
    # Finished before a kill but not yet listed, or listed with a file that is not the run's
    # checkpoint (replaced, corrupted, or published by an earlier version of the run): list it.
    if not results.is_done(ctx.workdir, run.run_id):
      continue
    row = results.read_row(ctx.workdir, run.run_id)
    if row.get("status") == "ok" and not zoo_lib.lists_file(
        listed.get(run.run_id), zoo, provenance.file_digest(ctx.workdir / row["checkpoint"])):
      publish(run, row)
  return zoo


def publish_teacher(zoo_dir: str | pathlib.Path, run, row: dict, checkpoint: pathlib.Path,
                    encoder: teacher_net.Encoder) -> teachers_lib.TeacherEntry:
  """Copies a finished stage-2 run's model into the zoo and lists it, with its provenance."""
  zoo_dir = pathlib.Path(zoo_dir)
  tid = run.axes()["teacher_id"]
  with fileio.atomic_path(zoo_dir / f"{tid}.keras", suffix=".keras") as tmp:
    shutil.copyfile(checkpoint, tmp)
  entry = teachers_lib.TeacherEntry(
      teacher_id=tid, encoder=run.encoder, encoder_optimizer=run.encoder_optimizer,
      labeling=run.labeling, split_percent=run.split_percent, path=f"{tid}.keras",
      output="logits", arch=run.arch, provenance={
          "source_run": run.run_id, "digest": provenance.file_digest(zoo_dir / f"{tid}.keras"),
          # Relative to the zoo's parent (the study's workdir), so a moved workdir stays whole.
          "pretrain_checkpoint": fileio.relative_to(encoder.checkpoint, zoo_dir.parent)
                                 if encoder.checkpoint else "",
          "pretrain_digest": run.encoder_digest,
          "freeze": run.freeze, "seed": str(run.seed), "best_epoch": str(row.get("best_epoch", "")),
          "test_f1": f"{row.get('f1', float('nan')):.4f}", "code_version": row.get("code_version", ""),
          "created_at": row.get("finished_at", "")})
  previous = {e.teacher_id: e for e in teachers_lib.read_zoo(zoo_dir)} if (
      zoo_dir / teachers_lib.MANIFEST).is_file() else {}
  if tid in previous and previous[tid].provenance.get("source_run", run.run_id) != run.run_id:
    log.warning("zoo %s: teacher %s (from run %s) is replaced by run %s; use another --zoo_dir "
                "to keep teachers of other settings", zoo_dir, tid,
                previous[tid].provenance.get("source_run"), run.run_id)
  teachers_lib.add_to_zoo(zoo_dir, [entry])
  return entry
