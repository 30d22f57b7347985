"""Scoring a trained model: its test predictions as a frame (one row per example, with the
teacher's), the metrics of a predictions frame, and whether a model collapsed to one class.

The frame is what `predictions.parquet` holds; `score` needs only it, so a run, an ensemble
of saved runs and the classical reference are scored by the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from simclr_distill import metrics, stats

if TYPE_CHECKING:  # Annotations only: scoring a saved frame needs neither Keras nor TensorFlow.
  import keras

  from simclr_distill.training.rundata import RunDatasets


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
  """Sigmoid of binary logits (clipped: no overflow), softmax of multiclass ones."""
  if task == "binary":
    return 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80, 80)))
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)


def predict_test(student: keras.Model, datasets: "RunDatasets", teacher) -> pd.DataFrame:
  """Student (and teacher) outputs on the test split, one row per example."""
  examples = datasets.test_examples()
  ids, labels, cached = [], [], []
  for batch in examples:  # A deterministic stream: the same order as the predict calls below.
    ids.append(batch["id"].numpy().astype(str))
    labels.append(batch["label"].numpy())
    if "teacher" in batch:
      cached.append(batch["teacher"].numpy())
  images = examples.map(lambda b: b["image"])
  s = student.predict(images, verbose=0)
  if teacher is not None:
    t = teacher.predict_logits(images)
  else:
    t = np.concatenate(cached) if cached else None
  task = datasets.task
  frame = pd.DataFrame({"id": np.concatenate(ids), "label": np.concatenate(labels)})
  if task == "binary":
    frame["label"] = frame["label"].astype(np.int64)
    frame["student_logit"] = s.reshape(-1)
    frame["student_prob"] = probabilities(s, task)
    frame["teacher_prob"] = probabilities(t, task) if t is not None else np.nan
  else:
    probs = probabilities(s, task)
    frame["student_pred"] = probs.argmax(-1)
    for k in range(probs.shape[1]):
      frame[f"student_prob_{k}"] = probs[:, k]
    frame["teacher_pred"] = t.argmax(-1) if t is not None else -1
    if t is not None:
      teacher_probs = probabilities(t, task)
      for k in range(teacher_probs.shape[1]):
        frame[f"teacher_prob_{k}"] = teacher_probs[:, k]
  return frame


def collapsed_lists(student: keras.Model, datasets: "RunDatasets", frame: pd.DataFrame) -> str:
  """Which of the run's validation and test lists the model gives one class to every example
  of ("val", "test", "val+test", or "" when it separates both): a collapsed model (dead units,
  a constant output) that an F1 alone can hide, e.g. 0.79 on a balanced list of an easy task."""
  lists = []
  if datasets.val_ids:
    logits = student.predict(datasets.evaluation(datasets.val_ids).map(lambda x, y: x), verbose=0)
    if stats.predicts_one_class(logits[:, 0] > 0 if logits.shape[-1] == 1 else logits.argmax(-1)):
      lists.append("val")
  if stats.predicts_one_class(stats.load_predictions_frame(frame)["predicted"]):
    lists.append("test")
  return "+".join(lists)


def score(frame: pd.DataFrame, task: str, student_classes=()) -> dict[str, Any]:
  """Label metrics, test loss and teacher fidelity (top-1 agreement and KL(teacher || student)
  at T = 1) from a predictions frame; for multiclass also the accuracy of each class, and of
  the `student_classes` a student was trained on against the others."""
  labels = frame["label"].to_numpy()
  if task == "binary":
    probs = frame["student_prob"].to_numpy()
    out = metrics.binary_metrics(labels, probs)
    out["loss"] = metrics.binary_log_loss(labels, probs)
    teacher = frame["teacher_prob"].to_numpy()
    if np.isfinite(teacher).all():
      out["agreement"] = float(np.mean((probs > 0.5) == (teacher > 0.5)))
      out["teacher_kl"] = metrics.teacher_student_kl(teacher, probs)
      out["teacher_f1"] = metrics.binary_metrics(labels, teacher)["f1"]
    return out
  probs = frame[[c for c in frame.columns if c.startswith("student_prob_")]].to_numpy()
  m = metrics.multiclass_metrics(labels, probs)
  out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "f1": m["macro_f1"],
         "precision": m["macro_precision"], "recall": m["macro_recall"], "loss": m["log_loss"]}
  if (frame["teacher_pred"] >= 0).all():
    out["agreement"] = float(np.mean(frame["teacher_pred"] == frame["student_pred"]))
    teacher = frame[[c for c in frame.columns if c.startswith("teacher_prob_")]].to_numpy()
    if teacher.shape == probs.shape:
      out["teacher_kl"] = metrics.teacher_student_kl(teacher, probs)
  per_class = metrics.per_class_accuracy(labels, probs)
  out["class_accuracy"] = " ".join(f"{k}:{a:.4f}" for k, a in per_class.items())
  if student_classes:
    correct = probs.argmax(-1) == labels
    seen = np.isin(labels, list(student_classes))
    out["seen_accuracy"] = float(correct[seen].mean()) if seen.any() else np.nan
    out["unseen_accuracy"] = float(correct[~seen].mean()) if (~seen).any() else np.nan
  return out
