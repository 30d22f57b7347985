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
    "teacher_mode": ("teacher.modes", tuple),
    "augment": ("teacher.augment", str),
    "mixup": ("teacher.mixup", float),
    "single_teachers": ("teacher.singles", bool),
    "ensemble_over": ("teacher.ensemble_over", tuple),
    "ensembles": ("teacher.ensembles", tuple),
    "ensemble_combine": ("teacher.combine", str),
    "fold_batchnorm": ("teacher.fold_batchnorm", bool),
    "encoders": ("teacher.encoders", tuple),
    "archs": ("student.archs", tuple),
    "head": ("student.head", str),
    "dropout": ("student.dropout", float),
    "generations": ("student.generations", int),
    "student_classes": ("student.classes", lambda v: tuple(int(x) for x in v)),
    "loss": ("loss.kinds", tuple),
    "temperature": ("loss.temperatures", lambda v: tuple(float(x) for x in v)),
    "alpha": ("loss.alphas", lambda v: tuple(float(x) for x in v)),
    "optimizers": ("train.optimizers", tuple),
    "learning_rate": ("train.learning_rates", lambda v: tuple(float(x) for x in v)),
    "schedule": ("train.schedule", str),
    "warmup_epochs": ("train.warmup_epochs", int),
    "select": ("train.select", str),
    "adam_learning_rate": ("train.adam_learning_rate", float),
    "sgd_learning_rate": ("train.sgd_learning_rate", float),
    "batch_size": ("train.batch_size", int),
    "epochs": ("train.epochs", lambda v: tuple(int(x) for x in v)),
    "min_steps_per_epoch": ("train.min_steps_per_epoch", int),
    "patience": ("train.patience", int),
    "early_stopping": ("train.early_stopping", bool),
    "seeds": ("train.seeds", lambda v: tuple(int(x) for x in v)),
    "steps_per_execution": ("train.steps_per_execution", int),
    "mixed_precision": ("train.precision", str),
    "jit_compile": ("train.jit_compile", bool),
    "reuse_models": ("train.reuse_models", int),
    "checkpoint_steps": ("train.checkpoint_steps", int),
    "checkpoint_minutes": ("train.checkpoint_minutes", float),
    "protocol": ("protocol", str),
    "baseline": ("baseline", bool),
    "strategy": ("strategy", str),
    "tpu": ("tpu", str),
    "shard_index": ("shard_index", int),
    "num_shards": ("num_shards", int),
    "only": ("only", str),
    "retrain_stale": ("retrain_stale", bool),
    "pool_balance": ("pool_balance", str),
    "monitor": ("train.monitor", str),
    "baseline_inits": ("student.baseline_inits", tuple),
    "imagenet_dir": ("student.imagenet_dir", str),
}


GROUPS = ("data", "teachers", "encoders", "students", "loss", "schedule", "protocol", "scale",
          "baseline")


