"""Paired comparisons of groups of runs, with bootstrap intervals over test examples and seeds.

A difference between two methods printed without its uncertainty cannot be read: on a test list
of 52 digits one example moves F1 by about 0.02, and a second seed moves it as much again. Every
comparison here is between two groups of runs scored on the SAME test examples (checked by id),
so the examples are resampled jointly for both groups (a paired bootstrap), and the runs are
resampled too: jointly when the groups are paired run by run (same seeds, or the same teacher
and seed), independently within each group otherwise. The statistic is the difference of the
groups' mean metrics, and the interval is scipy's percentile bootstrap over both levels at once
(`scipy.stats.bootstrap` with one sample of example indices and one of run indices per group,
each resampled independently: a crossed two-way bootstrap).

  comparison = compare_predictions(labels, predictions_a, predictions_b, paired_runs=True)
  comparison.difference, comparison.low, comparison.high, comparison.excludes_zero

`compare_runs` does the same for rows of a results table (reading each run's saved
predictions), and `study_comparisons` asks the study's questions of a whole table: pretrained vs
random-init teachers, distilled vs baseline students, Adam vs SGD, soft vs hard targets, and the
classical semi-supervised reference, per labelling scheme and split.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from simclr_distill import results

CONFIDENCE = 0.95
RESAMPLES = 4000
METRICS = ("f1", "accuracy", "precision", "recall")
PREDICTIONS = "predictions.parquet"


# ---- Metrics of predicted labels, vectorised over resamples ------------------------------------


def _counts(predicted: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
  positive, hit = labels == 1, predicted == 1
  tp = np.sum(positive & hit, axis=-1)
  fp = np.sum(~positive & hit, axis=-1)
  fn = np.sum(positive & ~hit, axis=-1)
  return tp, fp, fn


def _ratio(num, den) -> np.ndarray:
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def metric_of(predicted: np.ndarray, labels: np.ndarray, metric: str, task: str = "binary"
              ) -> np.ndarray:
  """A metric of predicted labels along the last axis (any leading axes are batches).

  Args:
    predicted: [..., N] predicted labels (0/1 for the binary task, class ids otherwise).
    labels: [..., N] true labels, broadcastable against `predicted`.
    metric: "f1", "accuracy", "precision" or "recall" (binary, positive class 1, 0 for an
      empty denominator as `metrics.binary_metrics`), or "accuracy" for the multiclass task.

  Raises:
    ValueError: for another metric.
  """
  if metric == "accuracy":
    return np.mean(predicted == labels, axis=-1)
  if task != "binary":
    raise ValueError(f"metric {metric!r} is not resampled for the {task} task; use accuracy")
  tp, fp, fn = _counts(predicted, labels)
  if metric == "f1":
    return _ratio(2 * tp, 2 * tp + fp + fn)
  if metric == "precision":
    return _ratio(tp, tp + fp)
  if metric == "recall":
    return _ratio(tp, tp + fn)
  raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


# ---- The bootstrap ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interval:
  """A difference of group means (A - B) with its bootstrap interval."""

  mean_a: float
  mean_b: float
  difference: float
  low: float
  high: float
  confidence: float
  examples: int
  runs_a: int
  runs_b: int
  paired_runs: bool

  @property
  def excludes_zero(self) -> bool:
    return bool(self.low > 0 or self.high < 0)


def compare_predictions(labels, predictions_a, predictions_b, *, metric: str = "f1",
                        task: str = "binary", paired_runs: bool = False,
                        confidence: float = CONFIDENCE, n_resamples: int = RESAMPLES,
                        seed: int = 0) -> Interval:
  """The difference in mean `metric` between two groups of runs on the same test examples.

  Args:
    labels: [N] true labels of the test examples.
    predictions_a: [Ra, N] predicted labels of group A's runs, examples in `labels`' order.
    predictions_b: [Rb, N] the same for group B.
    metric: see `metric_of`.
    task: "binary" or "multiclass".
    paired_runs: run i of A and run i of B belong together (the same seed, or the same teacher
      and seed): they are resampled as pairs. Otherwise each group's runs are resampled on
      their own.
    confidence: the interval's coverage.
    n_resamples: bootstrap resamples.
    seed: seeds the resampling, so an interval repeats exactly.

  Returns:
    The `Interval`: group means, their difference (A - B) and its percentile interval, which
    resamples the examples (the same ones for both groups) and the runs. A group of one run
    contributes no run-to-run variation (there is none to see): say so when reporting it.

  Raises:
    ValueError: for shapes that do not match, no examples, or paired groups of unequal size.
  """
  labels = np.asarray(labels).reshape(-1)
  a = np.atleast_2d(np.asarray(predictions_a))
  b = np.atleast_2d(np.asarray(predictions_b))
  n = labels.size
  if n == 0:
    raise ValueError("no test examples to compare on")
  if a.shape[1] != n or b.shape[1] != n:
    raise ValueError(f"predictions cover {a.shape[1]} and {b.shape[1]} examples, labels {n}")
  if paired_runs and len(a) != len(b):
    raise ValueError(f"paired runs need groups of equal size; got {len(a)} and {len(b)}")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence={confidence} must be in (0, 1)")

  # Each sample is resampled on its own; a group of one run has nothing to resample.
  samples: list[np.ndarray] = [np.arange(n)]
  slot_a = slot_b = None
  if paired_runs and len(a) > 1:
    samples.append(np.arange(len(a)))
    slot_a = slot_b = 1
  else:
    if len(a) > 1:
      samples.append(np.arange(len(a)))
      slot_a = len(samples) - 1
    if len(b) > 1:
      samples.append(np.arange(len(b)))
      slot_b = len(samples) - 1

  def group_mean(preds, runs, examples):
    # preds [R, N]; examples [..., N]; runs [..., R'] or None (every run once).
    per_run = metric_of(preds[:, examples], labels[examples], metric, task)  # [R, ...]
    per_run = np.moveaxis(per_run, 0, -1)  # [..., R]
    if runs is None:
      return per_run.mean(-1)
    return np.take_along_axis(per_run, runs, axis=-1).mean(-1)

  def statistic(*resampled, axis=-1):
    del axis  # Samples arrive as [..., n]: resamples lead, the sample's own axis is last.
    examples = resampled[0]
    runs_a = resampled[slot_a] if slot_a is not None else None
    runs_b = resampled[slot_b] if slot_b is not None else None
    return group_mean(a, runs_a, examples) - group_mean(b, runs_b, examples)

  mean_a = float(group_mean(a, None, np.arange(n)))
  mean_b = float(group_mean(b, None, np.arange(n)))
  observed = mean_a - mean_b
  if np.all(a == b[:1]) and np.all(b == b[:1]):
    low = high = observed  # Identical predictions: every resample gives the same difference.
  else:
    result = scipy_stats.bootstrap(
        tuple(samples), statistic, vectorized=True, paired=False, n_resamples=n_resamples,
        confidence_level=confidence, method="percentile", batch=500,
        random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
  return Interval(mean_a=mean_a, mean_b=mean_b, difference=observed, low=low, high=high,
                  confidence=confidence, examples=n, runs_a=len(a), runs_b=len(b),
                  paired_runs=bool(paired_runs))


# ---- Runs of a results table -------------------------------------------------------------------


def load_predictions(run_dir: str | pathlib.Path) -> pd.DataFrame:
  """A run's saved test predictions with a `predicted` label column.

  Raises:
    FileNotFoundError: if the run saved none.
  """
  path = pathlib.Path(run_dir) / PREDICTIONS
  if not path.is_file():
    raise FileNotFoundError(f"no saved predictions at {path}: a comparison resamples the test "
                            "examples, so it needs every run's predictions.parquet")
  return load_predictions_frame(pd.read_parquet(path))


def predicts_one_class(predicted) -> bool:
  """Whether predicted labels give every example of a list (two or more) the same class: a
  collapsed model."""
  predicted = np.asarray(predicted).reshape(-1)
  return predicted.size > 1 and np.unique(predicted).size == 1


def load_predictions_frame(frame: pd.DataFrame) -> pd.DataFrame:
  """A predictions frame with its `predicted` label column added: the multiclass
  `student_pred`, or `student_prob` > 0.5 (as `metrics.binary_metrics` thresholds)."""
  frame = frame.copy()
  if "student_pred" in frame:
    frame["predicted"] = frame["student_pred"].astype(np.int64)
  else:
    frame["predicted"] = (frame["student_prob"].to_numpy() > 0.5).astype(np.int64)
  return frame


def load_probe_predictions(run_dir: str | pathlib.Path, probe: str = "linear") -> pd.DataFrame:
  """A stage-1 probe's validation predictions (`results.PROBE_PREDICTIONS`) with a `predicted`
  column."""
  path = pathlib.Path(run_dir) / results.PROBE_PREDICTIONS
  if not path.is_file():
    raise FileNotFoundError(f"no saved probe predictions at {path}")
  frame = pd.read_parquet(path)
  frame["predicted"] = (frame[f"{probe}_prob"].to_numpy() > 0.5).astype(np.int64)
  return frame


def workdir_reader(workdir: str | pathlib.Path) -> Callable[[pd.Series], pd.DataFrame]:
  """Reads a results row's saved predictions from `<workdir>/runs/<run_id>/`: the test
  predictions of a run, the validation predictions of a stage-1 probe."""
  root = pathlib.Path(workdir) / results.RUNS

  def read(row) -> pd.DataFrame:
    if row.get("stage") == "pretrain":
      return load_probe_predictions(root / row["run_id"])
    return load_predictions(root / row["run_id"])

  return read


def aligned_predictions(rows: pd.DataFrame, reader: Callable[[pd.Series], pd.DataFrame]
                        ) -> tuple[list[str], np.ndarray, np.ndarray, str]:
  """(test ids, labels [N], predicted labels [R, N], task) of runs scored on one test list.

  Raises:
    ValueError: if the runs were scored on different test examples (a comparison across
      them would confound the method with the examples).
  """
  ids = labels = None
  predicted = []
  first = None
  for _, row in rows.iterrows():
    frame = reader(row).set_index("id")
    if ids is None:
      ids, first = list(frame.index), row["run_id"]
      labels = frame["label"].to_numpy()
    elif set(frame.index) != set(ids) or len(frame) != len(ids):
      raise ValueError(f"runs {first} and {row['run_id']} were scored on different test "
                       f"examples ({len(ids)} and {len(frame)}); compare runs of one test list")
    predicted.append(frame.loc[ids, "predicted"].to_numpy())
  task = rows["task"].iloc[0] if "task" in rows and isinstance(rows["task"].iloc[0], str) else "binary"
  return ids, labels, np.stack(predicted), task


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One printed answer: which groups, on which split, and the interval."""

  question: str
  labeling: str
  split_percent: int
  a: str
  b: str
  metric: str
  interval: Interval
  pairing: str

  def row(self) -> dict:
    i = self.interval
    return {"question": self.question, "labeling": self.labeling,
            "split_percent": self.split_percent, "a": self.a, "b": self.b, "metric": self.metric,
            "mean_a": i.mean_a, "mean_b": i.mean_b, "difference": i.difference, "low": i.low,
            "high": i.high, "confidence": i.confidence, "excludes_zero": i.excludes_zero,
            "examples": i.examples, "runs_a": i.runs_a, "runs_b": i.runs_b, "pairing": self.pairing}


