"""What the runs of one command share: data, strategy, directories, speed settings, the
digests of their inputs, and the compiled models kept for reuse."""

from __future__ import annotations

import collections
import pathlib
from typing import TYPE_CHECKING

import tensorflow as tf

from simclr_distill import checkpointing, keras_compat, labelling, provenance
from simclr_distill.config import DistillConfig
from simclr_distill.data import records, source
from simclr_distill.training import runtime

if TYPE_CHECKING:
  from simclr_distill.training.distiller import Distiller


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
    self.is_writer = runtime.is_writer(strategy)
    # The workers of one cluster train the same runs in lockstep, as one process: they take no
    # claims (one would find the other's and skip the run its peers wait in).
    self.claims = not keras_compat.is_multi_worker(strategy)
    self.zoo_dir = pathlib.Path(zoo_dir) if zoo_dir else None
    self.labels_dir = pathlib.Path(labels_dir) if labels_dir else self.workdir / "labels"
    self.safe_mode, self.preset = safe_mode, preset
    self.fold_batchnorm = fold_batchnorm  # Teachers run as folded inference copies.
    self.shuffle_buffer, self.cache = shuffle_buffer, cache
    # Speed settings: not part of a run's identity (recorded in each results row).
    self.steps_per_execution = steps_per_execution
    self.precision, self.jit_compile = precision, jit_compile
    self.all_ids = data.ids()
    self.encoders = dict(encoders or {})  # Stage 2: encoder name -> teacher_net.Encoder.
    self.imagenet_dir = imagenet_dir
    # Compiled, traced models of finished runs, kept for the next run of the same shape
    # (`execute_run` re-initialises them): up to `reuse_models`, least recently used dropped.
    self.reuse_models = reuse_models
    self.checkpoint = checkpoint  # When runs checkpoint within an epoch.
    self._warm: collections.OrderedDict[tuple, "Distiller"] = collections.OrderedDict()
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


def make_context(config: DistillConfig, *, safe_mode: bool = True,
                 encoders: dict | None = None) -> RunContext:
  """The context of a command's runs: its data (opened, or the digits demo prepared), strategy,
  directories and speed settings, from `config`; `encoders` for stage 2."""
  data = source.open_data(config)
  zoo_dir = config.teacher.zoo_dir or pathlib.Path(config.workdir) / "teachers"
  return RunContext(workdir=config.workdir, data=data,
                    strategy=runtime.strategy_of(config), zoo_dir=zoo_dir,
                    safe_mode=safe_mode, preset=config.preset,
                    shuffle_buffer=config.data.shuffle_buffer, cache=config.data.cache,
                    steps_per_execution=config.train.steps_per_execution, encoders=encoders,
                    precision=config.train.precision, jit_compile=config.train.jit_compile,
                    reuse_models=config.train.reuse_models,
                    checkpoint=checkpointing.CheckpointPolicy(config.train.checkpoint_steps,
                                                              config.train.checkpoint_minutes),
                    imagenet_dir=config.student.imagenet_dir,
                    fold_batchnorm=config.teacher.fold_batchnorm,
                    retrain_stale=config.retrain_stale)


def run_inputs(run, ctx: RunContext) -> dict[str, str]:
  """The current digests of what a run (a `matrix.RunSpec`) reads, given its `RunContext`: the
  data, its split lists, its teacher's checkpoint(s) and, for cached teaching, the label
  caches that exist (a missing cache is rebuilt from the same teacher and data)."""
  lists = ctx.split_digests()
  used = provenance.lists_read(run.stage, run.labeling, run.split_percent, protocol=run.protocol,
                               validated=run.early_stopping, pool_lists=list(lists))
  inputs = {"data": ctx.data_digest(), **{k: lists[k] for k in used if k in lists}}
  if run.teacher is not None:
    cached = run.teacher_mode in ("offline", "fixed") or run.pool_balance == "teacher"
    for member in run.teacher.members or (run.teacher,):
      if ctx.zoo_dir is None and not pathlib.Path(member.path).is_absolute():
        continue  # No zoo to find it in (a run given its cached logits alone).
      path = member.resolve(ctx.zoo_dir)
      inputs[f"teacher/{member.teacher_id}"] = (provenance.file_digest(path) if path.exists()
                                                else "missing")
      marker = labelling.cache_dir(ctx.labels_dir, member.teacher_id) / labelling.COMPLETE
      if cached and marker.is_file():
        inputs[f"labels/{member.teacher_id}"] = provenance.file_digest(marker)
  return inputs
