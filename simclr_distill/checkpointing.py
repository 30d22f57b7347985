"""Step-level training checkpoints: a killed run resumes at its last checkpoint, not its last
epoch, and ends where an uninterrupted run of the same seed ends.

Keras' `BackupAndRestore` saves mid-epoch but restarts the epoch from its first batch on a
resume, so the resumed run sees a different data order and its step count drifts. Here a
checkpoint is one file (written atomically) holding

  * every variable the training step changes: the network's weights and normalisation
    statistics, its dropout seed states, the optimizer's moments and step count, and the
    accumulators of the epoch's running metrics;
  * the position: finished epochs and steps done in the current one;

and `resumable_fit` restores it, rebuilds the (seeded, deterministic) training stream
positioned at the next batch, runs the rest of the interrupted epoch as a short `fit` and then
the remaining epochs. With deterministic ops the resumed run's weights equal the
uninterrupted run's bit for bit.

Checkpoints are taken every `every_steps` steps and/or `every_minutes` minutes, and at every
epoch end. Only the writer (a single process, or the chief of a multi-worker cluster) writes;
every worker restores from the same file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import time
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as framework_ops

from simclr_distill import fileio, preemption

log = logging.getLogger(__name__)

STATE_FILE = "training_state.npz"
_META = "__meta__"
FORMAT = 1


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into this run's model."""


@dataclasses.dataclass(frozen=True)
class Position:
  """Where training stands: `epoch` epochs finished and `step` steps of the next one done;
  `stopped` when a callback ended training early (early stopping, a non-finite loss), and
  `nonfinite` when a training loss was NaN or inf."""

  epoch: int = 0
  step: int = 0
  stopped: bool = False
  nonfinite: bool = False

  def batches(self, steps_per_epoch: int) -> int:
    """Training batches consumed so far (the stream's offset)."""
    return self.epoch * steps_per_epoch + self.step


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
  """When to checkpoint during an epoch (an epoch end always checkpoints).

  Attributes:
    every_steps: every this many training steps (0: never by count).
    every_minutes: when this many minutes have passed since the last checkpoint (0: never by
      time).
  """

  every_steps: int = 0
  every_minutes: float = 10.0

  def __post_init__(self):
    if self.every_steps < 0 or self.every_minutes < 0:
      raise ValueError(f"checkpoint frequency must be >= 0 (got every {self.every_steps} steps, "
                       f"every {self.every_minutes} minutes)")


def training_variables(model: keras.Model, network: keras.Model | None = None) -> list:
  """What a training step changes, less the metric accumulators (`StepCheckpoint` adds
  those): `network`'s variables (default: `model`'s; they include dropout seed states) and the
  optimizer's (built if needed). A frozen teacher inside `model` is left out by passing the
  student as `network`."""
  network = network if network is not None else model
  optimizer = model.optimizer
  if not optimizer.built:
    with model.distribute_strategy.scope():
      optimizer.build(model.trainable_variables)
  return [*network.variables, *optimizer.variables]