def compare_runs(rows_a: pd.DataFrame, rows_b: pd.DataFrame,
                 reader: Callable[[pd.Series], pd.DataFrame],
                 *, pair_on: Sequence[str] = (), metric: str = "f1", **kwargs
                 ) -> tuple[Interval, str]:
  """Compares two groups of results rows, reading each run's predictions with `reader(row)`
  (e.g. `workdir_reader(workdir)`).

  Runs are paired when both groups hold exactly one run per value of the `pair_on` columns and
  the same values; otherwise each group is resampled on its own. Returns the interval and how
  the runs were paired ("paired by seed", "unpaired").
  """
  pairing = "unpaired"
  if pair_on and len(rows_a) > 1:
    key_a = rows_a[list(pair_on)].astype(str).agg("/".join, axis=1)
    key_b = rows_b[list(pair_on)].astype(str).agg("/".join, axis=1)
    if key_a.is_unique and key_b.is_unique and set(key_a) == set(key_b):
      rows_a = rows_a.assign(_key=key_a.to_numpy()).sort_values("_key")
      rows_b = rows_b.assign(_key=key_b.to_numpy()).sort_values("_key")
      pairing = "paired by " + "+".join(pair_on)
  ids, labels, pa, task = aligned_predictions(rows_a, reader)
  ids_b, labels_b, pb, _ = aligned_predictions(rows_b, reader)
  if set(ids_b) != set(ids):
    raise ValueError(f"the groups were scored on different test examples ({len(ids)} and "
                     f"{len(ids_b)}); a comparison needs one test list")
  order = pd.Index(ids_b).get_indexer(ids)
  interval = compare_predictions(labels, pa, pb[:, order], metric=metric, task=task,
                                 paired_runs=pairing != "unpaired", **kwargs)
  return interval, pairing


