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

import functools
import logging
import math
import pathlib
import subprocess
import time
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import simclr_distill
from simclr_distill import fileio, finetune, labelling, losses, metrics, models, results
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


def build_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy called `name`.

  "auto" picks TPU when `tpu` is given, MirroredStrategy when several GPUs are visible, else
  the default strategy. "mirrored" without GPUs mirrors over the logical CPU devices (useful
  for tests; one logical CPU gives one replica).
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
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; known: auto, default, mirrored, multi_worker, tpu")


class Distiller(keras.Model):
  """Trains `student` on teacher targets and/or masked ground truth.

  Batches are `(images, targets)` with targets a dict: "label" (ground truth, any value where
  unlabelled), "mask" (1 labelled, 0 not) and, for offline teaching, "teacher" (cached logits).

  Args:
    student: the model being trained; outputs logits.
    task: "binary" or "multiclass".
    loss_kind, temperature, alpha: see `losses.distillation_loss`.
    teacher: a `teachers.Teacher` for online teaching (run inside the step), or None.
    distill: False trains on the masked ground truth alone (baselines, demo teachers).
  """

  def __init__(self, student: keras.Model, *, task: str, loss_kind: str = "hard",
               temperature: float = 1.0, alpha: float = 0.0,
               teacher: teachers_lib.Teacher | None = None, distill: bool = True, **kwargs):
    super().__init__(name="distiller", **kwargs)
    self.student = student
    self.teacher = teacher
    if teacher is not None:
      self.teacher_model = teacher.model
      self.teacher_model.trainable = False
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
    self._step_teacher_logits = None

  def call(self, images, training=False):
    return self.student(images, training=training)

  def _teacher_logits(self, images, targets):
    if self.teacher is not None:
      return self.teacher.logits(images)
    return targets.get("teacher")

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    del sample_weight  # Weighting is the mask's job.
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
      total = self.alpha * label_term + (1.0 - self.alpha) * distill_term
      self.distill_loss_tracker.update_state(distill_term)
    self.label_loss_tracker.update_state(label_term)
    if self.losses:
      total += tf.add_n(self.losses)
    # As Keras' own losses do: each replica's loss is 1/replicas of the global mean.
    return total / tf.distribute.get_strategy().num_replicas_in_sync

  def compute_metrics(self, x, y, y_pred, sample_weight=None):
    # Label metrics count the labelled examples only (all of them in validation).
    if self.task == "binary":
      self.auc.update_state(y["label"], y_pred[..., 0], sample_weight=y["mask"])
    else:
      self.accuracy.update_state(y["label"], y_pred, sample_weight=y["mask"])
    if self.distill:
      teacher = self._step_teacher_logits
      if teacher is None:  # compute_metrics called on its own
        teacher = self._teacher_logits(x, y)
      self.agreement.update_state(_agree(teacher, y_pred, self.task))
      self._step_teacher_logits = None
    return self.get_metrics_result()


def _agree(teacher_logits, student_logits, task: str):
  if task == "binary":
    return tf.cast(tf.equal(teacher_logits > 0, student_logits > 0), tf.float32)
  return tf.cast(tf.equal(tf.argmax(teacher_logits, -1), tf.argmax(student_logits, -1)), tf.float32)


def build_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
  if name == "adam":
    return keras.optimizers.Adam(learning_rate)
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate, momentum=0.9)
  raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")


class _ProgressLogger(keras.callbacks.Callback):
  """One log line per epoch, so long runs show they are alive without Keras' progress bars;
  remembers the last finished epoch (counted from the run's start, across resumptions)."""

  def __init__(self, run_id: str, epochs: int):
    super().__init__()
    self.run_id, self.epochs = run_id, epochs
    self.epochs_done = 0

  def on_epoch_end(self, epoch, logs=None):
    self.epochs_done = epoch + 1
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
               imagenet_dir: str | None = None):
    self.workdir = pathlib.Path(workdir)
    self.data, self.strategy = data, strategy
    self.zoo_dir = pathlib.Path(zoo_dir) if zoo_dir else None
    self.labels_dir = pathlib.Path(labels_dir) if labels_dir else self.workdir / "labels"
    self.safe_mode, self.preset = safe_mode, preset
    self.shuffle_buffer, self.cache = shuffle_buffer, cache
    self.steps_per_execution = steps_per_execution  # Speed only: not part of a run's identity.
    self.all_ids = data.ids()
    self.encoders = dict(encoders or {})  # Stage 2: encoder name -> finetune.Encoder.
    self.imagenet_dir = imagenet_dir

  @property
  def replicas(self) -> int:
    return self.strategy.num_replicas_in_sync

  def num_outputs(self, task: str) -> int:
    return 1 if task == "binary" else self.data.num_classes