def define_flags(groups=GROUPS, presets=None) -> None:
  """Defines the flags of the named groups (call once, at import of an entry point).

  Args:
    groups: which of GROUPS an entry point takes; --preset and --workdir are always defined.
    presets: names accepted by --preset (default: the stage-3 presets).
  """
  groups = set(groups)
  flags.DEFINE_enum("preset", "demo", sorted(presets or config_lib.PRESETS),
                    "Starting configuration: demo (digits, CPU, ~minutes), smoke (<2 min), "
                    "paper (the study on BigEarthNet-S2 records), patient (function matching "
                    "on a long cosine schedule), methods (stages.study: the teaching methods "
                    "compared). Flags override it.")
  flags.DEFINE_string("workdir", None, "Output directory (default: the preset's, e.g. results/study_demo).")
  if "data" in groups:
    flags.DEFINE_string("data_dir", None, "Prepared data (stages.prepare output). Omit for the "
                        "embedded digits demo.")
    flags.DEFINE_list("schemes", None, "Labelling schemes: basic, expanded.")
    flags.DEFINE_list("split_percents", None, "Label splits in percent, e.g. 1,3,10,25,50,100.")
    flags.DEFINE_enum("task", None, config_lib.TASKS, "binary (irrigated) or multiclass.")
    flags.DEFINE_list("bands", None, "Keep these bands, e.g. B04,B03,B02 or rgb (default: all).")
    flags.DEFINE_integer("image_size", None, "Resize images to this size (bilinear).")
    flags.DEFINE_boolean("standardize", None, "Standardise bands with the data's mean/std.")
  if "teachers" in groups:
    flags.DEFINE_string("teacher_zoo", None, "Teacher zoo directory with manifest.csv; omit to "
                        "train the demo zoo into <workdir>/teachers.")
    flags.DEFINE_list("teacher_mode", None, "Teaching modes, one matrix axis: offline (cached "
                      "logits of the plain image, the study), online (the same, teacher in the "
                      "step), fixed (cached logits, augmented student views), independent (teacher "
                      "online on its own augmented view), consistent (teacher online on the "
                      "student's own augmented, mixed-up batch: function matching).")
    flags.DEFINE_string("augment", None, "Augmentation of fixed/independent/consistent views: "
                        "inception_crop (default), mild_crop (tiny images), simclr, study, none.")
    flags.DEFINE_float("mixup", None, "Mixup Beta(m, m) on consistent runs' batches (function "
                       "matching); 0 = off.")
    flags.DEFINE_boolean("single_teachers", None, "Distil each selected teacher on its own "
                         "(--nosingle_teachers: ensembles only).")
    flags.DEFINE_list("ensemble_over", None, "Also distil ensembles over these teacher fields "
                      "(encoder, encoder_optimizer, seed), e.g. encoder: the encoders of one split.")
    flags.DEFINE_list("ensembles", None, "Explicit ensembles, each ID+ID+... of zoo teacher ids.")
    flags.DEFINE_enum("ensemble_combine", None, config_lib.COMBINES, "Ensembles average logits "
                      "or probabilities.")
  if "encoders" in groups:
    flags.DEFINE_list("encoders", None, "Only these pretrained encoders (BEN, CA_adam, ...) and "
                      "their teachers.")
  if "teachers" in groups:
    flags.DEFINE_boolean("fold_batchnorm", None, "Run teachers with their BatchNormalization "
                         "layers folded into the convolutions before them (default on: same "
                         "logits up to float rounding, checked as each teacher loads; ~1.2x "
                         "faster ResNet152 passes). --nofold_batchnorm runs the checkpoint as it is.")
  if "teachers" in groups or "encoders" in groups:
    flags.DEFINE_boolean("unsafe_load", False, "Load models with Keras safe_mode off (runs code "
                         "in Lambda layers). Only for checkpoints you trust.")
  if "students" in groups:
    flags.DEFINE_list("archs", None, "Student architectures (see simclr_distill.models); 'same' "
                      "is self-distillation (the teacher's own network, re-initialised).")
    flags.DEFINE_integer("generations", None, "Born-again generations: k+1 learns from k's "
                         "student; the ensemble of the generations is scored too.")
    flags.DEFINE_list("student_classes", None, "Unseen-class experiment (multiclass): train only "
                      "on pool examples of these classes, e.g. 0,1,2,3,4,5.")
    flags.DEFINE_enum("head", None, ("study", "pooled"), "Student head.")
    flags.DEFINE_float("dropout", None, "Student head dropout.")
  if "loss" in groups:
    flags.DEFINE_list("loss", None, "Losses, one matrix axis: hard (the study), soft_kl, soft_xent.")
    flags.DEFINE_list("temperature", None, "Soft-target temperatures T (loss scaled by T^2), an "
                      "axis, e.g. 1,4.")
    flags.DEFINE_list("alpha", None, "Weights of the ground-truth loss on labelled examples, an axis.")
  if "schedule" in groups:
    flags.DEFINE_list("optimizers", None, "Student optimizers: adam, sgd.")
    flags.DEFINE_list("learning_rate", None, "Learning rates for every optimizer, an axis "
                      "(default: --adam_learning_rate / --sgd_learning_rate).")
    flags.DEFINE_enum("schedule", None, config_lib.SCHEDULES, "Learning-rate schedule: constant, "
                      "or cosine decay to 0 over the run (resumes where it stopped).")
    flags.DEFINE_integer("warmup_epochs", None, "Linear warm-up epochs of the cosine schedule.")
    flags.DEFINE_enum("select", None, config_lib.SELECTIONS, "Weights a validated run keeps: the "
                      "best epoch on --monitor, or the last.")
    flags.DEFINE_float("adam_learning_rate", None, "Adam's learning rate (the study: 1e-4).")
    flags.DEFINE_float("sgd_learning_rate", None, "SGD's learning rate (momentum 0.9).")
    flags.DEFINE_integer("batch_size", None, "Per-replica batch size.")
    flags.DEFINE_list("epochs", None, "Maximum epochs per run, an axis.")
    flags.DEFINE_integer("min_steps_per_epoch", None, "An epoch is one pass over the training "
                         "set or this many steps, whichever is more: small labelled splits (a "
                         "baseline on 30 examples) get the optimizer steps a student gets.")
    flags.DEFINE_integer("patience", None, "Early-stopping patience (epochs); 0 never stops "
                         "(model selection only).")
    flags.DEFINE_string("monitor", None, "Validation metric of model selection and early stopping: "
                        "val_label_loss (default), val_auc (binary), val_accuracy (multiclass), "
                        "val_agreement, val_kl, val_distill_loss, val_loss.")
    flags.DEFINE_boolean("early_stopping", None, "Early-stop on validation (holdout protocol).")
    flags.DEFINE_list("seeds", None, "Run seeds, e.g. 0,1,2.")
    flags.DEFINE_integer("steps_per_execution", None, "Training steps per compiled call (speed "
                         "only; results are the same).")
    flags.DEFINE_enum("mixed_precision", None, config_lib.PRECISIONS, "Dtype policy of the "
                      "trained networks: float32, mixed_bfloat16 (TPU, A100/H100 GPUs, AMX CPUs) "
                      "or mixed_float16 (older GPUs; dynamic loss scaling). Logits and losses "
                      "stay float32; recorded in each results row.")
    flags.DEFINE_boolean("jit_compile", None, "XLA-compile the training step (GPU/TPU; usually "
                         "slower on CPU). Recorded in each results row.")
    flags.DEFINE_integer("reuse_models", None, "Compiled models kept for later runs of the same "
                         "network, loss and optimizer, which re-initialise one instead of "
                         "tracing anew (speed only; 0 = never).")
  if "protocol" in groups:
    flags.DEFINE_enum("protocol", None, config_lib.PROTOCOLS,
                      "holdout (sound, default) or original (the study: train and score on test).")
    flags.DEFINE_boolean("baseline", None, "Also train each student on the labelled split alone.")
    flags.DEFINE_enum("pool_balance", None, config_lib.POOL_BALANCES, "teacher: resample the "
                      "holdout pool to equal teacher-class frequencies; none: as it is.")
  if "baseline" in groups:
    flags.DEFINE_list("baseline_inits", None, "Baseline initialisations: scratch, imagenet "
                      "(frozen ImageNet backbone; paper architectures, weights in --imagenet_dir).")
    flags.DEFINE_string("imagenet_dir", None, "keras.applications no-top ImageNet weight files "
                        "(default ~/.keras/models).")
    flags.DEFINE_list("baseline_seeds", None, "Seeds of the baselines (default: the preset's, "
                      "else --seeds).")
  if "scale" in groups:
    flags.DEFINE_enum("strategy", None, config_lib.STRATEGIES, "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (with --strategy=tpu).")
    flags.DEFINE_integer("shard_index", None, "This process's shard of the run matrix.")
    flags.DEFINE_integer("num_shards", None, "Number of shards the matrix is split into.")
    flags.DEFINE_string("only", None, 'Run a subset, e.g. "arch=ResNet50,split_percent=3|10".')
    flags.DEFINE_boolean("retrain_stale", None, "Retrain the finished runs whose inputs (split "
                         "lists, data, teacher checkpoint, label cache) changed since they "
                         "finished; without it such a rerun stops and names them. Their old "
                         "files are kept in runs/<run_id>/superseded/.")
    flags.DEFINE_integer("checkpoint_steps", None, "Checkpoint each training run's full state every N "
                         "steps (0: not by count). A killed run (preemption, SIGKILL) resumes at "
                         "its last checkpoint when the same command is rerun.")
    flags.DEFINE_float("checkpoint_minutes", None, "... and every M minutes (default 10; 0: not by "
                       "time). Every epoch end checkpoints too.")


