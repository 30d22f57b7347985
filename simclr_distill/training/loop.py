"""A stage's runs: which must train (never finished, corrupt, or stale), each claimed while it
trains so processes sharing a workdir never train one twice, and the results table rebuilt
after each. Finetune, distill, baseline and the demo zoo all train through `train_runs`.
"""

from __future__ import annotations

import contextlib
import logging
import time

from simclr_distill import fileio, matrix, provenance, results
from simclr_distill.training import context, executor, progress
from simclr_distill.training.context import RunContext

log = logging.getLogger(__name__)


def check_run(run: matrix.RunSpec, ctx: RunContext) -> provenance.Verdict:
  """Whether a run is finished and reusable: its row exists, the inputs it recorded are the
  current ones, and its checkpoint and predictions match their digests."""
  finished = results.is_done(ctx.workdir, run.run_id)
  return provenance.verdict(ctx.workdir, run.run_id,
                            context.run_inputs(run, ctx) if finished else None)


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
  `after(run, row)` runs after each new row.

  Each run is claimed while it trains, so processes sharing the workdir (shards with
  overlapping runs, or work-queue workers given the whole matrix: `--work_queue`) never train
  one twice: a run another process holds is passed over, then looked at again once this
  process's own runs are done; one whose holder died meanwhile (its claim is released with
  the process) and that no row records is trained here.
  """
  todo = plan_runs(runs, ctx, what) if todo is None else todo
  log.info("%s: %d runs in this shard, %d already finished, %d to train", what, len(runs),
           len(runs) - len(todo), len(todo))
  progress.planned("run", len(runs), finished=len(runs) - len(todo))
  start, trained = time.perf_counter(), 0
  held = todo
  while held:
    passed_over = []
    for run in held:
      row = _train_claimed(run, ctx)
      if row is None:
        passed_over.append(run)
        continue
      trained += 1
      results.consolidate(ctx.workdir)
      if after:
        after(run, row)
      left = len(todo) - trained
      log.info("[%s %d/%d] %s: %s f1=%.3f in %.1f s (%s); %d left, ETA %s", what, trained,
               len(todo), run.run_id, row["status"], row.get("f1", float("nan")),
               row["wall_seconds"], _how_it_trained(run, row), left,
               progress.duration((time.perf_counter() - start) / trained * left))
      progress.done("run", row["wall_seconds"])
    if len(passed_over) == len(held):  # All held by live processes, which will finish them.
      for run in passed_over:
        if not check_run(run, ctx).reusable:
          log.info("[%s] %s: being trained by another process; left to it", what, run.run_id)
      return
    held = passed_over


def _how_it_trained(run: matrix.RunSpec, row: dict) -> str:
  """Epochs (and early stopping's choice) and throughput of a finished run, from its row."""
  epochs = row.get("epochs_run") or 0
  text = f"{epochs}/{run.epochs} epochs"
  if epochs < run.epochs and row.get("status") == "ok":
    text += f", stopped early, best {row.get('best_epoch')}"
  rate = row.get("images_per_second")
  if rate and row.get("batch_size"):
    text += f"; {rate / row['batch_size']:.3g} steps/s, {rate:.0f} images/s"
  return text


def _train_claimed(run: matrix.RunSpec, ctx: RunContext) -> dict | None:
  """Trains `run` under its claim; returns its row, or None when another process holds it or
  has finished it meanwhile."""
  with claim_run(ctx, run) as claimed:
    if not claimed:
      return None
    verdict = check_run(run, ctx)
    if verdict.reusable:  # Finished by another process meanwhile.
      return None
    if verdict.state in ("stale", "corrupt") and ctx.is_writer:
      # Its finished files move aside; an unfinished run keeps its state and resumes.
      provenance.supersede(ctx.workdir, run.run_id)
    with ctx.data.reading():
      return executor.execute_run(run, ctx)


CLAIM = ".claim"


def claim_run(ctx: RunContext, run: matrix.RunSpec):
  """A context manager yielding whether this process holds `run`'s claim (a lock file in its
  run directory, released when the block ends or the process dies). The workers of a
  multi-worker cluster take none: they train their runs together, as one process (give such a
  cluster its own runs: a shard, --only, or a workdir of its own)."""
  if not ctx.claims:
    return contextlib.nullcontext(True)
  return fileio.try_lock(ctx.workdir / results.RUNS / run.run_id / CLAIM)
