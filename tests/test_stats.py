"""Paired comparisons: the bootstrap interval against independent computations on fixed
predictions, pairing, and the study's questions asked of a results table."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from simclr_distill import stats


def _predictions(seed: int, n: int = 216):
  """Fixed labels and three runs of each of two methods: B errs on 15% of the examples, A on
  8%, with errors shared between runs as real models share their hard examples."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  hard = rng.random(n)
  def runs(rate):
    return np.stack([np.where((hard + 0.05 * rng.random(n)) < rate, 1 - labels, labels)
                     for _ in range(3)])
  return labels, runs(0.08), runs(0.15)


def _independent_interval(labels, a, b, *, paired, resamples=4000, seed=1):
  """The same two-level bootstrap written out as a loop: resample the examples, and the runs
  (jointly when paired), take the difference of the mean F1s, and the 2.5/97.5 percentiles."""
  rng = np.random.default_rng(seed)
  n = len(labels)
  diffs = []
  for _ in range(resamples):
    examples = rng.integers(n, size=n)
    runs_a = rng.integers(len(a), size=len(a))
    runs_b = runs_a if paired else rng.integers(len(b), size=len(b))
    y = labels[examples]
    def f1(p, runs):  # 2 TP / (2 TP + FP + FN), per run, averaged over the drawn runs.
      hits = p[runs][:, examples]
      tp = ((hits == 1) & (y == 1)).sum(1)
      wrong = (hits != y).sum(1)
      return np.mean(2 * tp / (2 * tp + wrong))
    diffs.append(f1(a, runs_a) - f1(b, runs_b))
  return np.percentile(diffs, [2.5, 97.5])


@pytest.mark.parametrize("paired", [True, False])
def test_interval_matches_an_independent_bootstrap(paired):
  labels, a, b = _predictions(0)
  ours = stats.compare_predictions(labels, a, b, paired_runs=paired, n_resamples=4000)
  expected = np.mean([f1_score(labels, p) for p in a]) - np.mean([f1_score(labels, p) for p in b])
  assert ours.difference == pytest.approx(expected, abs=1e-12)
  low, high = _independent_interval(labels, a, b, paired=paired, resamples=2000)
  # Two Monte Carlo estimates of the same percentiles: within a fraction of the interval's width.
  width = high - low
  assert abs(ours.low - low) < 0.1 * width and abs(ours.high - high) < 0.1 * width
  assert ours.excludes_zero and ours.low > 0
  assert (ours.examples, ours.runs_a, ours.runs_b, ours.paired_runs) == (216, 3, 3, paired)


def test_one_run_each_matches_the_normal_approximation_of_a_paired_accuracy_difference():
  """With one run per side and accuracy, the difference is a mean of per-example differences
  d_i in {-1, 0, 1}: its interval is close to mean(d) +- 1.96 sd(d) / sqrt(n)."""
  labels, a, b = _predictions(1, n=400)
  ours = stats.compare_predictions(labels, a[:1], b[:1], metric="accuracy", n_resamples=8000)
  d = (a[0] == labels).astype(float) - (b[0] == labels).astype(float)
  half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
  assert ours.difference == pytest.approx(d.mean())
  assert ours.low == pytest.approx(d.mean() - half, abs=0.006)
  assert ours.high == pytest.approx(d.mean() + half, abs=0.006)


def test_identical_methods_give_zero_and_noise_is_not_called_an_effect():
  labels, a, _ = _predictions(2)
  same = stats.compare_predictions(labels, a, a.copy(), paired_runs=True)
  assert (same.difference, same.low, same.high, same.excludes_zero) == (0.0, 0.0, 0.0, False)
  # Two runs of one noisy method, relabelled as two methods: the interval must cover zero.
  rng = np.random.default_rng(3)
  noisy = np.stack([np.where(rng.random(len(labels)) < 0.1, 1 - labels, labels) for _ in range(6)])
  result = stats.compare_predictions(labels, noisy[:3], noisy[3:])
  assert result.low < 0 < result.high and not result.excludes_zero


