"""The results table: one row per run, its schema, its store and its queries.

Each finished run writes its own row as `runs/<run_id>/result.json` (atomically, after its
checkpoint and predictions), so runs and shards finishing at the same time never overwrite
each other and a run id can only have one row. `results.parquet` and `results.csv` in the
workdir are derived: rebuilt from the row files under a file lock, written atomically, and
always rebuildable with `consolidate`.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from simclr_distill import fileio

SCHEMA_VERSION = 1
RUNS = "runs"
ROW_FILE = "result.json"
TABLE_PARQUET = "results.parquet"
TABLE_CSV = "results.csv"
LOCK = ".results.lock"
# A stage-1 probe's validation predictions, in its run directory (written by `probe`, read by
# `stats`): named here, with the rest of a workdir's layout, so the reader needs no probe code.
PROBE_PREDICTIONS = "probe_predictions.parquet"

# The study's columns first (distill_results.csv), then what a reproduction needs to know.
STUDY_COLUMNS = ("model", "labeling", "split_percent", "arch", "loss", "tp", "fp", "tn", "fn",
                 "accuracy", "precision", "recall", "auc", "f1", "f0.5")
COLUMNS = STUDY_COLUMNS + (
    "run_id", "stage", "status", "error", "protocol", "task", "teacher_id", "encoder",
    "encoder_optimizer", "freeze", "init", "method", "teacher_mode", "teacher_members",
    "ensemble_combine", "generation", "root_teacher_id", "augment", "mixup", "pool_balance",
    "student_optimizer", "learning_rate", "schedule", "loss_kind", "temperature", "alpha",
    "student_classes", "epochs_run", "best_epoch", "selected_epoch", "select", "monitor",
    "max_epochs", "batch_size", "replicas", "seed", "steps_per_epoch", "dtype_policy", "jit_compile",
    "steps_per_execution", "macro_f1", "agreement", "teacher_kl",
    "teacher_f1", "last_f1", "seen_accuracy", "unseen_accuracy", "class_accuracy",
    "test_examples", "train_examples", "val_examples", "collapsed", "probe_knn_accuracy",
    "probe_linear_accuracy", "pretrain_loss", "pretrain_chance_loss",
    "wall_seconds", "images_per_second", "checkpoint", "dataset", "preset", "code_version",
    "finished_at", "schema_version")
GROUP_METRICS = ("f1", "f0.5", "auc", "accuracy", "agreement", "teacher_kl")
# What a row derived from finished runs (the ensemble of a chain's generations) takes from the
# run it is built on: how the runs were made, not what they measured.
SETTING_COLUMNS = (
    "protocol", "task", "model", "labeling", "split_percent", "arch", "encoder", "encoder_optimizer",
    "teacher_mode", "teacher_members", "ensemble_combine", "augment", "mixup", "pool_balance",
    "student_optimizer", "learning_rate", "schedule", "loss_kind", "temperature", "alpha",
    "student_classes", "max_epochs", "batch_size", "replicas", "seed", "test_examples",
    "train_examples", "dataset", "preset", "code_version")


def run_row(run, *, epochs_run: int, best_epoch: int, selected_epoch: int, selected: bool,
            batch_size: int, replicas: int, steps_per_epoch: int, train_examples: int,
            test_examples: int, dtype_policy: str, jit_compile: bool, steps_per_execution: int,
            preset: str, code_version: str, images_per_second: float) -> dict[str, Any]:
  """The results row of a trained run (a `matrix.RunSpec`), before its scores: what the run
  is (its settings, as the table's columns name them) and how its training went.

  Args:
    run: the run.
    epochs_run, best_epoch, selected_epoch: epochs trained, the best on the monitor, and the
      one whose weights were kept and scored.
    selected: whether model selection ran (validated runs); else the last epoch is kept.
    batch_size: the global batch; replicas, steps_per_epoch, train_examples, test_examples,
      dtype_policy, jit_compile, steps_per_execution, preset, code_version, images_per_second:
      as measured or configured for this run.
  """
  axes = run.axes()
  teacher = run.teacher
  distilling = run.stage == "distill"
  return {
      "run_id": run.run_id, "stage": run.stage, "protocol": run.protocol, "task": run.task,
      "model": axes["encoder"], "labeling": run.labeling, "split_percent": run.split_percent,
      "arch": run.display_arch, "teacher_id": axes["teacher_id"], "encoder": axes["encoder"],
      "encoder_optimizer": axes["encoder_optimizer"], "freeze": run.freeze, "init": run.init,
      "method": run.method, "teacher_mode": run.teacher_mode if teacher else "",
      "teacher_members": "+".join(m.teacher_id for m in teacher.members) if teacher else "",
      "ensemble_combine": teacher.combine if teacher else "",
      "generation": run.generation if distilling else None,
      "root_teacher_id": run.root_teacher_id, "augment": run.augment, "mixup": run.mixup,
      "pool_balance": run.pool_balance, "student_optimizer": run.optimizer,
      "learning_rate": run.learning_rate, "schedule": run.schedule,
      "loss_kind": run.loss.kind if distilling else "supervised",
      "temperature": run.loss.temperature, "alpha": run.loss.alpha,
      "student_classes": ",".join(map(str, run.student_classes)),
      "epochs_run": epochs_run, "best_epoch": best_epoch, "selected_epoch": selected_epoch,
      "select": run.select if selected else "last", "monitor": run.monitor if selected else "",
      "max_epochs": run.epochs, "batch_size": batch_size, "replicas": replicas, "seed": run.seed,
      "steps_per_epoch": steps_per_epoch, "dtype_policy": dtype_policy, "jit_compile": jit_compile,
      "steps_per_execution": steps_per_execution, "train_examples": train_examples,
      "test_examples": test_examples, "dataset": run.dataset, "preset": preset,
      "code_version": code_version, "images_per_second": images_per_second,
  }


def row_path(workdir: str | pathlib.Path, run_id: str) -> pathlib.Path:
  return pathlib.Path(workdir) / RUNS / run_id / ROW_FILE


def is_done(workdir: str | pathlib.Path, run_id: str) -> bool:
  return row_path(workdir, run_id).is_file()


def read_row(workdir: str | pathlib.Path, run_id: str) -> dict[str, Any]:
  return fileio.read_json(row_path(workdir, run_id))


def write_row(workdir: str | pathlib.Path, row: Mapping[str, Any]) -> None:
  """Writes one run's row (its presence marks the run finished).

  Raises:
    ValueError: if the row has columns outside the schema (a programming error).
  """
  extra = sorted(set(row) - set(COLUMNS) - {"provenance"})  # Provenance stays out of tables.
  if extra:
    raise ValueError(f"result row has columns outside the schema: {', '.join(extra)}")
  fileio.write_json(row_path(workdir, row["run_id"]), {**row, "schema_version": SCHEMA_VERSION})


def read_rows(workdirs: Iterable[str | pathlib.Path], *, absolute: bool = True) -> pd.DataFrame:
  """All row files under the workdirs as a DataFrame in schema column order.

  Rows record their checkpoint relative to their workdir (so a copied or moved workdir stays
  whole); with `absolute` it is resolved against the workdir it was read from.

  Raises:
    ValueError: if a row was written by a newer schema than this code reads.
  """
  rows = []
  for workdir in workdirs:
    for path in sorted(pathlib.Path(workdir).glob(f"{RUNS}/*/{ROW_FILE}")):
      row = fileio.read_json(path)
      if row.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"{path} has results schema {row['schema_version']}, newer than this "
                         f"code's {SCHEMA_VERSION}; upgrade simclr_distill to read it")
      if absolute:
        row["checkpoint"] = resolve_checkpoint(row.get("checkpoint"), workdir)
      rows.append(row)
  frame = pd.DataFrame(rows, columns=list(COLUMNS))
  return frame.sort_values(["stage", "run_id"], kind="stable").reset_index(drop=True)


def resolve_checkpoint(checkpoint: Any, root: str | pathlib.Path) -> Any:
  """A row's checkpoint path made absolute against `root` (its workdir), when relative."""
  if not isinstance(checkpoint, str) or not checkpoint or pathlib.Path(checkpoint).is_absolute():
    return checkpoint
  return str(pathlib.Path(root).absolute() / checkpoint)


def consolidate(workdir: str | pathlib.Path) -> pd.DataFrame:
  """Rebuilds `results.parquet` and `results.csv` from the row files (checkpoint paths
  relative to the workdir, as the rows record them); returns the table, paths resolved."""
  workdir = pathlib.Path(workdir)
  with fileio.file_lock(workdir / LOCK):
    frame = read_rows([workdir], absolute=False)
    fileio.atomic_write(workdir / TABLE_PARQUET, lambda tmp: frame.to_parquet(tmp, index=False))
    fileio.atomic_write(workdir / TABLE_CSV, lambda tmp: frame.to_csv(tmp, index=False))
  frame["checkpoint"] = [resolve_checkpoint(c, workdir) for c in frame["checkpoint"]]
  return frame


def load_table(paths: Sequence[str | pathlib.Path]) -> pd.DataFrame:
  """Loads results from workdirs (their row files) or table files (.parquet/.csv).

  Raises:
    FileNotFoundError: for a path that is neither.
  """
  frames = []
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      frames.append(read_rows([path]))
    elif path.suffix in (".parquet", ".csv"):
      frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
      if "checkpoint" in frame:  # A workdir's table: paths relative to the workdir it is in.
        frame["checkpoint"] = [resolve_checkpoint(c, path.parent) for c in frame["checkpoint"]]
      frames.append(frame)
    else:
      raise FileNotFoundError(f"{path} is not a workdir, a .parquet or a .csv results table")
  return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))