def _targets_fn(label_key: str, task: str, labelled_table, teacher_table, teacher_logits):
  """Maps a record to (image, targets) with mask and, if cached, teacher logits.

  With `labelled_table` None every example counts as labelled (validation and test).
  """

  def fn(ex):
    label = ex[label_key]
    labelled = (labelled_table.lookup(ex["id"]) > 0) if labelled_table is not None else True
    targets = {
        "label": tf.cast(label, tf.float32) if task == "binary" else tf.cast(label, tf.int32),
        "mask": tf.cast(labelled, tf.float32),
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

  def _stream(self, ids, training: bool):
    return pipeline.sized(self.ctx.data, ids).map(self._targets(training),
                                                  num_parallel_calls=tf.data.AUTOTUNE)

  def global_batch(self) -> int:
    return self.run.batch_size * self.ctx.replicas

  def steps_per_epoch(self) -> int:
    return max(1, math.ceil(len(self.train_ids) / self.global_batch()))

  def _shuffled(self, ids) -> tf.data.Dataset:
    return pipeline.shuffled(self._stream(ids, training=True), size=len(ids), seed=self.run.seed,
                             cache=self.ctx.cache, shuffle_buffer=self.ctx.shuffle_buffer)

  def train(self) -> tf.data.Dataset:
    if len(self.groups) > 1:  # Equal draws from each teacher class, each stream reshuffled.
      ds = tf.data.Dataset.sample_from_datasets(
          [self._shuffled(g) for g in self.groups], weights=[1 / len(self.groups)] * len(self.groups),
          seed=self.run.seed)
    else:
      ds = self._shuffled(self.train_ids)
    return pipeline.batched(ds, self.global_batch(), training=True)

  def evaluation(self, ids) -> tf.data.Dataset:
    ds = self._stream(ids, training=False)
    if self.ctx.cache:  # Validation repeats every epoch; rescanning the records would dominate.
      ds = ds.cache()
    return pipeline.batched(ds, self.global_batch(), training=False)

  def test_examples(self) -> tf.data.Dataset:
    """Test records with ids, for predictions: {"id", "image", label, "teacher"?}."""
    fn = self._targets(training=False)

    def with_id(image, targets, example_id):
      return {"id": example_id, "image": image, **targets}

    ds = pipeline.sized(self.ctx.data, self.test_ids).map(lambda ex: with_id(*fn(ex), ex["id"]))
    return pipeline.batched(ds, self.global_batch(), training=False)


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
  return frame


def score(frame: pd.DataFrame, task: str) -> dict[str, Any]:
  """Label metrics, test loss and teacher fidelity from a predictions frame."""
  labels = frame["label"].to_numpy()
  if task == "binary":
    probs = frame["student_prob"].to_numpy()
    out = metrics.binary_metrics(labels, probs)
    out["loss"] = metrics.binary_log_loss(labels, probs)
    teacher = frame["teacher_prob"].to_numpy()
    if np.isfinite(teacher).all():
      out["agreement"] = float(np.mean((probs > 0.5) == (teacher > 0.5)))
      out["teacher_f1"] = metrics.binary_metrics(labels, teacher)["f1"]
    return out
  probs = frame[[c for c in frame.columns if c.startswith("student_prob_")]].to_numpy()
  m = metrics.multiclass_metrics(labels, probs)
  out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "f1": m["macro_f1"],
         "precision": m["macro_precision"], "recall": m["macro_recall"], "loss": m["log_loss"]}
  if (frame["teacher_pred"] >= 0).all():
    out["agreement"] = float(np.mean(frame["teacher_pred"] == frame["student_pred"]))
  return out


def build_network(run: RunSpec, ctx: RunContext, num_outputs: int) -> keras.Model:
  """The model a run trains: a stage-2 teacher on its pretrained encoder, a student, or a
  baseline (from scratch, or on a frozen ImageNet backbone)."""
  if run.stage == "finetune" and run.encoder:
    encoder = ctx.encoders.get(run.encoder)
    if run.encoder != finetune.RANDOM_INIT and (encoder is None or not encoder.checkpoint):
      raise ValueError(f"run {run.run_id}: no checkpoint for encoder {run.encoder!r}; known: "
                       f"{', '.join(ctx.encoders) or 'none'}")
    return finetune.build_teacher(
        encoder.checkpoint if encoder else None, arch=run.arch, input_shape=ctx.data.image_shape,
        width=run.width, num_outputs=num_outputs, dropout=run.dropout, freeze=run.freeze,
        safe_mode=ctx.safe_mode)
  model = models.build_model(run.arch, ctx.data.image_shape, num_outputs, head=run.head,
                             dropout=run.dropout, width=run.width)
  if run.init == "imagenet":
    models.load_imagenet_backbone(model, run.arch,
                                  models.imagenet_weights_path(run.arch, ctx.imagenet_dir))
  return model


