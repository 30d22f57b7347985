"""Stage 3 end to end: data -> teacher zoo -> teacher labels -> student matrix -> results.

  python -m stages.distill --preset=smoke --workdir=W
  python -m stages.distill --preset=paper --data_dir=D --teacher_zoo=Z --workdir=W \\
      --num_shards=8 --shard_index=$TASK_ID

Every step skips what is already done, so rerunning a command resumes it, and a finished
study reruns in seconds without training anything:
  * data: the prepared directory (the digits demo is prepared into `<workdir>/data`);
  * teachers: a zoo manifest (`--teacher_zoo`), or the demo zoo (`steps.zoo`);
  * labels: each teacher's logits over every example, cached once in `<workdir>/labels`;
  * runs: each run of the matrix writes `<workdir>/runs/<run_id>/` and its results row;
  * the table `<workdir>/results.{parquet,csv}` is rebuilt after each run.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pandas as pd

from simclr_distill import augment, fileio, matrix, models, results, scoring
from simclr_distill import teachers as teachers_lib
from simclr_distill.config import DistillConfig
from simclr_distill.steps import label, zoo
from simclr_distill.training import context, executor, loop
from simclr_distill.training.context import RunContext


def run(config: DistillConfig, *, safe_mode: bool = True,
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
  ctx, runs, todo = _plan(config, safe_mode=safe_mode, require_match=require_match)
  # Only the runs that train need their teachers: a rerun with nothing to do loads none.
  label.prepare_teachers(config, ctx, [r for r in todo if r.stage == "distill"])
  loop.train_runs(runs, ctx, "distill", todo=todo)
  chains = _grow_generations(config, ctx, [r for r in runs if r.stage == "distill"])
  for chain in chains:
    if len(chain) > 1:
      generation_ensemble(chain, ctx, config.teacher.combine)
  return results.consolidate(config.workdir)


def label_teachers(config: DistillConfig, *, safe_mode: bool = True) -> None:
  """Stage 3's labelling alone: one pass of each teacher that this shard's unfinished runs
  read from the cache (each pass claimed: workers started together label a teacher once),
  and every other teacher they need loaded and checked. `run` then finds them labelled."""
  ctx, _, todo = _plan(config, safe_mode=safe_mode, require_match=False)
  label.prepare_teachers(config, ctx, [r for r in todo if r.stage == "distill"])


def _plan(config: DistillConfig, *, safe_mode: bool, require_match: bool):
  """The context, this shard's runs and those of them still to train."""
  pathlib.Path(config.workdir).mkdir(parents=True, exist_ok=True)
  ctx = context.make_context(config, safe_mode=safe_mode)
  _check_students(config, ctx)
  teachers = zoo.load_zoo(config, ctx)
  if not zoo.selected_teachers(config, teachers):
    raise ValueError(f"no teacher in {ctx.zoo_dir} matches schemes {config.data.schemes}, "
                     f"split percents {config.data.split_percents} and encoders "
                     f"{config.teacher.encoders or 'any'} (and no ensemble can be formed)")
  runs = matrix.select(matrix.build_matrix(config, teachers, ctx.data.fingerprint()),
                       only=config.only, shard_index=config.shard_index,
                       num_shards=config.num_shards, require_match=require_match)
  return ctx, runs, loop.plan_runs(runs, ctx, "distill")


def _check_students(config: DistillConfig, ctx: RunContext) -> None:
  """Refuses, before anything trains (the demo zoo included), architectures too small for
  (or unknown to) the data, an unknown augmentation policy and classes the data lacks."""
  for arch in config.student.archs:
    if arch != matrix.SAME_ARCH:
      models.check_input_size(arch, ctx.data.image_shape)
  if config.teacher.augment != "none":
    augment.POLICIES.get(config.teacher.augment)  # An unknown policy fails here, listing them.
  too_big = [c for c in config.student.classes if c >= ctx.data.num_classes]
  if too_big:
    raise ValueError(f"--student_classes names class(es) {too_big}; the data has classes "
                     f"0-{ctx.data.num_classes - 1}")


def _grow_generations(config: DistillConfig, ctx: RunContext, firsts) -> list[list[matrix.RunSpec]]:
  """Trains generations 2.. of born-again distillation (each finished run teaches its child);
  returns each chain of generations, starting from the runs `firsts` of generation 1."""
  chains = [[r] for r in firsts]
  for generation in range(2, config.student.generations + 1):
    # Each shard grows its own chains, so shards never wait for each other.
    children = []
    for chain in chains:
      parent = chain[-1]
      if parent.generation == generation - 1 and _finished_ok(ctx, parent):
        child = matrix.next_generation(parent, str(ctx.workdir / results.RUNS / parent.run_id /
                                                    executor.CHECKPOINT))
        chain.append(child)
        children.append(child)
    if not children:
      break
    todo = loop.plan_runs(children, ctx, f"distill generation {generation}")
    label.prepare_teachers(config, ctx, todo)
    loop.train_runs(children, ctx, f"distill generation {generation}", todo=todo)
  return chains


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
  frames = [pd.read_parquet(ctx.workdir / results.RUNS / r.run_id / executor.PREDICTIONS)
            for r in chain]
  first = frames[0]
  frames = [f.set_index("id").loc[first["id"]].reset_index() for f in frames]
  frame = first[["id", "label"]].copy()
  if last.task == "binary":
    logits = [f["student_logit"].to_numpy()[:, None] for f in frames]
    combined = np.asarray(teachers_lib.combine_logits(logits, combine))[:, 0]
    frame["student_logit"] = combined
    frame["student_prob"] = scoring.probabilities(combined, "binary")
    frame["teacher_prob"] = first["teacher_prob"]
  else:
    columns = [c for c in first.columns if c.startswith("student_prob_")]
    probs = np.mean([f[columns].to_numpy() for f in frames], axis=0)  # Saved as probabilities.
    frame["student_pred"] = probs.argmax(-1)
    frame[columns] = probs
    for c in [c for c in first.columns if c.startswith("teacher_")]:
      frame[c] = first[c]
  base = results.read_row(ctx.workdir, last.run_id)
  row = {k: base.get(k) for k in results.SETTING_COLUMNS}
  root = chain[0].root_teacher_id
  row.update(scoring.score(frame, last.task, last.student_classes), run_id=run_id,
             stage="generation_ensemble", status="ok", error="", generation=len(chain),
             teacher_id=root, root_teacher_id=root,
             teacher_members=" ".join(r.run_id for r in chain), ensemble_combine=combine,
             method=f"{chain[0].method} / ensemble of {len(chain)} generations")
  run_dir = ctx.workdir / results.RUNS / run_id
  run_dir.mkdir(parents=True, exist_ok=True)
  fileio.atomic_write(run_dir / executor.PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
  row["wall_seconds"] = time.perf_counter() - start
  row["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
  results.write_row(ctx.workdir, row)
  return row