# ---- The study's questions ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Question:
  """Two groups of one cell (labelling scheme and split) to compare."""

  question: str
  a: str
  b: str
  rows_a: pd.DataFrame
  rows_b: pd.DataFrame
  pair_on: tuple[str, ...] = ()
  metric: str | None = None  # None: the comparison's metric


def _ok(table: pd.DataFrame) -> pd.DataFrame:
  return table[table["status"] == "ok"] if "status" in table else table


def _values(frame: pd.DataFrame, column: str) -> list:
  return sorted(frame[column].dropna().unique().tolist(), key=str) if column in frame else []


def _cells(frame: pd.DataFrame, columns: Sequence[str]):
  """Groups of `frame` by `columns` (a column the table lacks counts as empty), missing values
  kept as their own group; yields (key tuple, rows)."""
  missing = [c for c in columns if c not in frame]
  if missing:
    frame = frame.assign(**{c: np.nan for c in missing})
  if frame.empty:
    return
  for key, group in frame.groupby(list(columns), dropna=False, sort=True):
    yield (key if isinstance(key, tuple) else (key,)), group


def _freeze_label(frame: pd.DataFrame) -> str:
  freeze = _values(frame, "freeze")
  if freeze == ["encoder"]:
    return " (encoder frozen)"
  if freeze == ["none"] or not freeze:
    return " (all trained)"
  return f" (freeze {', '.join(map(str, freeze))})"