def _changes(mapping) -> dict:
  changes = {}
  for name, (path, convert) in mapping.items():
    if name in FLAGS and FLAGS[name].present:
      value = FLAGS[name].value
      try:
        changes[path] = convert(value)
      except ValueError as e:
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        raise ValueError(f"--{name}={shown}: {e}") from None
  return changes


def config_from_flags(base: config_lib.DistillConfig | None = None) -> config_lib.DistillConfig:
  """The preset (or `base`) with every explicitly given flag applied."""
  base = base or config_lib.get_preset(FLAGS.preset)
  changes = _changes(_MAPPING)
  if "data_dir" in FLAGS and FLAGS["data_dir"].present:
    changes["data.source"] = "records"
  return config_lib.override(base, changes)


def summary_keys(table, keys: list[str]) -> list[str]:
  """The columns a stage's closing summary groups by: `keys`, then whatever else differs
  between runs (protocol, scheme, architecture, method: see `results.summary_keys`)."""
  from simclr_distill import results

  return results.summary_keys(table, keys)


def closing_summary(workdir, table) -> str:
  """The study's comparisons with their intervals (from the workdir's comparisons.csv when the
  stage wrote one); `finish` adds the collapsed and failed runs."""
  import pathlib

  import pandas as pd

  from simclr_distill import stats

  lines = []
  path = pathlib.Path(workdir) / stats.COMPARISONS_CSV
  if path.is_file():
    lines.append(stats.format_comparisons(pd.read_csv(path)))
    lines.append(f"(all comparisons: {path}; `python -m stages.results --compare "
                 f"--workdirs={workdir}` prints them again)")
  return "\n".join(line for line in lines if line)