def execute_run(run: RunSpec, ctx: RunContext) -> dict[str, Any]:
  """Trains, saves and scores one run; writes its files and returns its results row.

  Files in `<workdir>/runs/<run_id>/`: `student.keras` (loads with plain
  `keras.models.load_model`), `predictions.parquet` (test-split id, label, teacher and student
  probabilities), `config.json` (resolved settings), `history.csv` (one line per epoch, as it
  goes), and last `result.json`. While training, `backup/` holds the weights, optimizer state
  and epoch of the last finished epoch: a killed run resumes there when rerun (early
  stopping's patience and best weights restart from that epoch), and the backup is deleted
  when the run finishes.
  """
  run_dir = ctx.workdir / results.RUNS / run.run_id
  run_dir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  keras.utils.set_random_seed(run.seed)
  teacher = None
  cached = None
  offline = run.stage == "distill" and run.teacher_mode == "offline"
  if offline or (run.stage == "distill" and run.pool_balance == "teacher"):
    cached = labelling.load_cached_logits(ctx.labels_dir, run.teacher.teacher_id)
  datasets = RunDatasets(run, ctx, cached, teacher_in_targets=offline)
  num_outputs = ctx.num_outputs(run.task)
  with ctx.strategy.scope():
    if run.stage == "distill" and run.teacher_mode == "online":
      teacher = teachers_lib.load_teacher(run.teacher, ctx.zoo_dir, image_shape=ctx.data.image_shape,
                                          num_outputs=num_outputs, safe_mode=ctx.safe_mode)
    student = build_network(run, ctx, num_outputs)
    distiller = Distiller(student, task=run.task, loss_kind=run.loss.kind,
                          temperature=run.loss.temperature, alpha=run.loss.alpha,
                          teacher=teacher, distill=run.stage == "distill")
    distiller.compile(optimizer=build_optimizer(run.optimizer, run.learning_rate),
                      steps_per_execution=ctx.steps_per_execution)
  fileio.align_history(run_dir / HISTORY, run_dir / BACKUP)
  # BackupAndRestore needs a built model; one forward pass builds the wrapper.
  distiller(tf.zeros((1, *ctx.data.image_shape)), training=False)
  progress = _ProgressLogger(run.run_id, run.epochs)
  callbacks: list[keras.callbacks.Callback] = [
      keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
      keras.callbacks.BackupAndRestore(str(run_dir / BACKUP), double_checkpoint=True),
      progress, keras.callbacks.TerminateOnNaN()]
  early = None
  if run.early_stopping:
    early = keras.callbacks.EarlyStopping(
        monitor=run.monitor, mode="min" if run.monitor.endswith("loss") else "max",
        patience=run.patience, restore_best_weights=True)
    callbacks.append(early)
  fit_start = time.perf_counter()
  history = distiller.fit(
      datasets.train(), epochs=run.epochs, steps_per_epoch=datasets.steps_per_epoch(),
      validation_data=datasets.evaluation(datasets.val_ids) if run.early_stopping else None,
      callbacks=callbacks, shuffle=False, verbose=0).history
  fit_seconds = time.perf_counter() - fit_start
  epochs_run = progress.epochs_done
  epochs_this_process = len(history.get("loss", []))
  losses_seen = np.asarray(history.get("loss", [np.nan]), np.float64)
  axes = run.axes()
  row: dict[str, Any] = {
      "run_id": run.run_id, "stage": run.stage, "protocol": run.protocol, "task": run.task,
      "model": axes["encoder"], "labeling": run.labeling,
      "split_percent": run.split_percent, "arch": run.arch,
      "teacher_id": axes["teacher_id"], "encoder": axes["encoder"],
      "encoder_optimizer": axes["encoder_optimizer"], "freeze": run.freeze, "init": run.init,
      "teacher_mode": run.teacher_mode if run.teacher else "", "pool_balance": run.pool_balance,
      "student_optimizer": run.optimizer, "learning_rate": run.learning_rate,
      "loss_kind": run.loss.kind if run.stage == "distill" else "supervised",
      "temperature": run.loss.temperature, "alpha": run.loss.alpha, "epochs_run": epochs_run,
      "best_epoch": (early.best_epoch + 1) if early is not None and early.best_epoch is not None
                    else epochs_run,
      "max_epochs": run.epochs, "batch_size": datasets.global_batch(), "replicas": ctx.replicas,
      "seed": run.seed, "train_examples": len(datasets.train_ids),
      "test_examples": len(datasets.test_ids), "dataset": run.dataset, "preset": ctx.preset,
      "code_version": code_version(),
      "images_per_second": epochs_this_process * datasets.steps_per_epoch() * datasets.global_batch()
                           / max(fit_seconds, 1e-9),
  }
  if not np.isfinite(losses_seen).all():
    row.update(status="failed", error=f"training loss became non-finite at epoch {epochs_run}; "
               "lower the learning rate or check the inputs and teacher logits")
  else:
    frame = predict_test(student, datasets, teacher)
    row.update(score(frame, run.task), status="ok", error="")
    with fileio.atomic_path(run_dir / CHECKPOINT, suffix=".keras") as tmp:
      student.save(tmp)
    fileio.atomic_write(run_dir / PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
    row["checkpoint"] = str(run_dir / CHECKPOINT)
  fileio.write_json(run_dir / CONFIG, {"run": run.settings(), "run_id": run.run_id,
                                       "replicas": ctx.replicas, "data_dir": str(ctx.data.root),
                                       "image_shape": list(ctx.data.image_shape),
                                       "preprocessing": ctx.data.manifest.get("transform", "")})
  row["wall_seconds"] = time.perf_counter() - start
  row["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
  results.write_row(ctx.workdir, row)
  return row