def study_questions(table: pd.DataFrame) -> Iterable[tuple[str, int, Question]]:
  """The study's questions of one results table, per (labelling scheme, split percent):

  * stage 1: each pretrained encoder's linear probe against a random-init network's (accuracy
    on the validation list);
  * pretrained vs random-init teachers (stage 2), each pretrained encoder against `none`,
    paired by seed; when the two were fine-tuned differently (e.g. the pretrained encoder
    frozen, the random one trained whole) the labels say so;
  * each pretrained encoder's teachers against the classical reference (label spreading);
  * distilled vs baseline students: per student architecture and optimizer, the students of
    each encoder's teachers (per teaching method) against the same network trained on the
    labelled split alone;
  * Adam vs SGD: teachers of encoders pretrained with Adam against those with SGD (paired by
    seed), and students trained with Adam against SGD (paired by teacher and seed);
  * soft vs hard targets: each soft loss against hard pseudo-labels, same student, teacher,
    teaching mode and seed.

  Groups hold only runs that agree on every other setting listed here (architecture, teaching
  mode, loss, ...), so a difference is not the difference of a hidden setting.
  """
  ok = _ok(table)
  for (labeling, pct), cell in _cells(ok, ["labeling", "split_percent"]):
    pct = int(pct)
    probes = cell[cell["stage"] == "pretrain"]
    for _, group in _cells(probes, ["arch"]):
      if "none" in _values(group, "encoder"):
        for encoder in [e for e in _values(group, "encoder") if e != "none"]:
          yield labeling, pct, Question(
              "encoders: pretrained vs random init (linear probe on validation)", encoder,
              "random init", group[group["encoder"] == encoder], group[group["encoder"] == "none"],
              metric="accuracy")
    teachers = cell[cell["stage"] == "finetune"]
    for _, group in _cells(teachers, ["arch", "task"]):
      by_recipe = {key: rows for key, rows in _cells(group, ["encoder", "freeze"])}
      random_init = [(k, r) for k, r in by_recipe.items() if k[0] == "none"]
      pretrained = [(k, r) for k, r in by_recipe.items() if k[0] != "none"]
      for (encoder, _), rows in pretrained:
        for _, base in random_init:
          yield labeling, pct, Question(
              "teachers: pretrained vs random init", f"{encoder}{_freeze_label(rows)}",
              f"none{_freeze_label(base)}", rows, base, ("seed",))
      optimizers = {k: r["encoder_optimizer"].iloc[0] for k, r in pretrained}
      for k_adam, k_sgd in itertools.product(
          [k for k, o in optimizers.items() if o == "adam"],
          [k for k, o in optimizers.items() if o == "sgd"]):
        adam, sgd = by_recipe[k_adam], by_recipe[k_sgd]
        yield labeling, pct, Question(
            "teachers: Adam vs SGD pretraining", f"{k_adam[0]}{_freeze_label(adam)}",
            f"{k_sgd[0]}{_freeze_label(sgd)}", adam, sgd, ("seed",))
    reference = cell[cell["stage"] == "reference"]
    for _, ref in _cells(reference, ["method"]):
      for (encoder, _), rows in _cells(teachers[teachers["encoder"] != "none"], ["encoder", "freeze"]):
        yield labeling, pct, Question(
            "teachers vs the classical reference", f"{encoder}{_freeze_label(rows)}",
            str(ref["method"].iloc[0]), rows, ref)
    students = cell[cell["stage"] == "distill"]
    baselines = cell[cell["stage"] == "baseline"]
    if "init" in baselines:
      baselines = baselines[baselines["init"].fillna("scratch") == "scratch"]
    for (arch, optimizer, rate), group in _cells(students, ["arch", "student_optimizer",
                                                            "learning_rate"]):
      base = baselines[(baselines["arch"] == arch) & (baselines["student_optimizer"] == optimizer)]
      if "learning_rate" in base and pd.notna(rate):  # Baselines at the students' rate only.
        base = base[base["learning_rate"] == rate]
      if base.empty:
        continue
      for (encoder, method), taught in _cells(group, ["encoder", "method"]):
        yield labeling, pct, Question(
            f"students: distilled vs baseline ({arch}, {optimizer})",
            f"from {encoder} teachers, {method}", "baseline",
            taught, base)
    for (arch, method), group in _cells(students, ["arch", "method"]):
      if {"adam", "sgd"} <= set(_values(group, "student_optimizer")):
        yield labeling, pct, Question(
            f"students: Adam vs SGD ({arch})", f"adam, {method}", f"sgd, {method}",
            group[group["student_optimizer"] == "adam"], group[group["student_optimizer"] == "sgd"],
            ("teacher_id", "seed"))
    for (arch, optimizer, mode, alpha), group in _cells(
        students, ["arch", "student_optimizer", "teacher_mode", "alpha"]):
      hard = group[group["loss_kind"] == "hard"]
      if hard.empty:
        continue
      for (kind, temperature), soft in _cells(group[group["loss_kind"] != "hard"],
                                               ["loss_kind", "temperature"]):
        yield labeling, pct, Question(
            f"students: soft vs hard targets ({arch}, {optimizer})", f"{kind} T={float(temperature):g}",
            "hard", soft, hard, ("teacher_id", "seed"))


