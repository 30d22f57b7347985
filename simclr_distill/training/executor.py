"""One run, start to finish. `fit_run` is the resumable fit every stage's training shares
(stage 1's SimCLR, stage 2's teachers, stage 3's students, the baselines): step checkpoints, a
kill resumed exactly, history, model selection, and files written by the chief only.
`execute_run` is a finetune, distill or baseline run: data, model, `fit_run`, scores, files
and the results row.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import time
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from simclr_distill import checkpointing, fileio, labelling, provenance, results, scoring
from simclr_distill import selection as selection_lib
from simclr_distill.matrix import RunSpec
from simclr_distill.training import context, networks, progress, runtime, summaries
from simclr_distill.training.context import RunContext
from simclr_distill.training.rundata import RunDatasets

log = logging.getLogger(__name__)

CHECKPOINT = "student.keras"
PREDICTIONS = "predictions.parquet"
CONFIG = "config.json"
HISTORY = "history.csv"
BACKUP = "backup"
SELECTION = "selection"


class ProgressLogger(keras.callbacks.Callback):
  """One line per epoch with its metrics, at DEBUG level (--verbosity=1 shows them): a study
  trains hundreds of short runs, whose epoch lines would bury the rest. Long epochs show
  their progress at the default level (`progress.EpochProgress`)."""

  def __init__(self, label: str, epochs: int):
    super().__init__()
    self.label, self.epochs = label, epochs

  def on_epoch_end(self, epoch, logs=None):
    if not log.isEnabledFor(logging.DEBUG):
      return
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items())
                      if isinstance(v, (int, float)) and k != "learning_rate")
    log.debug("%s epoch %d/%d: %s", self.label, epoch + 1, self.epochs, shown)


@dataclasses.dataclass(frozen=True)
class Selecting:
  """Model selection on validation: keep `network`'s weights of the best epoch on `monitor`
  (or the last, `select="last"`), stopping after `patience` epochs without improvement."""

  network: keras.Model
  monitor: str
  patience: int
  select: str


@dataclasses.dataclass
class Fit:
  """What `fit_run` did: the per-epoch history, the step checkpoint (delete it once the run's
  results are safe on disk: until then a kill resumes the run), the model selection, if any,
  and the seconds `fit` took in this process."""

  history: dict
  checkpoint: checkpointing.StepCheckpoint
  selection: selection_lib.ModelSelection | None
  seconds: float

  @property
  def epochs_run(self) -> int:
    return self.checkpoint.position.epoch

  @property
  def nonfinite(self) -> bool:
    """Whether the training loss became NaN or inf (the run stopped there)."""
    return self.checkpoint.position.nonfinite or not np.isfinite(
        np.asarray(self.history.get("loss", []), np.float64)).all()

  @property
  def best_epoch(self) -> int:
    chosen = self.selection.best_epoch if self.selection is not None else None
    return chosen or self.epochs_run

  def selected_epoch(self, select: str) -> int:
    """The epoch whose weights the model holds now."""
    return self.best_epoch if self.selection is not None and select == "best" else self.epochs_run


def fit_run(run_dir: pathlib.Path, model: keras.Model, variables: Callable[[], list],
            train: Callable[[int], tf.data.Dataset], *, label: str, epochs: int,
            steps_per_epoch: int, policy: checkpointing.CheckpointPolicy, writer: bool,
            validation: tf.data.Dataset | None = None,
            selecting: Selecting | None = None) -> Fit:
  """Fits a compiled, built `model` for `epochs`, resuming where a killed attempt stopped.

  Files in `run_dir`, written only by the writer (a single process, or a cluster's chief;
  the other workers take part in every step but write nothing): `history.csv` (one line per
  epoch, as it goes), `tensorboard/` (the same per epoch, and the learning rate: see
  `summaries`), the step checkpoint (`checkpointing.StepCheckpoint`: every
  `policy` steps or minutes and every epoch end) and, with `selecting`, `selection/` (the best
  epoch so far and its weights). A fresh start (no step checkpoint) first removes whatever an
  earlier attempt left of them; a resumed one, the epochs its history and event files logged
  after the checkpoint.

  Args:
    run_dir: the run's directory.
    model: the compiled model to fit, with every variable built (a restore assigns them).
    variables: the variables a checkpoint saves (`checkpointing.training_variables`).
    train: `train(skip_batches)` gives the training stream less its first batches.
    label: names the run in progress lines.
    validation: evaluated after each epoch (needed by `selecting`).
    selecting: model selection on `validation`.
  """
  checkpoint = checkpointing.StepCheckpoint(run_dir, variables, policy, writer=writer)
  saved = checkpoint.saved_position()
  board = run_dir / summaries.DIRECTORY
  if writer:
    if saved is None:  # A fresh start: nothing of an earlier attempt may survive.
      shutil.rmtree(run_dir / SELECTION, ignore_errors=True)
      shutil.rmtree(run_dir / BACKUP, ignore_errors=True)  # Keras backups of older versions.
      shutil.rmtree(board, ignore_errors=True)
    else:
      summaries.align_events(board, saved, steps_per_epoch)
    fileio.align_history(run_dir / HISTORY, saved.epoch if saved else None)
  # Both log an epoch before its checkpoint is saved (the last callback), never after it.
  callbacks: list[keras.callbacks.Callback] = (
      [keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
       summaries.TensorBoard(board)] if writer else [])
  selection = None
  if selecting is not None:  # Its state is saved before the checkpoint of the same epoch.
    selection = selection_lib.ModelSelection(
        selecting.network, monitor=selecting.monitor, patience=selecting.patience,
        select=selecting.select, state_dir=run_dir / SELECTION, writer=writer)
    selection.defer_finish = True  # Once, after the last of a resumed run's `fit` calls.
    callbacks.append(selection)
  callbacks += [ProgressLogger(label, epochs),
                progress.EpochProgress(label, epochs, steps_per_epoch),
                keras.callbacks.TerminateOnNaN()]
  start = time.perf_counter()
  history = checkpointing.resumable_fit(
      model, train, checkpoint=checkpoint, epochs=epochs, steps_per_epoch=steps_per_epoch,
      validation_data=validation, callbacks=callbacks)
  if selection is not None:
    selection.finish()
  return Fit(history, checkpoint, selection, time.perf_counter() - start)


def finish_run(run_dir: pathlib.Path, fit: Fit, writer: bool) -> None:
  """Removes a finished run's resumption state. Only once its results are on disk: a kill
  before then leaves what a rerun needs to finish identically."""
  fit.checkpoint.delete()
  if writer:
    shutil.rmtree(run_dir / SELECTION, ignore_errors=True)


def execute_run(run: RunSpec, ctx: RunContext) -> dict[str, Any]:
  """Trains, saves and scores one run; writes its files and returns its results row.

  Files in `<workdir>/runs/<run_id>/`: `student.keras` (loads with plain
  `keras.models.load_model`), `predictions.parquet` (test-split id, label, teacher and student
  probabilities), `config.json` (resolved settings), `history.csv`, `tensorboard/` (its
  event files: `summaries`), and last `result.json`; while training, the state `fit_run`
  resumes from.
  """
  run_dir = ctx.workdir / results.RUNS / run.run_id
  run_dir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  keras.utils.set_random_seed(run.seed)
  distilling = run.stage == "distill"
  offline = distilling and run.teacher_mode in ("offline", "fixed")
  cached = None
  if offline or (distilling and run.pool_balance == "teacher"):
    cached = labelling.load_teacher_logits(ctx.labels_dir, run.teacher)
  inputs = context.run_inputs(run, ctx)  # What this run reads, as it starts.
  datasets = RunDatasets(run, ctx, cached, teacher_in_targets=offline)
  steps = datasets.steps_per_epoch()
  _warn_if_batch_exceeds_data(run, datasets)
  distiller, student, teacher, key = networks.build_run_model(run, ctx, steps, offline=offline)
  # One forward pass builds the wrapper, so every variable exists before a restore.
  distiller(tf.zeros((1, *ctx.data.image_shape)), training=False)
  fit = fit_run(
      run_dir, distiller, lambda: checkpointing.training_variables(distiller, student),
      datasets.train, label=run.run_id, epochs=run.epochs, steps_per_epoch=steps,
      policy=ctx.checkpoint, writer=ctx.is_writer,
      validation=datasets.evaluation(datasets.val_ids) if run.early_stopping else None,
      selecting=Selecting(student, run.monitor, run.patience, run.select)
      if run.early_stopping else None)
  row = results.run_row(
      run, epochs_run=fit.epochs_run, best_epoch=fit.best_epoch,
      selected_epoch=fit.selected_epoch(run.select), selected=fit.selection is not None,
      batch_size=datasets.global_batch(), replicas=ctx.replicas, steps_per_epoch=steps,
      train_examples=len(datasets.train_ids), test_examples=len(datasets.test_ids),
      dtype_policy=ctx.precision, jit_compile=ctx.jit_compile,
      steps_per_execution=runtime.steps_per_execution(ctx.steps_per_execution, steps),
      preset=ctx.preset,
      code_version=provenance.code_version(),
      images_per_second=fit.checkpoint.steps_trained * datasets.global_batch()
      / max(fit.seconds, 1e-9))
  if fit.nonfinite:
    row.update(status="failed", error=f"training loss became non-finite at epoch "
               f"{fit.epochs_run}; lower the learning rate or check the inputs and teacher logits")
  else:
    row.update(_score_and_save(run, ctx, run_dir, fit, student, datasets, teacher))
  if ctx.is_writer:
    fileio.write_json(run_dir / CONFIG, _resolved_config(run, ctx))
  row["wall_seconds"] = time.perf_counter() - start
  row["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
  if ctx.is_writer:
    results.write_row(ctx.workdir, {**row, provenance.KEY: provenance.record(
        inputs, run_dir, (CHECKPOINT, PREDICTIONS), row["code_version"])})
  finish_run(run_dir, fit, ctx.is_writer)
  ctx.keep_warm(key, distiller)
  if row.get("checkpoint"):  # On disk relative to the workdir; in this process, where it is.
    row["checkpoint"] = str((run_dir / CHECKPOINT).absolute())
  return row


def _score_and_save(run: RunSpec, ctx: RunContext, run_dir: pathlib.Path, fit: Fit,
                    student: keras.Model, datasets: RunDatasets, teacher) -> dict[str, Any]:
  """Scores the selected model on the test list (and the last epoch's, when selection kept
  another), checks it for collapse, and saves it and its predictions (the writer only: every
  worker predicts, a collective). Returns the row's score columns."""
  frame = scoring.predict_test(student, datasets, teacher)
  out = {**scoring.score(frame, run.task, run.student_classes), "status": "ok", "error": ""}
  out["collapsed"] = scoring.collapsed_lists(student, datasets, frame)
  if out["collapsed"]:
    log.warning("%s predicts a single class on its whole %s list: the model collapsed "
                "(flagged in its row's `collapsed` column)", run.run_id,
                out["collapsed"].replace("+", " and "))
  out["last_f1"] = out.get("f1")
  if fit.selected_epoch(run.select) != fit.epochs_run and fit.selection.last_weights is not None:
    # Scored at the last epoch too, so what model selection bought can be measured.
    kept = student.get_weights()
    student.set_weights(fit.selection.last_weights)
    out["last_f1"] = scoring.score(scoring.predict_test(student, datasets, teacher),
                                   run.task).get("f1")
    student.set_weights(kept)
  if ctx.is_writer:
    with fileio.atomic_path(run_dir / CHECKPOINT, suffix=".keras") as tmp:
      student.save(tmp)
    fileio.atomic_write(run_dir / PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
  out["checkpoint"] = f"{results.RUNS}/{run.run_id}/{CHECKPOINT}"  # Relative to the workdir.
  return out


def _resolved_config(run: RunSpec, ctx: RunContext) -> dict[str, Any]:
  """What `config.json` records: the run's settings and id, and the data it read, by path
  relative to the workdir (a moved workdir stays whole)."""
  return {"run": run.settings(), "run_id": run.run_id, "replicas": ctx.replicas,
          "data_dir": fileio.relative_to(ctx.data.root, ctx.workdir),
          "image_shape": list(ctx.data.image_shape),
          "preprocessing": ctx.data.manifest.get("transform", "")}


_batch_warnings: set[tuple[str, int, int]] = set()  # (stage, batch, examples) warned of.


def _warn_if_batch_exceeds_data(run: RunSpec, datasets: RunDatasets) -> None:
  """Warns when a run's global batch exceeds its training set: once per stage, batch and
  training-set size in a process (the runs of one split share it)."""
  size, batch = len(datasets.train_ids), datasets.global_batch()
  if batch > size and (run.stage, batch, size) not in _batch_warnings:
    _batch_warnings.add((run.stage, batch, size))
    log.warning("%s: the global batch (%d) is larger than the training set (%d examples), so "
                "every step repeats each example about %d times and costs as much; lower "
                "--batch_size to at most %d (said once for every %s run of this batch and "
                "training-set size)", run.run_id, batch, size, batch // size,
                size // datasets.ctx.replicas or 1, run.stage)
