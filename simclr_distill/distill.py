"""One training run: the `Distiller` model, its datasets, and the run's files and results row.

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
The same class trains baselines and demo teachers (no teacher, alpha = 1).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import logging
import math
import pathlib
import shutil
import subprocess
import time
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import simclr_distill
from simclr_distill import augment as augment_lib
from simclr_distill import checkpointing, fileio, finetune, labelling, losses, matrix, metrics
from simclr_distill import models, provenance, results, stats
from simclr_distill import selection as selection_lib
from simclr_distill import teachers as teachers_lib
from simclr_distill.data import pipeline, records
from simclr_distill.data import splits as splits_lib
from simclr_distill.matrix import RunSpec

log = logging.getLogger(__name__)

CHECKPOINT = "student.keras"
PREDICTIONS = "predictions.parquet"
CONFIG = "config.json"
HISTORY = "history.csv"
BACKUP = "backup"
SELECTION = "selection"


def build_strategy(name: str, tpu: str | None = None, *,
                   collective_timeout: float | None = None) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy called `name`.

  "auto" picks TPU when `tpu` is given, MirroredStrategy when several GPUs are visible, else
  the default strategy. "mirrored" without GPUs mirrors over the logical CPU devices (useful
  for tests; one logical CPU gives one replica). "multi_worker" is MultiWorkerMirroredStrategy
  over the cluster in the TF_CONFIG environment variable (every worker runs the same command;
  worker 0 writes the files, see `is_writer`).

  Args:
    name: "auto", "default", "mirrored", "multi_worker" or "tpu".
    tpu: the TPU's name or address, for "tpu" and "auto".
    collective_timeout: "multi_worker" only: seconds after which a collective (a gradient
      all-reduce) that still waits for a peer fails, so a lost worker ends the others with an
      error instead of a hang. It must exceed the longest gap between two steps of any worker
      (tracing, evaluation, checkpoint writes); None waits forever.
  """
  if name == "auto":
    if tpu:
      name = "tpu"
    elif len(tf.config.list_logical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = None if tf.config.list_logical_devices("GPU") else [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; known: auto, default, mirrored, multi_worker, tpu")


def is_writer(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes a run's files (checkpoints, history, model, predictions,
  results row): True for a single process (any one-worker strategy) and for the chief of a
  MultiWorkerMirroredStrategy cluster (worker 0, or the "chief" task if TF_CONFIG has one);
  False for its other workers, which must still take part in every collective (training
  steps, evaluation, `predict`) but write nothing that the chief or a later run reads."""
  return bool(strategy.extended.should_checkpoint)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` spans several processes: a MultiWorkerMirroredStrategy whose TF_CONFIG
  names more than one task (the test Keras' trainer applies to take its multi-worker paths)."""
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
          strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


class Distiller(keras.Model):
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

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras (3.15) builds a model made under a strategy from the first batch of `fit` and
    # `evaluate`: it opens an iterator, takes a batch, averages it over the replicas with
    # `strategy.reduce` and opens a fresh iterator for training. Under
    # MultiWorkerMirroredStrategy that reduce fails on a nested batch like ours ("Attempt to
    # convert a value (PerReplica...)"), and under any strategy the abandoned iterator's
    # prefetching draws reshuffle seeds from the stream's shared generator at random times,
    # so the training order (and a seeded run's result) varies. Only the batch's shapes and
    # dtypes matter: the dataset's element spec gives them without opening an iterator.
    adapter = getattr(iterator, "data_adapter", None)
    if adapter is not None and data_batch is None and self._distribute_strategy is not None:
      data_batch = adapter.get_tf_dataset().element_spec
      iterator = None
    super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

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
    if is_multi_worker(self.distribute_strategy):
      # Keras (3.15) averages a step's logs over a multi-worker cluster with
      # `strategy.reduce(MEAN, value, axis=0)`, which fails on a scalar ("Invalid reduction
      # dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388): as [1]
      # vectors they reduce to the scalar mean over the replicas, as on one worker.
      result = {name: tf.reshape(value, [1]) for name, value in result.items()}
    return result


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


def learning_rate_schedule(learning_rate: float, schedule: str = "constant", *,
                           total_steps: int = 0, warmup_steps: int = 0):
  """A constant rate, or a cosine decay to 0 over `total_steps` after `warmup_steps` of linear
  warm-up from 0 (a function of the optimizer's step, so a resumed run continues it)."""
  if schedule == "constant":
    return learning_rate
  if schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate, decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
  raise ValueError(f"unknown schedule {schedule!r}; known: constant, cosine")


def build_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                    total_steps: int = 0, warmup_steps: int = 0) -> keras.optimizers.Optimizer:
  """Adam, or SGD with momentum 0.9, on `learning_rate_schedule`."""
  rate = learning_rate_schedule(learning_rate, schedule, total_steps=total_steps,
                                warmup_steps=warmup_steps)
  if name == "adam":
    return keras.optimizers.Adam(rate)
  if name == "sgd":
    return keras.optimizers.SGD(rate, momentum=0.9)
  raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")


@contextlib.contextmanager
def dtype_policy(name: str):
  """Builds the networks made inside under the Keras dtype policy `name` ("float32",
  "mixed_bfloat16", "mixed_float16"), restoring the previous global policy on exit (layers keep
  the policy they were built with). A model compiled inside under "mixed_float16" gets Keras'
  dynamic loss scaling (`LossScaleOptimizer`)."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


class _ProgressLogger(keras.callbacks.Callback):
  """One log line per epoch, so long runs show they are alive without Keras' progress bars."""

  def __init__(self, run_id: str, epochs: int):
    super().__init__()
    self.run_id, self.epochs = run_id, epochs

  def on_epoch_end(self, epoch, logs=None):
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items())
                      if isinstance(v, (int, float)) and k != "learning_rate")
    log.info("%s epoch %d/%d: %s", self.run_id, epoch + 1, self.epochs, shown)