class StepCheckpoint(keras.callbacks.Callback):
  """Saves and restores the training state of one run in `directory/STATE_FILE`.

  Args:
    directory: the run's directory.
    variables: returns the model, optimizer and network variables to save (see
      `training_variables`), in a fixed order.
    policy: when to checkpoint within an epoch.
    writer: whether this process writes (False for non-chief workers).
  """

  def __init__(self, directory: str | pathlib.Path, variables: Callable[[], Sequence],
               policy: CheckpointPolicy = CheckpointPolicy(), *, writer: bool = True):
    super().__init__()
    self.path = pathlib.Path(directory) / STATE_FILE
    self._variables = variables
    self.policy, self.writer = policy, writer
    self._epoch = 0
    self._offset = 0  # Steps of the current epoch done before this `fit` call.
    self._done = 0  # Steps of the current epoch done so far.
    self._since = 0  # Steps since the last checkpoint.
    self._last_save = time.monotonic()
    self._pending_metrics: tuple[int, list[np.ndarray]] | None = None
    self._nonfinite = False
    self.position = Position()  # The latest position saved or restored.
    self.saves = 0
    self.steps_trained = 0  # Steps trained by this process.

  # -- the file --------------------------------------------------------------------------------

  def _state(self) -> tuple[list, list]:
    return list(self._variables()), list(self.model.metrics_variables)

  def exists(self) -> bool:
    return self.path.is_file()

  def save(self, position: Position) -> None:
    """Writes the state at `position`, atomically (a kill mid-write leaves the previous one)."""
    self.position = position
    # Every worker reads the variables: under MultiWorkerMirroredStrategy reading a metric
    # accumulator is a collective step, which all of them must take.
    variables, metric_variables = self._state()
    arrays = [np.asarray(v.numpy()) for v in (*variables, *metric_variables)]
    if not self.writer:
      return
    meta = {"format": FORMAT, **dataclasses.asdict(position), "variables": len(variables),
            "metric_variables": len(metric_variables), "saved_at": time.time()}

    def write(tmp: pathlib.Path) -> None:
      with open(tmp, "wb") as f:  # A file object: np.savez would append ".npz" to a path.
        np.savez(f, *arrays, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})

    fileio.atomic_write(self.path, write)
    self._since, self._last_save = 0, time.monotonic()
    self.saves += 1

  def _read(self, arrays: bool):
    """(meta, arrays or None) of the saved file.

    Raises:
      CheckpointError: if it is not a checkpoint this code wrote.
    """
    try:
      with np.load(self.path) as data:
        meta = json.loads(data[_META].tobytes().decode())
        values = [data[f"arr_{i}"] for i in range(len(data.files) - 1)] if arrays else None
    except Exception as e:  # A zip, JSON or key error: the file is not a checkpoint we wrote.
      raise CheckpointError(f"cannot read the training checkpoint {self.path} ({type(e).__name__}: "
                            f"{e}); delete it to restart this run from scratch") from e
    if meta.get("format") != FORMAT:
      raise CheckpointError(f"{self.path} has checkpoint format {meta.get('format')}, this code "
                            f"reads {FORMAT}; delete it to restart the run")
    return meta, values

  @staticmethod
  def _position(meta) -> Position:
    return Position(meta["epoch"], meta["step"], meta.get("stopped", False),
                    meta.get("nonfinite", False))

  def saved_position(self) -> Position | None:
    """The position of the saved checkpoint (read without loading its arrays), or None."""
    return self._position(self._read(arrays=False)[0]) if self.exists() else None

  def restore(self) -> Position:
    """Loads the saved state into the model (metric accumulators at the next epoch's start);
    returns its position, or Position() when there is no checkpoint.

    Raises:
      CheckpointError: if the file is unreadable or holds another model's variables.
    """
    if not self.exists():
      return Position()
    variables, metric_variables = self._state()
    meta, arrays = self._read(arrays=True)
    saved, saved_metrics = arrays[:meta["variables"]], arrays[meta["variables"]:]
    mismatch = len(saved) != len(variables) or any(
        tuple(a.shape) != tuple(v.shape) for a, v in zip(saved, variables))
    if mismatch:
      raise CheckpointError(
          f"{self.path} holds {len(saved)} variables that do not match this run's model "
          f"({len(variables)}); it was written by another configuration: delete the run "
          "directory to restart it")
    for variable, value in zip(variables, saved):
      variable.assign(value)
    position = self._position(meta)
    self.position, self._nonfinite = position, position.nonfinite
    if position.step and len(saved_metrics) == len(metric_variables):
      self._pending_metrics = (position.epoch, saved_metrics)
    log.info("resuming from %s: epoch %d, step %d", self.path, position.epoch + 1, position.step)
    return position

  def delete(self) -> None:
    if self.writer:
      self.path.unlink(missing_ok=True)

  # -- callback ----------------------------------------------------------------------------------

  def start_at(self, position: Position) -> None:
    """Called before a `fit` that starts `position.step` steps into epoch `position.epoch`."""
    self._epoch, self._offset = position.epoch, position.step

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch, self._done = epoch, self._offset
    if self._pending_metrics is not None and self._pending_metrics[0] == epoch:
      # `fit` has just reset the metrics: the interrupted epoch's running means go on.
      for variable, value in zip(self.model.metrics_variables, self._pending_metrics[1]):
        variable.assign(value)
    self._pending_metrics = None

  def on_train_batch_end(self, batch, logs=None):
    done = self._offset + batch + 1  # `batch` is the last step of a multi-step execution.
    self._since += done - self._done
    self.steps_trained += done - self._done
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(float(loss)):
      self._nonfinite = True
    self._done = done
    policy = self.policy
    due = (policy.every_steps and self._since >= policy.every_steps) or (
        policy.every_minutes and time.monotonic() - self._last_save >= 60 * policy.every_minutes)
    # Not at the epoch's last step: the epoch-end checkpoint follows, after validation and
    # model selection, which a resumed run could not redo from a mid-epoch state.
    last = batch + 1 >= (self.params or {}).get("steps", float("inf"))
    if due and not last and not self._nonfinite:
      self.save(Position(self._epoch, done))
    signum = preemption.requested()
    if signum is not None and not last:  # At the last step, after the epoch's checkpoint.
      if not self._nonfinite and not due:
        self.save(Position(self._epoch, done))
      raise preemption.Preempted(signum, checkpointed=not self._nonfinite)

  def on_epoch_end(self, epoch, logs=None):
    # Callbacks before this one (model selection, TerminateOnNaN) have had their say.
    self._offset = 0
    self.save(Position(epoch + 1, 0, stopped=bool(self.model.stop_training),
                       nonfinite=self._nonfinite))
    signum = preemption.requested()
    if signum is not None:
      raise preemption.Preempted(signum, checkpointed=True)


