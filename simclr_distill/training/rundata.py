"""A run's data: its train, validation and test streams, their targets and their sizes.

Training batches are (images, targets): shuffled (optionally teacher-balanced) examples -> the
student's augmented view (and the teacher's, for independent views) -> batch -> targets (the
ground truth, its mask and cached teacher logits) -> mixup. Every random draw is a stateless
function of the run's seed, so a seed repeats a run and a resumed run's stream continues it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from simclr_distill import augment as augment_lib
from simclr_distill.data import pipeline, records
from simclr_distill.data import splits as splits_lib
from simclr_distill.matrix import RunSpec

if TYPE_CHECKING:
  from simclr_distill.training.context import RunContext

log = logging.getLogger(__name__)


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

  def __init__(self, run: RunSpec, ctx: "RunContext", cached: tuple[np.ndarray, np.ndarray] | None,
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