COLUMNS = ("question", "labeling", "split_percent", "a", "b", "metric", "mean_a", "mean_b",
           "difference", "low", "high", "confidence", "excludes_zero", "examples", "runs_a",
           "runs_b", "pairing")
COMPARISONS_CSV = "comparisons.csv"


def study_comparisons(table: pd.DataFrame, reader: Callable[[pd.Series], pd.DataFrame], *,
                      metric: str = "f1", **kwargs) -> pd.DataFrame:
  """Every question of `study_questions` answered: one row per comparison (see
  `Comparison.row`), in the questions' order. Empty when nothing compares."""
  read: dict[tuple, pd.DataFrame] = {}

  def cached(row) -> pd.DataFrame:  # A run takes part in several comparisons: read it once.
    key = (row.get("stage"), row["run_id"])
    if key not in read:
      read[key] = reader(row)
    return read[key]

  rows = []
  for labeling, pct, q in study_questions(table):
    if q.rows_a.empty or q.rows_b.empty:
      continue
    interval, pairing = compare_runs(q.rows_a, q.rows_b, cached, pair_on=q.pair_on,
                                     metric=q.metric or metric, **kwargs)
    rows.append(Comparison(q.question, labeling, pct, q.a, q.b, q.metric or metric, interval,
                           pairing).row())
  return pd.DataFrame(rows, columns=list(COLUMNS))