def collapsed_summary(table) -> str:
  """A warning naming the runs whose model collapsed (one predicted class on a whole
  validation or test list), or "" when none did."""
  if "collapsed" not in table:
    return ""
  collapsed = table[table["collapsed"].fillna("").astype(str) != ""]
  if not len(collapsed):
    return ""
  return "\n".join([f"WARNING: {len(collapsed)} run(s) predict a single class on a whole "
                    "validation or test list (collapsed models: their scores say nothing about "
                    "the method; see the `collapsed` column):",
                    *(f"  {r.run_id}: {r.collapsed}" for r in collapsed.itertuples())])


def failed_summary(table) -> str:
  """The runs of the table whose status is "failed", each with its reason, or ""."""
  if "status" not in table:
    return ""
  failed = table[table["status"] == "failed"]
  if not len(failed):
    return ""
  return "\n".join([f"FAILED: {len(failed)} run(s) of this workdir failed (their rows say "
                    "status=failed; a failed run is final for its settings: change the setting "
                    "named in its reason, which gives a new run, or delete runs/<run_id> to "
                    "retry it as it was):",
                    *(f"  {r.run_id}: {r.error}" for r in failed.itertuples())])


def finish(table, lines=()) -> None:
  """Prints a training command's closing lines and the failed runs; exits with status 1 when
  the table holds failed runs (the rest of the matrix has finished), else returns."""
  for line in (*lines, collapsed_summary(table), failed_summary(table)):
    if line:
      print(line)
  if failed_summary(table):
    sys.exit(1)