def _custom_gradients() -> set[str]:
  return {name for name in framework_ops.gradient_registry.list()
          if name.startswith("CustomGradient-")}


@contextlib.contextmanager
def releasing_traced_gradients():
  """Unregisters, on exit, the gradient functions `tf.custom_gradient` registered meanwhile.

  Tracing a Keras training step registers one in TensorFlow's process-wide gradient registry
  (the optimizer all-reduces the gradients over replicas with `ReplicaContext.all_reduce`, a
  custom gradient, even on one device), and TensorFlow never unregisters it. Its function
  holds the traced graph, and the graph every variable the step captured: each model trained
  in a process would keep its weights and optimizer slots to the end (~550 MiB a ResNet50 run
  at 32x32, untouched by `gc.collect` or `keras.backend.clear_session`). The function is only
  called while the step is traced and differentiated, never when the traced step runs, so a
  model kept for later runs (`distill.RunContext.keep_warm`) trains on unchanged; a step traced
  anew registers anew.
  """
  before = _custom_gradients()
  try:
    yield
  finally:
    registered = framework_ops.gradient_registry._registry  # pylint: disable=protected-access
    for name in _custom_gradients() - before:
      registered.pop(name, None)


def resumable_fit(model: keras.Model, make_train: Callable[[int], tf.data.Dataset], *,
                  checkpoint: StepCheckpoint, epochs: int, steps_per_epoch: int,
                  callbacks: Sequence[keras.callbacks.Callback] = (),
                  validation_data=None) -> dict[str, list]:
  """`model.fit` for `epochs` epochs that resumes from `checkpoint`, if it holds a state.

  Args:
    model: a compiled, built model.
    make_train: returns the endless training stream positioned after its first `n` batches
      (the stream must be a deterministic function of the run's seed).
    checkpoint: the run's checkpoint callback (added to `callbacks`, last).
    epochs, steps_per_epoch: as for `fit`.
    callbacks: the other callbacks; each sees one `fit` per resumed partial epoch, so their
      end-of-training work must not change the model (see `selection.ModelSelection.finish`).
      One with a `start_at(position)` method is told, before each `fit`, where it starts.
    validation_data: as for `fit`.

  Returns:
    The history of the epochs trained in this call (the resumed epoch's losses are the
    whole epoch's means).
  """
  checkpoint.set_model(model)
  position = checkpoint.restore()
  history: dict[str, list] = {}
  if position.stopped:  # Training had ended (early stopping, NaN) before the process did.
    return history
  callbacks = [*callbacks, checkpoint]

  def fit(start: Position, end_epoch: int, steps: int) -> None:
    for callback in callbacks:  # The checkpoint, and any other that counts steps in an epoch.
      if hasattr(callback, "start_at"):
        callback.start_at(start)
    with releasing_traced_gradients(), preemption.training():
      logs = model.fit(make_train(start.batches(steps_per_epoch)), initial_epoch=start.epoch,
                       epochs=end_epoch, steps_per_epoch=steps, validation_data=validation_data,
                       callbacks=callbacks, shuffle=False, verbose=0).history
    for key, values in logs.items():
      history.setdefault(key, []).extend(values)

  if position.step >= steps_per_epoch:
    raise CheckpointError(f"{checkpoint.path} is {position.step} steps into an epoch of "
                          f"{steps_per_epoch}: it belongs to another batch size or data; delete "
                          "it to restart the run")
  if position.step and position.epoch < epochs:  # The rest of the interrupted epoch.
    fit(position, position.epoch + 1, steps_per_epoch - position.step)
    position = Position(position.epoch + 1, 0)
    if model.stop_training:
      return history
  if position.epoch < epochs:
    fit(position, epochs, steps_per_epoch)
  return history