def write_comparisons(workdir: str | pathlib.Path, table: pd.DataFrame | None = None, *,
                      metric: str = "f1") -> pd.DataFrame:
  """Answers the study's questions for a workdir and writes them to `comparisons.csv` there
  (atomically); returns them."""
  from simclr_distill import fileio

  workdir = pathlib.Path(workdir)
  table = results.read_rows([workdir]) if table is None else table
  frame = study_comparisons(table, workdir_reader(workdir), metric=metric)
  fileio.atomic_write(workdir / COMPARISONS_CSV, lambda tmp: frame.to_csv(tmp, index=False))
  return frame


def _signed(x: float) -> str:
  """+0.012; a bound that rounds to zero keeps its sign and size (+4e-04), so an interval
  printed as excluding zero never reads [+0.000, ...]."""
  return f"{x:+.0e}" if 0 < abs(x) < 0.0005 else f"{x:+.3f}"


def format_comparisons(frame: pd.DataFrame) -> str:
  """The comparisons as text, one block per labelling scheme and split."""
  if frame.empty:
    return ("no comparisons: the table holds no two groups of finished runs that answer one of "
            "the study's questions on the same test list")
  blocks = []
  for (labeling, pct), cell in frame.groupby(["labeling", "split_percent"], sort=True):
    confidence = float(cell["confidence"].iloc[0])
    test = cell.loc[cell["metric"] != "accuracy", "examples"]
    header = (f"{labeling} labels, {int(pct)}% split: " +
              (f"{int(test.iloc[0])} test examples; " if len(test) else "") +
              f"difference A - B with its {confidence:.0%} interval (bootstrap over the test "
              "examples and the runs)")
    shown = pd.DataFrame({
        "question": cell["question"], "A": cell["a"], "B": cell["b"],
        "metric": cell["metric"],
        "A mean": cell["mean_a"].map(lambda x: f"{x:.3f}"),
        "B mean": cell["mean_b"].map(lambda x: f"{x:.3f}"),
        "A - B": cell["difference"].map(_signed),
        "interval": [f"[{_signed(lo)}, {_signed(hi)}]" for lo, hi in zip(cell["low"], cell["high"])],
        "runs": [f"{a}:{b} {'paired' if p != 'unpaired' else ''}".strip()
                 for a, b, p in zip(cell["runs_a"], cell["runs_b"], cell["pairing"])],
        "n": cell["examples"].astype(int),
        "excludes 0": cell["excludes_zero"].map({True: "yes", False: "no"}),
    })
    with pd.option_context("display.max_colwidth", 60, "display.width", 250):
      blocks.append(header + "\n" + shown.to_string(index=False))
  return "\n\n".join(blocks)