class RunContext:
  """What runs of one stage invocation share: data, strategy, directories, loaded teachers."""

  def __init__(self, *, workdir: str | pathlib.Path, data: records.PreparedData,
               strategy: tf.distribute.Strategy, zoo_dir: str | pathlib.Path | None = None,
               labels_dir: str | pathlib.Path | None = None, safe_mode: bool = True,
               preset: str = "", shuffle_buffer: int = 10_000, cache: bool = True,
               steps_per_execution: int = 1, encoders: dict | None = None,
               imagenet_dir: str | None = None, precision: str = "float32",
               jit_compile: bool = False, reuse_models: int = 2,
               checkpoint: checkpointing.CheckpointPolicy = checkpointing.CheckpointPolicy(),
               fold_batchnorm: bool = True, retrain_stale: bool = False):
    self.workdir = pathlib.Path(workdir)
    self.data, self.strategy = data, strategy
    # False on the non-chief workers of a multi-worker cluster: they train in lockstep with
    # the chief but leave every file to it (see `is_writer`).
    self.is_writer = is_writer(strategy)
    self.zoo_dir = pathlib.Path(zoo_dir) if zoo_dir else None
    self.labels_dir = pathlib.Path(labels_dir) if labels_dir else self.workdir / "labels"
    self.safe_mode, self.preset = safe_mode, preset
    self.fold_batchnorm = fold_batchnorm  # Teachers run as folded inference copies.
    self.shuffle_buffer, self.cache = shuffle_buffer, cache
    # Speed settings: not part of a run's identity (recorded in each results row).
    self.steps_per_execution = steps_per_execution
    self.precision, self.jit_compile = precision, jit_compile
    self.all_ids = data.ids()
    self.encoders = dict(encoders or {})  # Stage 2: encoder name -> finetune.Encoder.
    self.imagenet_dir = imagenet_dir
    # Compiled, traced models of finished runs, kept for the next run of the same shape
    # (`execute_run` re-initialises them): up to `reuse_models`, least recently used dropped.
    self.reuse_models = reuse_models
    self.checkpoint = checkpoint  # When runs checkpoint within an epoch.
    self._warm: collections.OrderedDict[tuple, Distiller] = collections.OrderedDict()
    # Finished runs whose inputs changed are retrained (True) or refused (False).
    self.retrain_stale = retrain_stale
    self._split_digests: dict[str, str] | None = None
    self._data_digest: str | None = None

  def split_digests(self) -> dict[str, str]:
    """Digests of every split list of every scheme (read once per invocation)."""
    if self._split_digests is None:
      self._split_digests = provenance.split_digests(self.data, self.data.schemes)
    return self._split_digests

  def data_digest(self) -> str:
    if self._data_digest is None:
      self._data_digest = provenance.data_digest(self.data.root, self.data.shards)
    return self._data_digest

  def take_warm(self, key: tuple | None) -> "Distiller | None":
    """Removes and returns a kept model for `key`, if any."""
    return self._warm.pop(key, None) if key is not None else None

  def keep_warm(self, key: tuple | None, model: "Distiller") -> None:
    if key is None or self.reuse_models < 1:
      return
    self._warm[key] = model
    while len(self._warm) > self.reuse_models:
      self._warm.popitem(last=False)

  @property
  def replicas(self) -> int:
    return self.strategy.num_replicas_in_sync

  def num_outputs(self, task: str) -> int:
    return 1 if task == "binary" else self.data.num_classes