def safe_mode() -> bool:
  """Keras safe mode for loading models: on unless --unsafe_load, which is logged loudly."""
  unsafe = "unsafe_load" in FLAGS and FLAGS.unsafe_load
  if unsafe:
    logging.getLogger("simclr_distill").warning(
        "--unsafe_load: Keras safe mode is OFF; a .keras file's Lambda layers can run arbitrary "
        "code on this machine. Use it only for checkpoints you trust.")
  return not unsafe


# ---- Stages 1 and 2 and the whole study -------------------------------------------------------

_PRETRAIN_MAPPING = {f"pretrain_{f}": (f, convert) for f, convert in (
    ("arch", str), ("width", int), ("epochs", int), ("batch_size", int), ("temperature", float),
    ("policy", str), ("seed", int))}
_FINETUNE_MAPPING = {
    "freeze": ("freeze", str),
    "finetune_learning_rate": ("learning_rate", float),
    "finetune_batch_size": ("batch_size", int),
    "finetune_epochs": ("epochs", int),
    "finetune_min_steps_per_epoch": ("min_steps_per_epoch", int),
    "finetune_patience": ("patience", int),
    "finetune_monitor": ("monitor", str),
    "finetune_dropout": ("dropout", float),
    "finetune_seeds": ("seeds", lambda v: tuple(int(x) for x in v)),
}


def define_study_flags(*, pretraining: bool = True, preparing: bool = False) -> None:
  """Flags of the encoders, stage 2 and (optionally) stage 1 and the preparation step."""
  flags.DEFINE_multi_string(
      "encoder", None, "Define an encoder (repeatable; replaces the preset's list): "
      "NAME[:optimizer=adam|sgd,learning_rate=LR,data_dir=PREPARED,checkpoint=SIMCLR.keras,"
      "epochs=N]. NAME 'none' is the random-init ablation. E.g. "
      "--encoder=CA_sgd:optimizer=sgd,learning_rate=0.1,data_dir=data/california")
  if pretraining:
    flags.DEFINE_string("pretrain_arch", None, "Stage 1: encoder architecture (the study: ResNet152).")
    flags.DEFINE_integer("pretrain_width", None, "Stage 1: width of a small encoder (cnn, mlp, resnet18).")
    flags.DEFINE_integer("pretrain_epochs", None, "Stage 1: epochs.")
    flags.DEFINE_integer("pretrain_batch_size", None, "Stage 1: per-replica batch size.")
    flags.DEFINE_float("pretrain_temperature", None, "Stage 1: NT-Xent temperature (the study: 0.1).")
    flags.DEFINE_string("pretrain_policy", None, "Stage 1: augmentation policy of the two views: "
                        "study (the study's two of nine), simclr (the standard one), affine (small "
                        "orientation-keeping warps, contrast and noise: the digits demo's), "
                        "inception_crop, mild_crop.")
    flags.DEFINE_integer("pretrain_seed", None, "Stage 1: seed.")
  flags.DEFINE_string("freeze", None, "Stage 2: none (train all, as the study's code), encoder "
                      "(train the head only, as its text says) or N (freeze the first N blocks).")
  flags.DEFINE_float("finetune_learning_rate", None, "Stage 2: Adam learning rate (the study: 5e-5).")
  flags.DEFINE_integer("finetune_batch_size", None, "Stage 2: per-replica batch size.")
  flags.DEFINE_integer("finetune_epochs", None, "Stage 2: maximum epochs (the study: 50).")
  flags.DEFINE_integer("finetune_min_steps_per_epoch", None, "Stage 2: an epoch is at least this "
                       "many steps (several passes over a small split).")
  flags.DEFINE_integer("finetune_patience", None, "Stage 2: early-stopping patience (the study: 25).")
  flags.DEFINE_string("finetune_monitor", None, "Stage 2: early-stopping metric: val_auc (the "
                      "study) or val_label_loss (the demo; better on small validation lists).")
  flags.DEFINE_float("finetune_dropout", None, "Stage 2: head dropout (the study: 0.5).")
  flags.DEFINE_list("finetune_seeds", None, "Stage 2: one teacher per seed, e.g. 0,1,2.")
  flags.DEFINE_list("distill_encoders", None, "Stage 3 distils only the teachers of these "
                    "encoders (default: the preset's, the demo's digits_adam; empty: all).")
  flags.DEFINE_boolean("probe", None, "Stage 1: probe every pretrained encoder and a random-init "
                       "one (k-NN and linear probes of the frozen features, on validation).")
  flags.DEFINE_boolean("references", None, "Score the classical semi-supervised reference (label "
                       "spreading on raw pixels) on every split, beside the teachers and students.")
  if preparing:
    flags.DEFINE_string("archive_dir", None, "A BigEarthNet-S2 archive to prepare into --data_dir "
                        "when it is not prepared yet.")
    flags.DEFINE_string("basic_splits", None, "The study's basic split lists to import when preparing.")
    flags.DEFINE_string("expanded_splits", None, "The same for the expanded scheme.")


