"""The `Distiller`: the Keras model every finetune, distill and baseline run trains.

`Distiller` follows `keras.distillation.Distiller` (a `keras.Model` wrapping the student, the
teacher frozen and called with training=False, the objective in `compute_loss`, separate loss
trackers) and departs from it where stage 3 needs to:
  * offline teaching: teacher logits may come in the batch, cached by the labelling pass, so
    36 teacher passes serve 180 students (keras' Distiller always runs the teacher);
  * a single-logit binary task: keras' `LogitsDistillation` takes a softmax over the last
    axis, which is constant for one unit, so binary soft targets use `losses.sigmoid_*`;
  * partially labelled streams: the ground-truth term is a masked mean over the labelled
    examples of a batch (keras' Distiller needs a label for every example);
  * the study's hard pseudo-labels as a loss kind.
The same class trains baselines and demo teachers (no teacher, alpha = 1). What it needs
from Keras internals to run on a multi-worker cluster is in `keras_compat.ClusterSafeModel`.
"""


from __future__ import annotations

import keras
import tensorflow as tf

from simclr_distill import keras_compat, losses


class Distiller(keras_compat.ClusterSafeModel):
  """Trains `student` on teacher targets and/or masked ground truth.

  Batches are `(images, targets)` with targets a dict: "label" (ground truth, any value where
  unlabelled), "mask" (1 labelled, 0 not) and, for offline teaching, "teacher" (cached logits).
  `images` is a tensor that student and (online) teacher both see, or, for independent views,
  a dict {"student": ..., "teacher": ...}.

  Args:
    student: the model being trained; outputs logits.
    task: "binary" or "multiclass".
    loss_kind, temperature, alpha: see `losses.distillation_loss`.
    teacher: a `teachers.Teacher` or `teachers.EnsembleTeacher` for online teaching (run
      inside the step), or None.
    distill: False trains on the masked ground truth alone (baselines, demo teachers).
  """

  def __init__(self, student: keras.Model, *, task: str, loss_kind: str = "hard",
               temperature: float = 1.0, alpha: float = 0.0, teacher=None, distill: bool = True,
               **kwargs):
    super().__init__(name="distiller", **kwargs)
    self.student = student
    self.teacher = teacher
    if teacher is not None:
      self.teacher_models = list(teacher.models)  # Tracked, so they are built and placed.
      for model in self.teacher_models:
        model.trainable = False
    self.task, self.loss_kind = task, loss_kind
    self.temperature, self.alpha, self.distill = temperature, alpha, distill
    # "label_loss" is the ground-truth cross-entropy over the labelled examples of a batch
    # (every example in validation): the default early-stopping signal.
    self.label_loss_tracker = keras.metrics.Mean(name="label_loss")
    if task == "binary":
      self.auc = keras.metrics.AUC(from_logits=True, name="auc")
    else:
      self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if distill:
      self.distill_loss_tracker = keras.metrics.Mean(name="distill_loss")
      self.agreement = keras.metrics.Mean(name="agreement")
      self.kl = keras.metrics.Mean(name="kl")  # KL(teacher || student) at T = 1: fidelity.
    self._step_teacher_logits = None

  def call(self, images, training=False):
    return self.student(student_view(images), training=training)

  def _teacher_logits(self, images, targets):
    if self.teacher is not None:
      return self.teacher.logits(teacher_view(images))
    return targets.get("teacher")

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    del sample_weight  # Weighting is the mask's job.
    self._in_training_step = training  # Read by compute_metrics, next in the same step.
    if not self.distill:
      label_term = losses.masked_supervised_loss(y["label"], y_pred, y["mask"], task=self.task)
      total = label_term
    else:
      teacher = self._teacher_logits(x, y)
      # Kept for compute_metrics, which Keras calls next in the same traced step, so an
      # online teacher runs once per step.
      self._step_teacher_logits = teacher
      distill_term, label_term = losses.distillation_loss_terms(
          teacher, y_pred, y["label"], y["mask"], task=self.task, kind=self.loss_kind,
          temperature=self.temperature)
      if self.alpha == 0.0:
        # The ground truth has no weight: in a training step its term is neither summed nor
        # tracked, so the traced graph drops it (validation still tracks it: the monitor).
        total = distill_term
      else:
        total = self.alpha * label_term + (1.0 - self.alpha) * distill_term
      self.distill_loss_tracker.update_state(distill_term)
    if not self._skips_label_loss(training):
      self.label_loss_tracker.update_state(label_term)
    if self.losses:
      total += tf.add_n(self.losses)
    # As Keras' own losses do: each replica's loss is 1/replicas of the global mean.
    return total / tf.distribute.get_strategy().num_replicas_in_sync

  def _skips_label_loss(self, training) -> bool:
    return bool(training) and self.distill and self.alpha == 0.0

  def compute_metrics(self, x, y, y_pred, sample_weight=None):
    # AUC / accuracy are validation metrics (every example labelled): in a training step they
    # would see only the few labelled examples of a distillation pool, and on a small network
    # their update costs as much as the rest of the metrics.
    training = getattr(self, "_in_training_step", False)
    label_metric = self.auc if self.task == "binary" else self.accuracy
    if not training:
      if self.task == "binary":
        self.auc.update_state(y["label"], y_pred[..., 0], sample_weight=y["mask"])
      else:
        self.accuracy.update_state(y["label"], y_pred, sample_weight=y["mask"])
    # Teacher fidelity (agreement, KL) is a validation metric too: the early-stopping monitors
    # read its val_ values, and in a training step it is overhead paid on every batch.
    if self.distill and not training:
      teacher = self._step_teacher_logits
      if teacher is None:  # compute_metrics called on its own
        teacher = self._teacher_logits(x, y)
      self.agreement.update_state(_agree(teacher, y_pred, self.task))
      self.kl.update_state(losses.soft_target_loss(teacher, y_pred, task=self.task, kind="kl"))
    self._step_teacher_logits = None
    # As `get_metrics_result`, less the metrics a training step does not update: their
    # results (AUC's over 200 thresholds) would otherwise be computed on every batch.
    skipped = set()
    if training:
      skipped = {label_metric.name, *((self.agreement.name, self.kl.name) if self.distill else ())}
    if self._skips_label_loss(training):
      skipped.add(self.label_loss_tracker.name)
    result = {}
    for metric in self.metrics:
      if metric.name not in skipped:
        value = metric.result()
        result.update(value if isinstance(value, dict) else {metric.name: value})
    return keras_compat.cluster_logs(self.distribute_strategy, result)


def student_view(images):
  """The student's input of a batch: the images, or the "student" view of independent views."""
  return images["student"] if isinstance(images, dict) else images


def teacher_view(images):
  """The online teacher's input: the same tensor as the student's, except for independent
  views."""
  return images["teacher"] if isinstance(images, dict) else images


def _agree(teacher_logits, student_logits, task: str):
  if task == "binary":
    return tf.cast(tf.equal(teacher_logits > 0, student_logits > 0), tf.float32)
  return tf.cast(tf.equal(tf.argmax(teacher_logits, -1), tf.argmax(student_logits, -1)), tf.float32)