def _targets_fn(label_key: str, task: str, labelled_table, teacher_table, teacher_logits):
  """Maps a batch of records to (images, targets) with mask and, if cached, teacher logits.

  Works on whole batches (one vectorised lookup per batch, not a tf.data call per example).
  With `labelled_table` None every example counts as labelled (validation and test).
  """

  def fn(ex):
    label = ex[label_key]
    # A NaN/inf pixel (in any view) would turn the loss into NaN steps later; name it instead.
    finite = tf.reduce_all(tf.stack([
        tf.reduce_all(tf.math.is_finite(tf.reshape(view, [tf.shape(view)[0], -1])), 1)
        for view in tf.nest.flatten(ex["image"])]), 0)
    check = tf.debugging.Assert(tf.reduce_all(finite), [
        "NON-FINITE INPUT: NaN/inf pixels in the images of example(s)",
        tf.boolean_mask(ex["id"], tf.logical_not(finite))], summarize=8)
    with tf.control_dependencies([check]):
      label = tf.identity(label)
    if labelled_table is not None:
      mask = tf.cast(labelled_table.lookup(ex["id"]) > 0, tf.float32)
    else:
      mask = tf.ones_like(label, tf.float32)
    targets = {
        "label": tf.cast(label, tf.float32) if task == "binary" else tf.cast(label, tf.int32),
        "mask": mask,
    }
    if teacher_table is not None:
      targets["teacher"] = tf.gather(teacher_logits, teacher_table.lookup(ex["id"]))
    return ex["image"], targets

  return fn