def study_from_flags():
  """The study preset with every explicitly given flag applied."""
  import dataclasses

  from simclr_distill import study

  base = study.get_preset(FLAGS.preset)
  changes = {}
  if "encoder" in FLAGS and FLAGS["encoder"].present:
    changes["encoders"] = tuple(study.parse_encoder_spec(s) for s in FLAGS.encoder)
  pretrain_changes = _changes(_PRETRAIN_MAPPING)
  if pretrain_changes:
    changes["pretrain"] = dataclasses.replace(base.pretrain, **pretrain_changes)
  finetune_changes = _changes(_FINETUNE_MAPPING)
  if finetune_changes:
    changes["finetune"] = dataclasses.replace(base.finetune, **finetune_changes)
  if "baseline" in FLAGS and FLAGS["baseline"].present:
    changes["baseline"] = FLAGS.baseline
  for name in ("probe", "references"):
    if name in FLAGS and FLAGS[name].present:
      changes[name] = FLAGS[name].value
  if "distill_encoders" in FLAGS and FLAGS["distill_encoders"].present:
    changes["distill_encoders"] = tuple(FLAGS.distill_encoders)
  if "baseline_seeds" in FLAGS and FLAGS["baseline_seeds"].present:
    changes["baseline_seeds"] = tuple(int(x) for x in FLAGS.baseline_seeds)
  elif "seeds" in FLAGS and FLAGS["seeds"].present:
    changes["baseline_seeds"] = ()  # --seeds alone sets the baselines' seeds too.
  if "archive_dir" in FLAGS and FLAGS["archive_dir"].present:
    changes["archive_dir"] = FLAGS.archive_dir
    changes["split_dirs"] = tuple((s, FLAGS[f"{s}_splits"].value) for s in ("basic", "expanded")
                                  if FLAGS[f"{s}_splits"].value)
  distill = config_from_flags(base.distill)
  if "baseline" in FLAGS:
    distill = dataclasses.replace(distill, baseline=False)  # The study's baselines are a step.
  return dataclasses.replace(base, distill=distill, **changes)


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
  """Runs `main`; a bad input ends with its message on stderr and exit status 2, never a
  traceback: a value the command cannot use (ValueError, which TeacherError is, and KeyError),
  a file it cannot parse, or a path it cannot read or write (`explain`). Other errors (a
  failing disk, a bug) keep their traceback."""
  try:
    main()
  except (ValueError, KeyError, OSError) as e:
    if isinstance(e, OSError) and not _bad_path(e):
      raise
    print(f"error: {explain(e)}", file=sys.stderr)
    sys.exit(2)


