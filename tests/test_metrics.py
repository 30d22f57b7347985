"""Tests for simclr_distill.metrics against scikit-learn on the same predictions."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from simclr_distill import metrics

RTOL = 1e-9
BINARY_KEYS = {"tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "auc", "f1", "f0.5"}


def sklearn_binary(labels, probs, threshold):
  pred = (probs > threshold).astype(int)
  tn, fp, fn, tp = skm.confusion_matrix(labels, pred, labels=[0, 1]).ravel()
  both = len(set(labels)) == 2
  return {
      "tp": tp, "fp": fp, "tn": tn, "fn": fn,
      "accuracy": skm.accuracy_score(labels, pred),
      "precision": skm.precision_score(labels, pred, zero_division=0),
      "recall": skm.recall_score(labels, pred, zero_division=0),
      "auc": skm.roc_auc_score(labels, probs) if both else math.nan,
      "f1": skm.f1_score(labels, pred, zero_division=0),
      "f0.5": skm.fbeta_score(labels, pred, beta=0.5, zero_division=0),
  }


def assert_binary_matches_sklearn(labels, probs, threshold=0.5):
  got = metrics.binary_metrics(labels, probs, threshold)
  assert set(got) == BINARY_KEYS
  want = sklearn_binary(np.asarray(labels), np.asarray(probs), threshold)
  for key in ("tp", "fp", "tn", "fn"):
    assert type(got[key]) is int and got[key] == want[key], key
  for key in BINARY_KEYS - {"tp", "fp", "tn", "fn"}:
    assert type(got[key]) is float, key
    np.testing.assert_allclose(got[key], want[key], rtol=RTOL, err_msg=key)
  return got


@pytest.mark.parametrize("threshold", [0.5, 0.2, 0.85])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_random(seed, threshold):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 300)
  probs = np.clip(0.3 * labels + rng.random(300) * 0.7, 0, 1)  # Informative but imperfect.
  got = assert_binary_matches_sklearn(labels, probs, threshold)
  assert 0.5 < got["auc"] < 1.0


def test_binary_metrics_ties_and_threshold_is_strict():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, 200)
  probs = np.round(rng.random(200) * 4) / 4  # Only 0, .25, .5, .75, 1: heavy ties.
  got = assert_binary_matches_sklearn(labels, probs)
  # Every example at exactly 0.5 is predicted negative.
  at_half = probs == 0.5
  assert at_half.any()
  assert got["tp"] + got["fp"] == int(np.sum(probs > 0.5))
  # Every score tied: the ROC is the diagonal.
  assert metrics.binary_metrics(labels, np.full(200, 0.5))["auc"] == 0.5


def test_binary_metrics_hand_computed():
  labels = [1, 1, 0, 0, 1]
  probs = [0.9, 0.4, 0.6, 0.1, 0.8]
  got = metrics.binary_metrics(labels, probs)
  assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (2, 1, 1, 1)
  assert got["precision"] == pytest.approx(2 / 3)
  assert got["recall"] == pytest.approx(2 / 3)
  assert got["auc"] == pytest.approx(5 / 6)  # 5 of the 6 positive/negative pairs ordered.
  assert got["f0.5"] == pytest.approx(2 / 3)


def test_binary_metrics_all_negative_labels():
  got = assert_binary_matches_sklearn(np.zeros(10, int), np.linspace(0, 1, 10))
  assert math.isnan(got["auc"])
  assert got["tp"] == got["fn"] == 0
  assert got["precision"] == got["recall"] == got["f1"] == got["f0.5"] == 0.0


def test_binary_metrics_all_positive_labels():
  got = assert_binary_matches_sklearn(np.ones(10, int), np.linspace(0, 1, 10))
  assert math.isnan(got["auc"])
  assert got["precision"] == 1.0 and got["recall"] == 0.5


def test_binary_metrics_no_positive_predictions():
  got = assert_binary_matches_sklearn([0, 1, 1, 0], [0.1, 0.2, 0.4, 0.3])
  assert got["tp"] + got["fp"] == 0
  assert got["precision"] == got["f1"] == got["f0.5"] == 0.0
  assert got["auc"] == 0.75


@pytest.mark.parametrize("label, prob", [(1, 0.7), (0, 0.7), (1, 0.2), (0, 0.2)])
def test_binary_metrics_single_example(label, prob):
  got = assert_binary_matches_sklearn([label], [prob])
  assert got["accuracy"] == float(label == (prob > 0.5))


def test_binary_metrics_accepts_column_vectors_and_float_labels():
  labels, probs = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.8, 0.3, 0.4, 0.6])
  assert (metrics.binary_metrics(labels[:, None], probs[:, None])
          == metrics.binary_metrics(labels.astype(int), probs))


def test_fbeta_score_is_the_true_f_beta():
  # P = 0.5, R = 1: F0.5 = 1.25 * 0.5 / 1.125 = 5/9. The study's formula gives 0.6.
  labels, pred = [1, 0, 1, 0], [1, 1, 1, 1]
  assert skm.fbeta_score(labels, pred, beta=0.5) == pytest.approx(5 / 9)
  assert metrics.fbeta_score(0.5, 1.0, 0.5) == pytest.approx(5 / 9)
  assert metrics.binary_metrics(labels, [0.9] * 4)["f0.5"] == pytest.approx(5 / 9)
  b, p, r = 0.5, 0.5, 1.0
  assert (1 + b) * p * r / (b * p + r) == pytest.approx(0.6)  # What the study's tables hold.
  assert metrics.fbeta_score(0.7, 0.3, 1.0) == pytest.approx(2 * 0.7 * 0.3 / 1.0)
  assert metrics.fbeta_score(0.0, 0.0, 0.5) == 0.0


def test_study_tables_used_a_different_f05(reference_dir):
  # The published F0.5 matches (1 + b) P R / (b P + R); F1 is the true one.
  with open(reference_dir / "results" / "distill_results.csv") as f:
    rows = list(csv.DictReader(f))
  b = 0.5
  for row in rows:
    p, r = float(row["precision"]), float(row["recall"])
    assert float(row["f0.5"]) == pytest.approx((1 + b) * p * r / (b * p + r), rel=1e-6)
    assert float(row["f1"]) == pytest.approx(metrics.fbeta_score(p, r, 1.0), rel=1e-6)
  worst = max(abs(float(row["f0.5"]) - metrics.fbeta_score(float(row["precision"]),
                                                          float(row["recall"]), b))
              for row in rows)
  assert worst > 0.02


def test_binary_log_loss_matches_sklearn():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 2, 100)
  probs = rng.uniform(0.01, 0.99, 100)
  np.testing.assert_allclose(metrics.binary_log_loss(labels, probs),
                             skm.log_loss(labels, probs, labels=[0, 1]), rtol=RTOL)


def test_binary_log_loss_clips_confident_mistakes():
  got = metrics.binary_log_loss([1, 0, 1, 0], [0.0, 1.0, 1.0, 0.0])
  np.testing.assert_allclose(got, -np.log(1e-7) / 2, rtol=1e-6)
  np.testing.assert_allclose(metrics.binary_log_loss([1], [0.0], eps=1e-3), -np.log(1e-3))


def random_multiclass(seed, n=150, k=4):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  probs = rng.dirichlet(np.ones(k), n)
  probs[np.arange(n), labels] += rng.random(n)  # Better than chance, still many mistakes.
  return labels, probs / probs.sum(axis=1, keepdims=True)


def assert_multiclass_matches_sklearn(labels, probs):
  k = probs.shape[1]
  pred = np.argmax(probs, axis=1)
  kw = dict(labels=list(range(k)), average="macro", zero_division=0)
  want = {
      "accuracy": skm.accuracy_score(labels, pred),
      "macro_f1": skm.f1_score(labels, pred, **kw),
      "macro_precision": skm.precision_score(labels, pred, **kw),
      "macro_recall": skm.recall_score(labels, pred, **kw),
      "log_loss": skm.log_loss(labels, probs, labels=list(range(k))),
  }
  got = metrics.multiclass_metrics(labels, probs)
  assert set(got) == set(want)
  for key, value in want.items():
    assert type(got[key]) is float, key
    np.testing.assert_allclose(got[key], value, rtol=RTOL, err_msg=key)
  return got


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_metrics_random(seed):
  got = assert_multiclass_matches_sklearn(*random_multiclass(seed))
  assert 0.25 < got["accuracy"] < 1.0


def test_multiclass_metrics_absent_class_counts_zero():
  labels, probs = random_multiclass(5, k=4)
  labels = labels % 3  # Class 3 never occurs ...
  probs[:, 3] = 0.0  # ... and is never predicted.
  probs /= probs.sum(axis=1, keepdims=True)
  got = assert_multiclass_matches_sklearn(labels, probs)
  three_class = skm.f1_score(labels, np.argmax(probs, axis=1), average="macro")
  np.testing.assert_allclose(got["macro_f1"], three_class * 3 / 4, rtol=RTOL)


def test_multiclass_log_loss_clips_confident_mistakes():
  got = metrics.multiclass_metrics([0, 1], [[0.0, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(got["log_loss"], -np.log(1e-7) / 2, rtol=1e-6)


def test_per_class_accuracy():
  labels, probs = random_multiclass(6, k=5)
  labels[labels == 2] = 0  # Class 2 absent.
  got = metrics.per_class_accuracy(labels, probs)
  assert list(got) == [0, 1, 2, 3, 4]
  recall = skm.recall_score(labels, np.argmax(probs, axis=1), labels=range(5), average=None,
                            zero_division=0)
  for c in (0, 1, 3, 4):
    np.testing.assert_allclose(got[c], recall[c], rtol=RTOL)
  assert math.isnan(got[2])
  assert metrics.per_class_accuracy([0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]) == {
      0: 1.0, 1: 0.5}


@pytest.mark.parametrize("labels, probs, match", [
    ([0, 1, 1], [0.2, 0.3], r"labels has 3 values but probs has 2 examples"),
    ([0, 2, 1], [0.2, 0.3, 0.4], r"labels must be in \[0, 1\]; found 1 other values"),
    ([0, np.nan], [0.2, 0.3], r"labels must be in \[0, 1\]; found 1 other values"),
    ([0, 1, 1, 0], [0.2, np.nan, np.inf, np.nan], r"probs contains 3 NaN/inf values"),
    ([0, 1], [-0.1, 1.2], r"probs contains 2 values outside \[0, 1\]"),
    ([], [], r"no examples"),
])
def test_binary_inputs_are_validated(labels, probs, match):
  with pytest.raises(ValueError, match=match):
    metrics.binary_metrics(labels, probs)
  with pytest.raises(ValueError, match=match):
    metrics.binary_log_loss(labels, probs)


@pytest.mark.parametrize("labels, probs, match", [
    ([0, 1], [0.2, 0.8], r"probs must have shape \[N, K\], got \(2,\)"),
    ([0, 3], [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], r"labels must be in \[0, 1, 2\]; found 1"),
    ([0, -1], [[0.5, 0.5], [0.2, 0.8]], r"labels must be in \[0, 1\]"),
    ([0], [[0.5, 0.5], [0.2, 0.8]], r"labels has 1 values but probs has 2 examples"),
    ([0, 1], [[0.5, np.nan], [0.2, 0.8]], r"probs contains 1 NaN/inf values"),
])
def test_multiclass_inputs_are_validated(labels, probs, match):
  with pytest.raises(ValueError, match=match):
    metrics.multiclass_metrics(labels, probs)
  with pytest.raises(ValueError, match=match):
    metrics.per_class_accuracy(labels, probs)