class RunDatasets:
  """The train / val / test streams of one run and their sizes.

  Args:
    run: the run.
    ctx: shared context (data, replicas, caching).
    cached: the teacher's cached (ids, logits), or None.
    teacher_in_targets: put cached logits in the batch targets (offline teaching); with an
      online teacher the cache only groups the pool for balancing.
  """

  def __init__(self, run: RunSpec, ctx: RunContext, cached: tuple[np.ndarray, np.ndarray] | None,
               teacher_in_targets: bool = True):
    data = ctx.data
    splits = data.splits(run.labeling)
    self.label_key = data.label_key(run.labeling, run.task)
    labelled = splits[splits_lib.split_name("train", run.split_percent)]
    if run.stage == "distill":
      others = [data.splits(s) for s in data.schemes if s != run.labeling]
      self.train_ids = splits_lib.unlabelled_pool(ctx.all_ids, splits, run.protocol, others)
      # The original protocol mixes no ground truth in; holdout may (alpha) on its labelled split.
      mask_ids = labelled if run.protocol == "holdout" else []
    else:
      self.train_ids, mask_ids = labelled, labelled
    self.val_ids = splits[splits_lib.split_name("val", run.split_percent)] if run.early_stopping else []
    self.test_ids = splits[splits_lib.TEST]
    if run.student_classes:
      # The unseen-class experiment: the student never sees an example of the other classes,
      # in training or in model selection (the test split keeps every class).
      keep = set(run.student_classes)
      classes = _classes_of(data, [*self.train_ids, *self.val_ids], self.label_key)
      self.train_ids = [i for i in self.train_ids if classes[i] in keep]
      self.val_ids = [i for i in self.val_ids if classes[i] in keep]
      mask_ids = [i for i in mask_ids if classes.get(i) in keep]
    if not self.train_ids:
      raise ValueError(f"run {run.run_id}: the training set is empty (scheme {run.labeling}, "
                       f"{run.split_percent}%); check the split lists of {data.root}")
    if not self.test_ids:
      raise ValueError(f"run {run.run_id}: the test split of {run.labeling} is empty")
    if run.early_stopping and not self.val_ids:
      raise ValueError(f"run {run.run_id}: early stopping needs validation examples but "
                       f"val_{run.split_percent} of {run.labeling} is empty; use more data or "
                       "--noearly_stopping")
    self.task, self.ctx, self.run = run.task, ctx, run
    self._mask_table = records.id_table(mask_ids, np.ones(len(mask_ids), np.int64), default=0)
    self._teacher_table = self._teacher_logits = None
    self.groups = [self.train_ids]
    if cached is not None:
      ids, logits = cached
      row_of = {i: r for r, i in enumerate(ids.tolist())}
      missing = [i for i in (*self.train_ids, *self.val_ids, *self.test_ids) if i not in row_of]
      if missing:
        raise ValueError(f"run {run.run_id}: the teacher's cached labels miss {len(missing)} of "
                         f"its examples (e.g. {missing[0]}); rerun `python -m stages.label`")
      if teacher_in_targets:
        self._teacher_table = records.id_table(ids.tolist(), np.arange(len(ids)), default=-1)
        self._teacher_logits = tf.constant(logits)
      if run.pool_balance == "teacher":
        self.groups = _group_by_teacher_class(self.train_ids, logits[[row_of[i] for i in self.train_ids]])
        if len(self.groups) < 2:
          log.warning("run %s: the teacher gives one class to the whole pool; it cannot be "
                      "balanced", run.run_id)

  def _targets(self, training: bool):
    return _targets_fn(self.label_key, self.task, self._mask_table if training else None,
                       self._teacher_table, self._teacher_logits)

  def _examples(self, ids) -> tf.data.Dataset:
    # Only the run's label field is parsed, cached and shuffled with the image and id.
    return shard_by_data(pipeline.sized(self.ctx.data, ids, labels=[self.label_key]))

  def global_batch(self) -> int:
    return self.run.batch_size * self.ctx.replicas

  def steps_per_epoch(self) -> int:
    """One pass over the training set, or the run's `min_steps` if more: a run on a small
    labelled split (30 digits: one batch) otherwise gets one optimizer step per epoch, far
    fewer than a distilled student on the pool, and its comparison with it is a comparison
    of training budgets."""
    return max(1, math.ceil(len(self.train_ids) / self.global_batch()), self.run.min_steps)

  def _shuffled(self, ids) -> tf.data.Dataset:
    return pipeline.shuffled(self._examples(ids), size=len(ids), seed=self.run.seed,
                             cache=self.ctx.cache, shuffle_buffer=self.ctx.shuffle_buffer)

  def train(self, skip_batches: int = 0) -> tf.data.Dataset:
    """Batches of (images, targets): shuffled (balanced) examples -> the student's augmented
    view (and the teacher's, for independent views) -> batch -> targets -> mixup of the batch.

    Every random draw is a stateless function of the run's seed, so a seed repeats a run, and
    `skip_batches` gives the same stream less its first batches (a resumed run's position):
    skipped examples are read and shuffled but neither augmented nor batched.
    """
    run = self.run
    if len(self.groups) > 1:  # Equal draws from each teacher class, each stream reshuffled.
      ds = tf.data.Dataset.sample_from_datasets(
          [self._shuffled(g) for g in self.groups], weights=[1 / len(self.groups)] * len(self.groups),
          seed=run.seed)
    else:
      ds = self._shuffled(self.train_ids)
    skipped = skip_batches * self.global_batch()
    if run.augment:
      ds = tf.data.Dataset.zip((ds, _seeds(run.seed))).skip(skipped).map(
          _views_fn(run.augment, independent=run.teacher_mode == "independent"),
          num_parallel_calls=tf.data.AUTOTUNE)
    else:
      ds = ds.skip(skipped)
    ds = ds.batch(self.global_batch(), drop_remainder=True).map(
        self._targets(training=True), num_parallel_calls=tf.data.AUTOTUNE)
    if run.mixup:
      ds = tf.data.Dataset.zip((ds, _seeds(run.seed + 1).skip(skip_batches))).map(
          _mixup_fn(run.mixup))
    return ds.prefetch(tf.data.AUTOTUNE)

  def evaluation(self, ids) -> tf.data.Dataset:
    ds = self._examples(ids)
    if self.ctx.cache:  # Validation repeats every epoch; rescanning the records would dominate.
      ds = ds.cache()
    return ds.batch(self.global_batch()).map(
        self._targets(training=False), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

  def test_examples(self) -> tf.data.Dataset:
    """Test records with ids, for predictions: batches {"id", "image", label, "teacher"?}."""
    fn = self._targets(training=False)

    def with_id(batch):
      image, targets = fn(batch)
      return {"id": batch["id"], "image": image, **targets}

    return self._examples(self.test_ids).batch(self.global_batch()).map(with_id).prefetch(
        tf.data.AUTOTUNE)


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` with tf.data's auto-sharding set to DATA (the option reaches every dataset built on
  it): under MultiWorkerMirroredStrategy each worker runs the whole, seeded pipeline and keeps
  its replicas' slices of each global batch, so the workers together train on exactly the
  batches one process would. The default (AUTO, sharding by file) would give each worker
  other TFRecord shards: other examples, and other counts once the records are filtered by id.
  One-worker strategies do not shard."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return ds.with_options(options)


def _seeds(seed: int) -> tf.data.Dataset:
  """An endless, seeded stream of int64 [2] seeds for stateless random ops."""
  return tf.data.Dataset.random(seed=seed).batch(2)


def _views_fn(policy_name: str, *, independent: bool):
  """Maps (example, seed) to the example with its image replaced by the student's augmented
  view, or by the dict {"student", "teacher"} of two independent views."""
  policy = augment_lib.POLICIES.get(policy_name)

  def fn(example, seed):
    image = example["image"]
    student_seed, teacher_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    view = policy(image, student_seed)
    if independent:
      view = {"student": view, "teacher": policy(image, teacher_seed)}
    return {**example, "image": view}

  return fn


def _mixup_fn(concentration: float):
  """Maps ((images, targets), seed) to mixup of the batch with itself reversed, one weight
  lambda ~ Beta(c, c) per example. Teacher and student then see the same mixed images
  (function matching); the ground-truth mask is cleared, since mixed images have no label."""

  def fn(batch, seed):
    images, targets = batch
    first, second = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    size = tf.shape(images)[:1]
    a = tf.random.stateless_gamma(size, first, alpha=concentration)
    b = tf.random.stateless_gamma(size, second, alpha=concentration)
    lam = tf.reshape(a / tf.maximum(a + b, 1e-12), [-1, 1, 1, 1])
    mixed = lam * images + (1.0 - lam) * tf.reverse(images, [0])
    return mixed, {**targets, "mask": tf.zeros_like(targets["mask"])}

  return fn


def _classes_of(data: records.PreparedData, ids: list[str], key: str) -> dict[str, int]:
  """The stored class of each of `ids` (one streaming pass over their records)."""
  out: dict[str, int] = {}
  ds = data.examples(ids).map(lambda ex: (ex["id"], ex[key])).batch(4096)
  for batch_ids, labels in ds.as_numpy_iterator():
    out.update(zip(batch_ids.astype(str).tolist(), labels.tolist()))
  return out


def _group_by_teacher_class(ids: list[str], logits: np.ndarray) -> list[list[str]]:
  """Splits ids by the teacher's hard class (logit > 0, or argmax), dropping empty classes."""
  classes = (logits[:, 0] > 0).astype(int) if logits.shape[1] == 1 else logits.argmax(1)
  ids_array = np.asarray(ids, dtype=object)
  return [ids_array[classes == c].tolist() for c in np.unique(classes)]


@functools.lru_cache(maxsize=None)
def code_version() -> str:
  """The package version plus the git commit of its checkout, when there is one."""
  try:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=pathlib.Path(simclr_distill.__file__).parent,
        capture_output=True, text=True, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    commit = ""
  return f"{simclr_distill.__version__}+{commit}" if commit else simclr_distill.__version__


def _probabilities(logits: np.ndarray, task: str) -> np.ndarray:
  if task == "binary":
    return 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80, 80)))
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)


def predict_test(student: keras.Model, datasets: RunDatasets, teacher) -> pd.DataFrame:
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
    frame["student_prob"] = _probabilities(s, task)
    frame["teacher_prob"] = _probabilities(t, task) if t is not None else np.nan
  else:
    probs = _probabilities(s, task)
    frame["student_pred"] = probs.argmax(-1)
    for k in range(probs.shape[1]):
      frame[f"student_prob_{k}"] = probs[:, k]
    frame["teacher_pred"] = t.argmax(-1) if t is not None else -1
    if t is not None:
      teacher_probs = _probabilities(t, task)
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


def build_network(run: RunSpec, ctx: RunContext, num_outputs: int) -> keras.Model:
  """The model a run trains: a stage-2 teacher on its pretrained encoder, a student, or a
  baseline (from scratch, or on a frozen ImageNet backbone)."""
  if run.arch == matrix.SAME_ARCH:
    return _own_network(run, ctx, num_outputs)
  if run.stage == "finetune" and run.encoder:
    encoder = ctx.encoders.get(run.encoder)
    if run.encoder != finetune.RANDOM_INIT and (encoder is None or not encoder.checkpoint):
      raise ValueError(f"run {run.run_id}: no checkpoint for encoder {run.encoder!r}; known: "
                       f"{', '.join(ctx.encoders) or 'none'}")
    return finetune.build_teacher(
        encoder.checkpoint if encoder else None, arch=run.arch, input_shape=ctx.data.image_shape,
        width=run.width, num_outputs=num_outputs, dropout=run.dropout, freeze=run.freeze,
        safe_mode=ctx.safe_mode, seed=run.seed)
  model = models.build_model(run.arch, ctx.data.image_shape, num_outputs, head=run.head,
                             dropout=run.dropout, width=run.width)
  if run.init == "imagenet":
    models.load_imagenet_backbone(model, run.arch,
                                  models.imagenet_weights_path(run.arch, ctx.imagenet_dir))
  return model


def _own_network(run: RunSpec, ctx: RunContext, num_outputs: int) -> keras.Model:
  """Self-distillation: the teacher's network, re-initialised (`keras.models.clone_model`
  builds every layer anew from its config)."""
  teacher = teachers_lib.load_teacher(run.teacher, ctx.zoo_dir, image_shape=ctx.data.image_shape,
                                      num_outputs=num_outputs, safe_mode=ctx.safe_mode,
                                      fold_batchnorm=False)  # The network itself is copied.
  if isinstance(teacher, teachers_lib.EnsembleTeacher):
    raise ValueError(f"run {run.run_id}: arch 'same' copies one teacher's network; "
                     f"{run.teacher.teacher_id} is an ensemble")
  if teacher.output != "logits":
    raise ValueError(f"run {run.run_id}: arch 'same' needs a teacher that outputs logits; "
                     f"{run.teacher.teacher_id} outputs {teacher.output}")
  keras.utils.set_random_seed(run.seed)  # Loading drew from the random state: reset it.
  try:
    return keras.models.clone_model(teacher.model)
  except Exception as e:  # A SavedModel wrapper, or a custom layer without a config.
    raise ValueError(f"run {run.run_id}: cannot copy the network of teacher "
                     f"{run.teacher.teacher_id} ({type(e).__name__}: {e}); use a named student "
                     "architecture") from e


def warm_key(run: RunSpec, ctx: RunContext, num_outputs: int, steps: int, *,
             offline: bool) -> tuple | None:
  """What a compiled model's traced steps depend on, for runs that may reuse another run's
  model (`RunContext.keep_warm`); None for runs that never do: online teachers (the teacher
  is in the model), networks copied from a teacher or built on a pretrained encoder, and
  float16 loss scaling (its scale is optimizer state that is not reset)."""
  if (ctx.reuse_models < 1 or (run.stage == "distill" and not offline) or
      run.arch == matrix.SAME_ARCH or run.encoder or ctx.precision == "mixed_float16" or
      run.optimizer not in ("adam", "sgd")):
    return None
  schedule = (run.schedule, run.epochs * steps, run.warmup_epochs * steps) if (
      run.schedule != "constant") else (run.schedule,)
  return (run.stage == "distill", run.arch, run.head, run.dropout, run.width, run.init, run.task,
          num_outputs, tuple(ctx.data.image_shape), run.loss.kind, run.loss.temperature,
          run.loss.alpha, run.optimizer, schedule, ctx.precision, ctx.jit_compile,
          ctx.steps_per_execution, ctx.replicas)


def reinitialise(model: "Distiller", fresh: keras.Model, learning_rate: float) -> bool:
  """Gives a kept model the state of a newly built one: every student variable (weights,
  normalisation statistics, dropout seed states) from `fresh`, the optimizer's moments and
  step count zeroed and its learning rate set. Returns False (nothing changed) when the
  networks' variables do not match one to one."""
  target, source = model.student.variables, fresh.variables
  if len(target) != len(source) or any(a.shape != b.shape for a, b in zip(target, source)):
    return False
  for a, b in zip(target, source):
    a.assign(b)
  optimizer = model.optimizer
  rate = getattr(optimizer, "_learning_rate", None)
  for variable in optimizer.variables:
    if variable is rate:
      variable.assign(learning_rate)
    else:
      variable.assign(tf.zeros(variable.shape, variable.dtype))
  return True


def build_run_model(run: RunSpec, ctx: RunContext, steps: int, *, offline: bool):
  """The compiled model a run trains, in the run's initial state: (distiller, student, online
  teacher or None, warm key).

  The student's initial weights (and its dropout seeds) are drawn right after the global
  random state is reset to the run's seed, AFTER any online teacher is loaded: loading a
  `.keras` or `.h5` file builds layers and so draws from that state, and the student of an
  online run would otherwise start elsewhere than the same seed's offline student. A run's
  initial weights therefore depend only on its seed and settings, never on its teacher's file
  format, its teaching mode or what the process loaded before.
  """
  distilling = run.stage == "distill"
  num_outputs = ctx.num_outputs(run.task)
  teacher = None
  with ctx.strategy.scope():
    if distilling and not offline:  # The teacher keeps the precision it was saved with.
      teacher = teachers_lib.load_teacher(run.teacher, ctx.zoo_dir, image_shape=ctx.data.image_shape,
                                          num_outputs=num_outputs, safe_mode=ctx.safe_mode,
                                          fold_batchnorm=ctx.fold_batchnorm)
    with dtype_policy(ctx.precision):
      keras.utils.set_random_seed(run.seed)
      student = build_network(run, ctx, num_outputs)
      key = warm_key(run, ctx, num_outputs, steps, offline=offline)
      distiller = ctx.take_warm(key)
      if distiller is not None and reinitialise(distiller, student, run.learning_rate):
        # The same network, optimizer and traced steps as a finished run, in this run's
        # initial state: tracing (a minute for a ResNet on CPU) is paid once per shape.
        student = distiller.student
        log.info("%s reuses the traced model of an earlier run", run.run_id)
      else:
        distiller = Distiller(student, task=run.task, loss_kind=run.loss.kind,
                              temperature=run.loss.temperature, alpha=run.loss.alpha,
                              teacher=teacher, distill=distilling)
        distiller.compile(optimizer=build_optimizer(
            run.optimizer, run.learning_rate, schedule=run.schedule,
            total_steps=run.epochs * steps, warmup_steps=run.warmup_epochs * steps),
            steps_per_execution=ctx.steps_per_execution, jit_compile=ctx.jit_compile)
  # Freed before training: what earlier runs and stages dropped (models not kept or no longer
  # kept, loaded teachers, an earlier stage's models) and the network just built to re-initialise
  # a kept model. Keras models sit in reference cycles, which only Python's full collection
  # frees, and with TensorFlow loaded that runs once every several runs: memory climbed by a
  # network a run until it did.
  gc.collect()
  return distiller, student, teacher, key


def execute_run(run: RunSpec, ctx: RunContext) -> dict[str, Any]:
  """Trains, saves and scores one run; writes its files and returns its results row.

  Files in `<workdir>/runs/<run_id>/`: `student.keras` (loads with plain
  `keras.models.load_model`), `predictions.parquet` (test-split id, label, teacher and student
  probabilities), `config.json` (resolved settings), `history.csv` (one line per epoch, as it
  goes), and last `result.json`. While training, `backup/` holds the weights, optimizer state
  and epoch of the last finished epoch, and `selection/` the model selection's best epoch and
  weights: a killed run resumes there when rerun, and both are deleted when the run finishes.
  """
  run_dir = ctx.workdir / results.RUNS / run.run_id
  run_dir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  keras.utils.set_random_seed(run.seed)
  distilling = run.stage == "distill"
  cached = None
  offline = distilling and run.teacher_mode in ("offline", "fixed")
  if offline or (distilling and run.pool_balance == "teacher"):
    cached = labelling.load_teacher_logits(ctx.labels_dir, run.teacher)
  inputs = provenance.run_inputs(run, ctx)  # What this run reads, as it starts.
  datasets = RunDatasets(run, ctx, cached, teacher_in_targets=offline)
  num_outputs = ctx.num_outputs(run.task)
  steps = datasets.steps_per_epoch()
  if datasets.global_batch() > len(datasets.train_ids):
    log.warning("%s: the global batch (%d) is larger than the training set (%d examples), so "
                "every step repeats each example about %d times and costs as much; lower "
                "--batch_size to at most %d", run.run_id, datasets.global_batch(),
                len(datasets.train_ids), datasets.global_batch() // len(datasets.train_ids),
                len(datasets.train_ids) // ctx.replicas or 1)
  distiller, student, teacher, key = build_run_model(run, ctx, steps, offline=offline)
  checkpoint = checkpointing.StepCheckpoint(
      run_dir, lambda: checkpointing.training_variables(distiller, student), ctx.checkpoint,
      writer=ctx.is_writer)
  saved = checkpoint.saved_position()
  if ctx.is_writer:  # Other workers of a cluster leave the run's files to the chief.
    if saved is None:  # A fresh start: nothing of an earlier attempt may survive.
      shutil.rmtree(run_dir / SELECTION, ignore_errors=True)
      shutil.rmtree(run_dir / BACKUP, ignore_errors=True)  # Keras backups of older versions.
    fileio.align_history(run_dir / HISTORY, saved.epoch if saved else None)
  # One forward pass builds the wrapper, so every variable exists before a restore.
  distiller(tf.zeros((1, *ctx.data.image_shape)), training=False)
  progress = _ProgressLogger(run.run_id, run.epochs)
  selection = None
  callbacks: list[keras.callbacks.Callback] = [
      keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True)] if ctx.is_writer else []
  if run.early_stopping:  # Its state is saved before the checkpoint of the same epoch.
    selection = selection_lib.ModelSelection(student, monitor=run.monitor, patience=run.patience,
                                             select=run.select, state_dir=run_dir / SELECTION,
                                             writer=ctx.is_writer)
    selection.defer_finish = True  # Once, after the last of a resumed run's `fit` calls.
    callbacks.append(selection)
  callbacks += [progress, keras.callbacks.TerminateOnNaN()]
  fit_start = time.perf_counter()
  history = checkpointing.resumable_fit(
      distiller, datasets.train, checkpoint=checkpoint, epochs=run.epochs, steps_per_epoch=steps,
      validation_data=datasets.evaluation(datasets.val_ids) if run.early_stopping else None,
      callbacks=callbacks)
  if selection is not None:
    selection.finish()
  fit_seconds = time.perf_counter() - fit_start
  epochs_run = checkpoint.position.epoch
  nonfinite = checkpoint.position.nonfinite or not np.isfinite(
      np.asarray(history.get("loss", []), np.float64)).all()
  best_epoch = selection.best_epoch if selection is not None and selection.best_epoch else epochs_run
  selected_epoch = best_epoch if selection is not None and run.select == "best" else epochs_run
  axes = run.axes()
  teacher_entry = run.teacher
  row: dict[str, Any] = {
      "run_id": run.run_id, "stage": run.stage, "protocol": run.protocol, "task": run.task,
      "model": axes["encoder"], "labeling": run.labeling,
      "split_percent": run.split_percent,
      "arch": (f"{run.arch}:{teacher_entry.arch}" if run.arch == matrix.SAME_ARCH and teacher_entry
               and teacher_entry.arch else run.arch),
      "teacher_id": axes["teacher_id"], "encoder": axes["encoder"],
      "encoder_optimizer": axes["encoder_optimizer"], "freeze": run.freeze, "init": run.init,
      "method": run.method, "teacher_mode": run.teacher_mode if teacher_entry else "",
      "teacher_members": "+".join(m.teacher_id for m in teacher_entry.members) if teacher_entry else "",
      "ensemble_combine": teacher_entry.combine if teacher_entry else "",
      "generation": run.generation if distilling else None,
      "root_teacher_id": matrix.root_teacher_id(run), "augment": run.augment, "mixup": run.mixup,
      "pool_balance": run.pool_balance, "student_optimizer": run.optimizer,
      "learning_rate": run.learning_rate, "schedule": run.schedule,
      "loss_kind": run.loss.kind if distilling else "supervised",
      "temperature": run.loss.temperature, "alpha": run.loss.alpha,
      "student_classes": ",".join(map(str, run.student_classes)),
      "epochs_run": epochs_run, "best_epoch": best_epoch, "selected_epoch": selected_epoch,
      "select": run.select if selection is not None else "last",
      "monitor": run.monitor if selection is not None else "",
      "max_epochs": run.epochs, "batch_size": datasets.global_batch(), "replicas": ctx.replicas,
      "seed": run.seed, "steps_per_epoch": steps, "dtype_policy": ctx.precision,
      "jit_compile": ctx.jit_compile,
      "steps_per_execution": ctx.steps_per_execution, "train_examples": len(datasets.train_ids),
      "test_examples": len(datasets.test_ids), "dataset": run.dataset, "preset": ctx.preset,
      "code_version": code_version(),
      "images_per_second": checkpoint.steps_trained * datasets.global_batch()
                           / max(fit_seconds, 1e-9),
  }
  if nonfinite:
    row.update(status="failed", error=f"training loss became non-finite at epoch {epochs_run}; "
               "lower the learning rate or check the inputs and teacher logits")
  else:
    frame = predict_test(student, datasets, teacher)
    row.update(score(frame, run.task, run.student_classes), status="ok", error="")
    row["collapsed"] = collapsed_lists(student, datasets, frame)
    if row["collapsed"]:
      log.warning("%s predicts a single class on its whole %s list: the model collapsed "
                  "(flagged in its row's `collapsed` column)", run.run_id,
                  row["collapsed"].replace("+", " and "))
    row["last_f1"] = row.get("f1")
    if selected_epoch != epochs_run and selection.last_weights is not None:
      # Scored at the last epoch too, so what model selection bought can be measured.
      kept = student.get_weights()
      student.set_weights(selection.last_weights)
      row["last_f1"] = score(predict_test(student, datasets, teacher), run.task).get("f1")
      student.set_weights(kept)
    if ctx.is_writer:  # Every worker predicted (a collective); one writes.
      with fileio.atomic_path(run_dir / CHECKPOINT, suffix=".keras") as tmp:
        student.save(tmp)
      fileio.atomic_write(run_dir / PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
    row["checkpoint"] = f"{results.RUNS}/{run.run_id}/{CHECKPOINT}"  # Relative to the workdir.
  if ctx.is_writer:
    fileio.write_json(run_dir / CONFIG, {"run": run.settings(), "run_id": run.run_id,
                                         "replicas": ctx.replicas,
                                         "data_dir": fileio.relative_to(ctx.data.root, ctx.workdir),
                                         "image_shape": list(ctx.data.image_shape),
                                         "preprocessing": ctx.data.manifest.get("transform", "")})
  row["wall_seconds"] = time.perf_counter() - start
  row["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
  if ctx.is_writer:
    results.write_row(ctx.workdir, {**row, provenance.KEY: provenance.record(
        inputs, run_dir, (CHECKPOINT, PREDICTIONS), row["code_version"])})
  # Only now: a kill before the row leaves the state a rerun needs to finish identically.
  checkpoint.delete()
  if ctx.is_writer:
    shutil.rmtree(run_dir / SELECTION, ignore_errors=True)
  ctx.keep_warm(key, distiller)
  if row.get("checkpoint"):  # On disk relative to the workdir; in this process, where it is.
    row["checkpoint"] = str((run_dir / CHECKPOINT).absolute())
  return row
