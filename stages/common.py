"""Flags shared by the stage-3 entry points and their mapping onto `DistillConfig`.

Each flag defaults to None ("take the preset's value"); only flags given on the command line
(or in a --flagfile) override the preset, through `config.override`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from absl import flags

from simclr_distill import config as config_lib

FLAGS = flags.FLAGS

# flag name -> (dotted config path, converter)
_MAPPING: dict[str, tuple[str, Callable]] = {
    "workdir": ("workdir", str),
    "data_dir": ("data.data_dir", str),
    "schemes": ("data.schemes", tuple),
    "split_percents": ("data.split_percents", lambda v: tuple(int(x) for x in v)),
    "task": ("data.task", str),
    "bands": ("data.bands", tuple),
    "image_size": ("data.image_size", int),
    "standardize": ("data.standardize", bool),
    "teacher_zoo": ("teacher.zoo_dir", str),
    "teacher_mode": ("teacher.mode", str),
    "encoders": ("teacher.encoders", tuple),
    "archs": ("student.archs", tuple),
    "head": ("student.head", str),
    "dropout": ("student.dropout", float),
    "loss": ("loss.kind", str),
    "temperature": ("loss.temperature", float),
    "alpha": ("loss.alpha", float),
    "optimizers": ("train.optimizers", tuple),
    "learning_rate": ("train.learning_rate", float),
    "adam_learning_rate": ("train.adam_learning_rate", float),
    "sgd_learning_rate": ("train.sgd_learning_rate", float),
    "batch_size": ("train.batch_size", int),
    "epochs": ("train.epochs", int),
    "patience": ("train.patience", int),
    "early_stopping": ("train.early_stopping", bool),
    "seeds": ("train.seeds", lambda v: tuple(int(x) for x in v)),
    "steps_per_execution": ("train.steps_per_execution", int),
    "protocol": ("protocol", str),
    "baseline": ("baseline", bool),
    "strategy": ("strategy", str),
    "tpu": ("tpu", str),
    "shard_index": ("shard_index", int),
    "num_shards": ("num_shards", int),
    "only": ("only", str),
    "pool_balance": ("pool_balance", str),
    "monitor": ("train.monitor", str),
}


def define_flags() -> None:
  """Defines the stage-3 flags (call once, at import of an entry point)."""
  flags.DEFINE_enum("preset", "demo", sorted(config_lib.PRESETS),
                    "Starting configuration: demo (digits, CPU, ~minutes), smoke (<2 min), "
                    "paper (the study's 180 runs on BigEarthNet-S2 records). Flags override it.")
  flags.DEFINE_string("workdir", None, "Output directory (default: the preset's, e.g. results/demo).")
  flags.DEFINE_string("data_dir", None, "Prepared data (stages.prepare output). Omit for the "
                      "embedded digits demo.")
  flags.DEFINE_list("schemes", None, "Labelling schemes: basic, expanded.")
  flags.DEFINE_list("split_percents", None, "Label splits in percent, e.g. 1,3,10,25,50,100.")
  flags.DEFINE_enum("task", None, config_lib.TASKS, "binary (irrigated) or multiclass.")
  flags.DEFINE_list("bands", None, "Keep these bands, e.g. B04,B03,B02 or rgb (default: all).")
  flags.DEFINE_integer("image_size", None, "Resize images to this size (bilinear).")
  flags.DEFINE_boolean("standardize", None, "Standardise bands with the data's mean/std.")
  flags.DEFINE_string("teacher_zoo", None, "Teacher zoo directory with manifest.csv; omit to "
                      "train the demo zoo into <workdir>/teachers.")
  flags.DEFINE_enum("teacher_mode", None, config_lib.TEACHER_MODES,
                    "offline: cached teacher logits; online: teacher inside each step.")
  flags.DEFINE_list("encoders", None, "Keep teachers of these pretrained encoders (BEN, ...).")
  flags.DEFINE_list("archs", None, "Student architectures (see simclr_distill.models).")
  flags.DEFINE_enum("head", None, ("study", "pooled"), "Student head.")
  flags.DEFINE_float("dropout", None, "Student head dropout.")
  flags.DEFINE_enum("loss", None, config_lib.LOSS_KINDS, "hard (the study), soft_kl, soft_xent.")
  flags.DEFINE_float("temperature", None, "Soft-target temperature T (loss scaled by T^2).")
  flags.DEFINE_float("alpha", None, "Weight of the ground-truth loss on labelled examples.")
  flags.DEFINE_list("optimizers", None, "Student optimizers: adam, sgd.")
  flags.DEFINE_float("learning_rate", None, "One learning rate for every optimizer.")
  flags.DEFINE_float("adam_learning_rate", None, "Adam's learning rate (the study: 1e-4).")
  flags.DEFINE_float("sgd_learning_rate", None, "SGD's learning rate (momentum 0.9).")
  flags.DEFINE_integer("batch_size", None, "Per-replica batch size.")
  flags.DEFINE_integer("epochs", None, "Maximum epochs per run.")
  flags.DEFINE_integer("patience", None, "Early-stopping patience (epochs).")
  flags.DEFINE_string("monitor", None, "Early-stopping metric: val_label_loss (default), val_auc "
                      "(binary), val_accuracy (multiclass), val_agreement, val_loss.")
  flags.DEFINE_boolean("early_stopping", None, "Early-stop on validation (holdout protocol).")
  flags.DEFINE_list("seeds", None, "Run seeds, e.g. 0,1,2.")
  flags.DEFINE_integer("steps_per_execution", None, "Training steps per compiled call (speed "
                       "only; results are the same).")
  flags.DEFINE_enum("protocol", None, config_lib.PROTOCOLS,
                    "holdout (sound, default) or original (the study: train and score on test).")
  flags.DEFINE_boolean("baseline", None, "Also train each student on the labelled split alone.")
  flags.DEFINE_enum("pool_balance", None, config_lib.POOL_BALANCES, "teacher: resample the "
                    "holdout pool to equal teacher-class frequencies; none: as it is.")
  flags.DEFINE_enum("strategy", None, config_lib.STRATEGIES, "tf.distribute strategy.")
  flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (with --strategy=tpu).")
  flags.DEFINE_integer("shard_index", None, "This process's shard of the run matrix.")
  flags.DEFINE_integer("num_shards", None, "Number of shards the matrix is split into.")
  flags.DEFINE_string("only", None, 'Run a subset, e.g. "arch=ResNet50,split_percent=3|10".')
  flags.DEFINE_boolean("unsafe_load", False, "Load teachers with Keras safe_mode off (runs code "
                       "in Lambda layers). Only for checkpoints you trust.")


def config_from_flags() -> config_lib.DistillConfig:
  """The preset with every explicitly given flag applied."""
  base = config_lib.get_preset(FLAGS.preset)
  changes = {path: convert(FLAGS[name].value) for name, (path, convert) in _MAPPING.items()
             if FLAGS[name].present}
  if FLAGS["data_dir"].present:
    changes["data.source"] = "records"
  return config_lib.override(base, changes)


class _DropRetracingWarnings(logging.Filter):
  """Each run builds a new model, so new step functions are traced by design; TensorFlow's
  "triggered tf.function retracing" advice would only alarm a user here."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def setup_logging() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.getLogger("simclr_distill").setLevel(logging.INFO)
  logging.getLogger("tensorflow").addFilter(_DropRetracingWarnings())


def run_or_explain(main: Callable[[], None]) -> None:
  """Runs `main`; a bad input ends with its message on stderr and exit status 2."""
  from simclr_distill.teachers import TeacherError

  try:
    main()
  except (ValueError, FileNotFoundError, KeyError, TeacherError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