# errno values that mean "this path cannot be used as given" (a user's input, not a fault).
_PATH_ERRNOS = ("EACCES", "EPERM", "EROFS", "EISDIR", "ENOTDIR", "EEXIST", "ENOENT", "ENOSPC",
                "EDQUOT", "ENAMETOOLONG", "ELOOP", "ENOTEMPTY", "EXDEV")


def _bad_path(error: OSError) -> bool:
  import errno

  return error.errno is None or error.errno in {getattr(errno, n, None) for n in _PATH_ERRNOS}


def explain(error: BaseException) -> str:
  """The one-line message `run_or_explain` prints for `error` (after "error: ")."""
  from simclr_distill.fileio import DiskFullError

  if isinstance(error, KeyError):
    return str(error.args[0]) if error.args else str(error)
  if isinstance(error, DiskFullError):
    return error.strerror
  if isinstance(error, OSError) and error.errno is not None:
    path = error.filename2 or error.filename  # A rename: the destination is what was written.
    reason = error.strerror or type(error).__name__
    if path is None:
      return f"{reason} ({type(error).__name__})"
    return (f"cannot read or write {os.fsdecode(path)}: {reason}; check that the path (and each "
            "directory above it) is a directory or a file as the command expects and that you "
            "may write there, or give another path")
  message = str(error)
  path = _csv_being_read(error)
  if path is not None and path not in message:
    return (f"{path} is not a readable CSV table ({message}); repair or replace it, or give the "
            "right file")
  return message


def _csv_being_read(error: BaseException) -> str | None:
  """The file a failing `pandas.read_csv` was reading, or None: pandas' parser errors (an
  empty file, unbalanced quotes, binary bytes) do not name it, but the call on the traceback
  holds it."""
  tb, path = error.__traceback__, None
  while tb is not None:
    frame = tb.tb_frame
    if frame.f_code.co_name == "read_csv" and frame.f_globals.get("__name__", "").startswith("pandas"):
      value = frame.f_locals.get("filepath_or_buffer")
      if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
    tb = tb.tb_next
  return path


def check_output(path, flag: str, *, directory: bool = True, example: str = "output") -> None:
  """Refuses, before any work, an output path the command could not write (see
  `fileio.check_writable`); the message names `flag`."""
  from simclr_distill import fileio

  if path:
    fileio.check_writable(path, directory=directory, flag=flag, example=example)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every bad command line ending in exit status 2 and a message
  (absl exits 1): a flag that does not parse or is unknown, a positional argument (a flag
  whose dashes were forgotten would otherwise be dropped silently, and the default preset
  start), and a float flag that is not finite. --help and its kin exit 0.

  Returns:
    argv[:1], the program name (no positional arguments are accepted).
  """
  import math

  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    _refuse(str(e))
  except SystemExit as e:  # Only absl's help flags exit while parsing; they exit 1.
    sys.exit(0 if e.code == 1 else e.code)
  for word in rest[1:]:
    name = word.lstrip("-").partition("=")[0]
    hint = (f"flags start with --, e.g. --{word.lstrip('-')}" if name in FLAGS
            else "this command takes flags only (--name=value)")
    _refuse(f"unexpected argument {word!r}: {hint}")
  for name in list(FLAGS):
    flag = FLAGS[name]
    if flag.present and isinstance(flag.value, float) and not math.isfinite(flag.value):
      _refuse(f"--{name}={flag.value} must be a finite number")
  return rest[:1]


def _refuse(message: str) -> None:
  print(f"error: {message}\n(`--help` lists this command's flags)", file=sys.stderr)
  sys.exit(2)


def run_app(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` with `parse_flags`: what every stage's `run()` calls."""
  from absl import app

  app.run(main, flags_parser=parse_flags)
