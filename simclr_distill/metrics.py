"""Evaluation metrics of saved predictions, in plain NumPy.

These run on the label and probability arrays that evaluation writes to disk, so results can be
recomputed without TensorFlow. Divisions by zero give 0.0, as scikit-learn's `zero_division=0`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _safe_div(num, den) -> np.ndarray:
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _check_probs(probs) -> np.ndarray:
  probs = np.asarray(probs, np.float64)
  bad = int(np.sum(~np.isfinite(probs)))
  if bad:
    raise ValueError(f"probs contains {bad} NaN/inf values")
  outside = int(np.sum((probs < 0) | (probs > 1)))
  if outside:
    raise ValueError(f"probs contains {outside} values outside [0, 1] "
                     f"(min {probs.min()}, max {probs.max()})")
  return probs


def _check_labels(labels, allowed: np.ndarray, n: int) -> np.ndarray:
  labels = np.asarray(labels).reshape(-1)
  if labels.size == 0:
    raise ValueError("no examples: labels is empty")
  if labels.size != n:
    raise ValueError(f"labels has {labels.size} values but probs has {n} examples")
  bad = ~np.isin(labels, allowed)
  if bad.any():
    raise ValueError(f"labels must be in {allowed.tolist()}; found {int(bad.sum())} other "
                     f"values (first {labels[bad][0]!r})")
  return labels.astype(np.int64)


def _check_binary(labels, probs) -> tuple[np.ndarray, np.ndarray]:
  probs = _check_probs(probs).reshape(-1)
  return _check_labels(labels, np.array([0, 1]), probs.size), probs


def _mean_nll(p_true: np.ndarray, eps: float) -> float:
  return float(-np.mean(np.log(np.clip(p_true, eps, 1.0))))


def fbeta_score(precision: float, recall: float, beta: float) -> float:
  """The F-beta score: (1 + beta**2) * P * R / (beta**2 * P + R).

  The SimCLR-S2 study's F0.5 used (1 + beta) where (1 + beta**2) belongs. Its published values
  are reproduced exactly by (1 + beta) * P * R / (beta * P + R), beta unsquared in the
  denominator too, which is the F-score for beta**2 = 0.5 rather than 0.25; they are not
  comparable with these.

  Args:
    precision: Precision in [0, 1].
    recall: Recall in [0, 1].
    beta: How many times more recall weighs than precision.

  Returns:
    The score as a float; 0.0 when the denominator is 0.
  """
  b2 = beta**2
  return float(_safe_div((1 + b2) * precision * recall, b2 * precision + recall))


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict:
  """Confusion counts and summary scores of binary predictions.

  Args:
    labels: 0/1 ground truth, shape [N] (or [N, 1]).
    probs: Predicted probabilities of the positive class, shape [N] (or [N, 1]).
    threshold: An example is predicted positive when its probability is strictly above this,
      as in `keras.metrics`.

  Returns:
    A dict with python ints "tp", "fp", "tn", "fn" and python floats "accuracy", "precision",
    "recall", "auc", "f1", "f0.5". Ratios with a zero denominator are 0.0. "auc" is the exact
    ROC AUC (the Mann-Whitney statistic with ties counted as half), NaN when only one class
    is present.

  Raises:
    ValueError: if the inputs are empty or differ in length, labels are not all 0/1, or probs
      are not finite values in [0, 1].
  """
  labels, probs = _check_binary(labels, probs)
  positive, predicted = labels == 1, probs > threshold
  tp = int(np.sum(positive & predicted))
  fp = int(np.sum(~positive & predicted))
  tn = int(np.sum(~positive & ~predicted))
  fn = int(np.sum(positive & ~predicted))
  precision = float(_safe_div(tp, tp + fp))
  recall = float(_safe_div(tp, tp + fn))

  n_pos, n_neg = tp + fn, tn + fp
  if n_pos and n_neg:
    # Average ranks make every tied positive/negative pair count 1/2, as the ROC curve does.
    rank_sum = stats.rankdata(probs)[positive].sum()
    auc = float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
  else:
    auc = float("nan")

  return {
      "tp": tp, "fp": fp, "tn": tn, "fn": fn,
      "accuracy": (tp + tn) / labels.size,
      "precision": precision,
      "recall": recall,
      "auc": auc,
      "f1": fbeta_score(precision, recall, 1.0),
      "f0.5": fbeta_score(precision, recall, 0.5),
  }


def binary_log_loss(labels, probs, eps: float = 1e-7) -> float:
  """Mean binary cross-entropy, with probabilities clipped to [eps, 1 - eps].

  Args:
    labels: 0/1 ground truth, shape [N] (or [N, 1]).
    probs: Predicted probabilities of the positive class, shape [N] (or [N, 1]).
    eps: Clipping bound, so a confident mistake costs -log(eps) instead of infinity.

  Returns:
    The mean loss as a float.

  Raises:
    ValueError: as `binary_metrics`.
  """
  labels, probs = _check_binary(labels, probs)
  return _mean_nll(np.where(labels == 1, probs, 1.0 - probs), eps)


def _check_multiclass(labels, probs) -> tuple[np.ndarray, np.ndarray]:
  probs = _check_probs(probs)
  if probs.ndim != 2:
    raise ValueError(f"probs must have shape [N, K], got {probs.shape}")
  return _check_labels(labels, np.arange(probs.shape[1]), probs.shape[0]), probs


def multiclass_metrics(labels, probs) -> dict:
  """Accuracy, macro-averaged precision/recall/F1 and log loss of multiclass predictions.

  The prediction is the argmax of each row. Macro averages run over all classes range(K), and a
  class with a zero denominator scores 0, which matches scikit-learn's
  `f1_score(labels, pred, labels=range(K), average="macro", zero_division=0)` (and the
  precision/recall counterparts): a class that is neither predicted nor present pulls the
  average down.

  Args:
    labels: Integer class indices, shape [N].
    probs: Predicted class probabilities, shape [N, K].

  Returns:
    A dict of python floats: "accuracy", "macro_f1", "macro_precision", "macro_recall",
    "log_loss" (the mean of -log p[label], with p clipped below at 1e-7).

  Raises:
    ValueError: if probs is not [N, K] finite values in [0, 1], or labels are empty, differ in
      length or fall outside range(K).
  """
  labels, probs = _check_multiclass(labels, probs)
  k = probs.shape[1]
  predicted = np.argmax(probs, axis=1)
  confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
  tp = np.diag(confusion)
  precision = _safe_div(tp, confusion.sum(axis=0))
  recall = _safe_div(tp, confusion.sum(axis=1))
  f1 = [fbeta_score(p, r, 1.0) for p, r in zip(precision, recall)]
  return {
      "accuracy": float(np.mean(predicted == labels)),
      "macro_f1": float(np.mean(f1)),
      "macro_precision": float(np.mean(precision)),
      "macro_recall": float(np.mean(recall)),
      "log_loss": _mean_nll(probs[np.arange(labels.size), labels], 1e-7),
  }


def per_class_accuracy(labels, probs) -> dict:
  """Accuracy among the examples of each true class (i.e. per-class recall).

  Args:
    labels: Integer class indices, shape [N].
    probs: Predicted class probabilities, shape [N, K].

  Returns:
    {class_index: accuracy} for every class in range(K); NaN for a class with no examples.

  Raises:
    ValueError: as `multiclass_metrics`.
  """
  labels, probs = _check_multiclass(labels, probs)
  correct = np.argmax(probs, axis=1) == labels
  return {c: float(np.mean(correct[labels == c])) if np.any(labels == c) else float("nan")
          for c in range(probs.shape[1])}


def teacher_student_kl(teacher_probs, student_probs, eps: float = 1e-7) -> float:
  """Mean KL(teacher || student) over examples: a fidelity measure (0 when they agree exactly).

  Args:
    teacher_probs, student_probs: binary positive-class probabilities, shape [N] (the binary
      KL of the two Bernoulli distributions), or class probabilities, shape [N, K].
    eps: probabilities are clipped to [eps, 1 - eps] before the logarithms.

  Returns:
    A python float >= 0.

  Raises:
    ValueError: for shapes that differ or values outside [0, 1].
  """
  t, s = _check_probs(teacher_probs), _check_probs(student_probs)
  if t.shape != s.shape:
    raise ValueError(f"teacher probs {t.shape} and student probs {s.shape} differ in shape")
  if t.ndim == 1:
    t, s = np.stack([1 - t, t], -1), np.stack([1 - s, s], -1)
  t, s = np.clip(t, eps, 1.0), np.clip(s, eps, 1.0)
  return float(np.maximum(np.sum(t * (np.log(t) - np.log(s)), axis=-1), 0.0).mean())