def test_the_interval_is_repeatable_and_refuses_mismatched_inputs():
  labels, a, b = _predictions(4)
  assert stats.compare_predictions(labels, a, b) == stats.compare_predictions(labels, a, b)
  with pytest.raises(ValueError, match="predictions cover"):
    stats.compare_predictions(labels, a[:, :10], b)
  with pytest.raises(ValueError, match="paired runs need groups of equal size"):
    stats.compare_predictions(labels, a, b[:2], paired_runs=True)
  with pytest.raises(ValueError, match="unknown metric"):
    stats.compare_predictions(labels, a, b, metric="auc")


def test_metrics_of_predicted_labels_match_scikit_learn():
  labels, a, _ = _predictions(5)
  from sklearn.metrics import accuracy_score, precision_score, recall_score
  for name, fn in (("f1", f1_score), ("accuracy", accuracy_score),
                   ("precision", precision_score), ("recall", recall_score)):
    assert stats.metric_of(a[0], labels, name) == pytest.approx(fn(labels, a[0]))
  assert stats.metric_of(np.zeros(4, int), np.zeros(4, int), "f1") == 0.0  # No positive at all.


def _table_and_reader(tmp_path):
  """A results table of teachers (two encoders, three seeds) and students, with saved
  predictions on one test list, and its reader."""
  labels, good, bad = _predictions(6)
  ids = [f"x{i}" for i in range(len(labels))]
  rows, frames = [], {}
  def add(run_id, predicted, **row):
    frames[run_id] = pd.DataFrame({"id": ids, "label": labels,
                                   "student_prob": predicted.astype(float)})
    rows.append({"run_id": run_id, "status": "ok", "labeling": "expanded", "split_percent": 3,
                 "task": "binary", "arch": "cnn", **row})
  for s in range(3):
    add(f"t-adam-{s}", good[s], stage="finetune", encoder="adam_enc", encoder_optimizer="adam",
        freeze="encoder", seed=s)
    add(f"t-none-{s}", bad[s], stage="finetune", encoder="none", encoder_optimizer="",
        freeze="none", seed=s)
    add(f"b-{s}", bad[s], stage="baseline", init="scratch", student_optimizer="adam", seed=s,
        learning_rate=1e-3)
    add(f"d-{s}", good[s], stage="distill", encoder="adam_enc", student_optimizer="adam",
        method="hard / offline", teacher_id=f"t{s}", seed=0, loss_kind="hard",
        teacher_mode="offline", alpha=0.0, temperature=1.0, learning_rate=1e-3)
  return pd.DataFrame(rows), lambda row: stats.load_predictions_frame(frames[row["run_id"]])


def test_study_questions_pair_teachers_by_seed_and_name_their_recipes(tmp_path):
  table, reader = _table_and_reader(tmp_path)
  frame = stats.study_comparisons(table, reader)
  teachers = frame[frame["question"] == "teachers: pretrained vs random init"].iloc[0]
  assert teachers["a"] == "adam_enc (encoder frozen)"
  assert teachers["b"] == "none (all trained)"
  assert teachers["pairing"] == "paired by seed" and teachers["excludes_zero"]
  students = frame[frame["question"].str.startswith("students: distilled vs baseline")].iloc[0]
  assert students["pairing"] == "unpaired" and students["difference"] > 0
  text = stats.format_comparisons(frame)
  assert "expanded labels, 3% split: 216 test examples" in text and "yes" in text


def test_runs_scored_on_different_test_examples_are_not_compared(tmp_path):
  table, reader = _table_and_reader(tmp_path)
  def shrunk(row):
    frame = reader(row)
    return frame.iloc[:-1] if row["run_id"] == "t-none-0" else frame
  with pytest.raises(ValueError, match="different test examples"):
    stats.study_comparisons(table, shrunk)
