"""TensorBoard event files of every training run: `<run_dir>/tensorboard/{train,validation}`,
the layout of `keras.callbacks.TensorBoard`, whose scalars they are: per epoch, each training
metric and the learning rate (`epoch_loss`, `epoch_learning_rate`, ... in `train/`) and each
validation metric (`epoch_loss`, ... in `validation/`), at step = epoch index (0-based, as
`history.csv` counts). `tensorboard --logdir <workdir>` shows every run of a study.

A killed run resumes at its checkpoint and writes the epochs after it again, so before it
resumes, `align_events` drops from the event files what was logged after the checkpoint (as
`fileio.align_history` does for `history.csv`): each epoch appears once.
"""

from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

from simclr_distill import fileio

DIRECTORY = "tensorboard"  # <run_dir>/tensorboard/
SUBDIRS = ("train", "validation")


class TensorBoard(keras.callbacks.TensorBoard):
  """Keras' TensorBoard callback with per-epoch scalars only (no graph, histograms or
  profile), its files flushed at every epoch end: the epoch checkpoint that follows then never
  holds an epoch the event files lack (a writer flushes by itself only every 2 minutes)."""

  def __init__(self, log_dir: str | pathlib.Path):
    super().__init__(log_dir=str(log_dir), histogram_freq=0, write_graph=False,
                     update_freq="epoch", profile_batch=0)

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)
    for writer in getattr(self, "_writers", {}).values():  # Keras' lazily made writers.
      writer.flush()


def _kept(event: tf.compat.v1.Event, epochs_done: int, steps_done: int) -> bool:
  """Whether an event was logged before the checkpoint: epoch scalars are stepped by epoch
  index, Keras' `evaluation_*_vs_iterations` by optimizer step."""
  if not event.HasField("summary"):
    return True
  tags = [value.tag for value in event.summary.value]
  if all(tag.startswith("epoch_") for tag in tags):
    return event.step < epochs_done
  return event.step <= steps_done


def align_events(log_dir: str | pathlib.Path, position, steps_per_epoch: int) -> int:
  """Drops from the event files under `log_dir` every summary logged after the checkpoint at
  `position` (a `checkpointing.Position`), and the torn last record a kill can leave. Returns
  how many records went.
  """
  dropped = 0
  for path in sorted(p for sub in SUBDIRS for p in (pathlib.Path(log_dir) / sub).glob("events.*")):
    records, torn = [], False
    try:
      for record in tf.data.TFRecordDataset(str(path)):
        records.append(record.numpy())
    except tf.errors.DataLossError:  # Cut mid-record by the kill.
      torn = True
    kept = [r for r in records if _kept(tf.compat.v1.Event.FromString(r), position.epoch,
                                        position.batches(steps_per_epoch))]
    if len(kept) == len(records) and not torn:
      continue
    dropped += len(records) - len(kept) + torn

    def write(tmp: pathlib.Path, kept=kept) -> None:
      with tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in kept:
          writer.write(record)

    fileio.atomic_write(path, write)
  return dropped
