"""Model selection on validation, with optional early stopping, that survives a restart.

Keras' `EarlyStopping(restore_best_weights=True)` keeps its best weights and patience in
memory, so a run killed and resumed by `BackupAndRestore` forgets them. `ModelSelection` keeps
them on disk beside the run (`state.json` and `best.npz`, written atomically each epoch), so a
resumed run selects among all its epochs, and it records what a results row needs: the best
and the last epoch, and the last epoch's weights for scoring both.
"""

from __future__ import annotations

import logging
import math
import pathlib

import keras
import numpy as np

from simclr_distill import fileio

log = logging.getLogger(__name__)

STATE = "state.json"
BEST = "best.npz"


def minimise(monitor: str) -> bool:
  """Whether `monitor` improves downwards: losses and KL divergences do, scores do not."""
  return monitor.endswith("loss") or monitor.endswith("kl")


class ModelSelection(keras.callbacks.Callback):
  """Tracks `monitor` each epoch and keeps `network`'s best weights.

  Args:
    network: the model whose weights are selected (the student, not the teacher inside a
      distiller).
    monitor: a logged metric, e.g. "val_label_loss" (minimised when it ends in "loss" or "kl").
    patience: stop after this many epochs without improvement; 0 never stops.
    select: "best" restores the best epoch's weights at the end; "last" keeps the last.
    state_dir: where the selection state lives while the run trains.

  After training: `best_epoch`, `last_epoch` (1-based, counted from the run's start across
  restarts), `best_value`, and `last_weights` (the weights of the last epoch).

  Raises (at the first epoch's end):
    ValueError: if `monitor` is not among the logged metrics; the message lists them.
  """

  def __init__(self, network: keras.Model, *, monitor: str, patience: int = 0,
               select: str = "best", state_dir: str | pathlib.Path, writer: bool = True):
    super().__init__()
    if select not in ("best", "last"):
      raise ValueError(f"select={select!r}; expected 'best' or 'last'")
    self.network, self.monitor, self.patience, self.select = network, monitor, patience, select
    self.state_dir = pathlib.Path(state_dir)
    self.writer = writer  # False for non-chief workers: they select alike but write nothing.
    self.minimise = minimise(monitor)
    self.best_value: float | None = None
    self.best_epoch = self.last_epoch = self.wait = 0
    self.best_weights: list[np.ndarray] | None = None
    self.last_weights: list[np.ndarray] | None = None
    self.defer_finish = False

  def on_train_begin(self, logs=None):
    self._load()

  def _load(self) -> None:
    state = self.state_dir / STATE
    if state.is_file() and (self.state_dir / BEST).is_file():
      saved = fileio.read_json(state)
      self.best_value, self.best_epoch = saved["best_value"], saved["best_epoch"]
      self.last_epoch, self.wait = saved["last_epoch"], saved["wait"]
      with np.load(self.state_dir / BEST) as arrays:
        self.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
      log.info("model selection resumes: best %s=%.4f at epoch %d", self.monitor,
               self.best_value, self.best_epoch)

  def _improved(self, value: float) -> bool:
    if not math.isfinite(value):
      return False
    if self.best_value is None:
      return True
    return value < self.best_value if self.minimise else value > self.best_value

  def _write_best(self, tmp: pathlib.Path) -> None:
    with open(tmp, "wb") as f:  # A file object: np.savez would append ".npz" to a path.
      np.savez(f, *self.best_weights)

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    if self.monitor not in logs:
      raise ValueError(f"model selection monitors {self.monitor!r}, which this run does not log; "
                       f"it logs {', '.join(sorted(logs))}: choose one with --monitor")
    value = float(logs[self.monitor])
    if epoch + 1 <= self.last_epoch:
      # This epoch was recorded before a kill that came before the run's checkpoint of it; the
      # resumed run has redone it (identically): count it once.
      self._maybe_stop(epoch)
      return
    self.last_epoch = epoch + 1
    if self._improved(value):
      self.best_value, self.best_epoch, self.wait = value, epoch + 1, 0
      self.best_weights = self.network.get_weights()
      if self.writer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write(self.state_dir / BEST, self._write_best)
    else:
      self.wait += 1
    if self.best_value is not None and self.writer:
      self.state_dir.mkdir(parents=True, exist_ok=True)
      fileio.write_json(self.state_dir / STATE, {
          "monitor": self.monitor, "best_value": self.best_value, "best_epoch": self.best_epoch,
          "last_epoch": self.last_epoch, "wait": self.wait})
    self._maybe_stop(epoch)

  def _maybe_stop(self, epoch: int) -> None:
    if self.patience and self.wait >= self.patience:
      # Debug output: the run's line (`loop.train_runs`) says it stopped early, and where.
      log.debug("early stopping at epoch %d: %s has not improved for %d epochs (best %.4f at "
                "epoch %d)", epoch + 1, self.monitor, self.wait, self.best_value, self.best_epoch)
      self.model.stop_training = True

  def on_train_end(self, logs=None):
    if not self.defer_finish:
      self.finish()

  def finish(self) -> None:
    """Keeps the last epoch's weights in `last_weights` and, with select="best", loads the best
    epoch's into the network. Called at the end of `fit` unless `defer_finish` is set (a
    resumed run trains in several `fit` calls and calls this once, after the last, or after
    none when it had finished training before a kill)."""
    if self.best_weights is None:
      self._load()
    self.last_weights = self.network.get_weights()
    if self.select == "best" and self.best_weights is not None:
      self.network.set_weights(self.best_weights)