def query(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
  """Filters with a pandas query; backquote names like `f0.5`.

  Raises:
    ValueError: naming the expression and the columns when it does not evaluate.
  """
  if not expression:
    return frame
  try:
    return frame.query(expression)
  except Exception as e:  # pandas raises many types for a bad expression.
    raise ValueError(f"--filter {expression!r} failed ({type(e).__name__}: {e}); columns: "
                     f"{', '.join(frame.columns)}") from None


# What a summary keeps apart unless asked otherwise: rows differing in one of these were made
# under different conditions, and their mean would describe none of them.
KEEP_APART = ("stage", "protocol", "task", "labeling", "arch", "method")


def summary_keys(frame: pd.DataFrame, keys: Sequence[str]) -> list[str]:
  """`keys`, then each column of KEEP_APART that takes several values among the finished rows:
  the default grouping of closing summaries, so none averages across protocols, schemes,
  architectures or teaching methods."""
  ok = frame[frame["status"] == "ok"] if "status" in frame else frame
  out = list(keys)
  for column in KEEP_APART:
    if column in ok and column not in out and ok[column].fillna("").astype(str).nunique() > 1:
      out.append(column)
  return out


def summarize(frame: pd.DataFrame, group_by: Sequence[str],
              metrics: Sequence[str] = GROUP_METRICS) -> pd.DataFrame:
  """Mean, std and count of each metric per group (finished runs only).

  Raises:
    ValueError: for a group or metric column the table does not have.
  """
  missing = [c for c in (*group_by, *metrics) if c not in frame.columns]
  if missing:
    raise ValueError(f"no column(s) {', '.join(missing)}; columns: {', '.join(frame.columns)}")
  ok = frame[frame["status"] == "ok"] if "status" in frame else frame
  numeric = ok[list(group_by) + list(metrics)].copy()
  for m in metrics:
    numeric[m] = pd.to_numeric(numeric[m], errors="coerce")
  return numeric.groupby(list(group_by), dropna=False).agg(["mean", "std", "count"])
