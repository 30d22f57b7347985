"""Typed, frozen configuration for the distillation stage, with named presets.

A run's behaviour is fully described by a `DistillConfig`. Presets (`paper`, `demo`, `smoke`)
are plain data; entry points override single fields by dotted path (`train.epochs`) with
`override`, which goes through `dataclasses.replace` so every invariant is checked again.
Every run writes its resolved config as JSON beside its checkpoint (`to_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

PROTOCOLS = ("holdout", "original")
POOL_BALANCES = ("teacher", "none")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
# How the teacher sees the student's training images (Beyer et al. 2021):
#   offline      its logits cached once on the plain image; the student sees the plain image (the study)
#   online       the same, with the teacher run inside each step
#   fixed        cached logits of the plain image; the student sees augmented views ("fixed teacher")
#   independent  online, on its own augmented view of each example
#   consistent   online, on exactly the student's (augmented, optionally mixed-up) batch
TEACHER_MODES = ("offline", "online", "fixed", "independent", "consistent")
AUGMENTED_MODES = ("fixed", "independent", "consistent")
ONLINE_MODES = ("online", "independent", "consistent")
ENSEMBLE_AXES = ("encoder", "encoder_optimizer", "seed")
COMBINES = ("logits", "probabilities")
SCHEDULES = ("constant", "cosine")
SELECTIONS = ("best", "last")
# Keras dtype policies for training: float32, or mixed precision (bfloat16 on TPU and recent
# GPUs/CPUs; float16 with dynamic loss scaling on older GPUs).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("adam", "sgd")
LOSS_KINDS = ("hard", "soft_kl", "soft_xent")
TASKS = ("binary", "multiclass")
DATA_SOURCES = ("digits", "records")
SCHEMES = ("basic", "expanded")
STUDY_SPLIT_PERCENTS = (1, 3, 10, 25, 50, 100)
BASELINE_INITS = ("scratch", "imagenet")



def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
  _check(value in choices, f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def _check_choices(name: str, values: tuple, choices: tuple) -> None:
  _check(len(values) > 0, f"{name} is empty; give at least one of {', '.join(map(str, choices))}")
  for v in values:
    _check_choice(name, v, choices)


# What model selection and early stopping can monitor: the validation metrics every run logs
# (val_auc: binary task; val_accuracy: multiclass) and those only a distillation run logs
# (DISTILL_MONITORS: a baseline has no teacher to agree with).
MONITORS = ("val_label_loss", "val_loss", "val_auc", "val_accuracy", "val_distill_loss",
            "val_agreement", "val_kl")
DISTILL_MONITORS = ("val_distill_loss", "val_agreement", "val_kl")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the examples come from and which label splits are used.

  Attributes:
    source: "digits" (scikit-learn's digits framed as the study's rare-positive task, prepared
      into `<workdir>/data`) or "records" (a directory written by `stages.prepare`).
    data_dir: the prepared data directory; required for "records", optional for "digits".
    schemes: labelling schemes to run ("basic", "expanded").
    split_percents: label-split sizes, percent of the labelled training pool.
    task: "binary" (the irrigated / positive-digit target) or "multiclass".
    bands: keep these bands by name (e.g. B04,B03,B02 or "rgb"); empty keeps all.
    image_size: resize images to image_size x image_size; None keeps the stored size.
    standardize: standardise each band with the data's mean/std (BigEarthNet records).
    shuffle_buffer: examples in the training shuffle buffer.
    cache: cache decoded training examples in memory (small data only).
  """

  source: str = "digits"
  data_dir: str | None = None
  schemes: tuple[str, ...] = ("basic",)
  split_percents: tuple[int, ...] = STUDY_SPLIT_PERCENTS
  task: str = "binary"
  bands: tuple[str, ...] = ()
  image_size: int | None = None
  standardize: bool = True
  shuffle_buffer: int = 10_000
  cache: bool = True

  def __post_init__(self):
    _check_choice("data.source", self.source, DATA_SOURCES)
    _check(
        self.source != "records" or bool(self.data_dir),
        "data.source='records' needs data.data_dir (--data_dir): the output of stages.prepare",
    )
    _check_choices("data.schemes", self.schemes, SCHEMES)
    _check(len(self.split_percents) > 0, "data.split_percents is empty")
    for p in self.split_percents:
      _check(0 < p <= 100, f"data.split_percents holds {p}; each must be in (0, 100]")
    _check_choice("data.task", self.task, TASKS)
    _check(self.image_size is None or self.image_size >= 1,
           f"data.image_size={self.image_size} must be >= 1")
    _check(self.shuffle_buffer >= 1, "data.shuffle_buffer must be >= 1")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """Which teachers are used and how they teach.

  Attributes:
    zoo_dir: a teacher zoo (directory with `manifest.csv`); None trains the demo zoo into
      `<workdir>/teachers` from the labelled splits.
    modes: teaching modes, one matrix axis (see `TEACHER_MODES`): "offline" (the study),
      "online", "fixed", "independent", "consistent".
    augment: the augmentation policy (`augment.POLICIES`) of the student's views in the fixed,
      independent and consistent modes ("none": no augmentation).
    mixup: Beta(mixup, mixup) mixing weight of mixup on the shared batch of consistent runs
      (function matching); 0 turns it off.
    encoders: keep only single teachers whose pretrained encoder is listed (empty: all).
    singles: distil each selected teacher on its own.
    ensemble_over: also distil ensembles: zoo teachers of the selected schemes and splits that
      agree on every field but these (e.g. ("encoder",): the encoders of one split and
      labelling) form one ensemble teacher. `encoders` does not restrict the members.
    ensembles: explicit ensembles, each "ID+ID+..." of zoo teacher ids.
    combine: how an ensemble combines its members: average "logits" or "probabilities".
    demo_arch, demo_width, demo_epochs: the architecture and schedule of demo teachers.
    batch_size: batch size of the labelling pass.
    fold_batchnorm: run each teacher as an inference copy with its BatchNormalization layers
      folded into the convolutions before them (same logits up to float rounding, checked on
      the data as the teacher loads; a ResNet152 runs ~1.2x faster). A speed setting: it is
      not part of a run's identity.
  """

  zoo_dir: str | None = None
  modes: tuple[str, ...] = ("offline",)
  augment: str = "inception_crop"
  mixup: float = 0.0
  encoders: tuple[str, ...] = ()
  singles: bool = True
  ensemble_over: tuple[str, ...] = ()
  ensembles: tuple[str, ...] = ()
  combine: str = "logits"
  demo_arch: str = "cnn"
  demo_width: int | None = 32
  demo_epochs: int = 40
  batch_size: int = 256
  fold_batchnorm: bool = True

  def __post_init__(self):
    _check_choices("teacher.modes", self.modes, TEACHER_MODES)
    _check(math.isfinite(self.mixup) and self.mixup >= 0,
           f"teacher.mixup={self.mixup} must be >= 0 and finite (0 turns mixup off)")
    _check(self.mixup == 0 or "consistent" in self.modes,
           "teacher.mixup applies to consistent teaching (function matching), where the teacher "
           "sees the mixed batch; add consistent to --teacher_mode or set --mixup=0")
    _check(self.augment != "none" or not {"fixed", "independent"} & set(self.modes),
           "the fixed and independent teaching modes differ from offline/online only by the "
           "student's augmented views; give --augment a policy (e.g. inception_crop)")
    for axis in self.ensemble_over:
      _check_choice("teacher.ensemble_over", axis, ENSEMBLE_AXES)
    for spec in self.ensembles:
      _check(len([m for m in spec.split("+") if m]) >= 2,
             f"ensemble {spec!r} must list two or more teacher ids joined by '+'")
    _check(self.singles or bool(self.ensemble_over) or bool(self.ensembles),
           "teacher.singles is off and no ensemble is defined: no teacher would teach")
    _check_choice("teacher.combine", self.combine, COMBINES)
    _check(self.demo_epochs >= 1, "teacher.demo_epochs must be >= 1")
    _check(self.batch_size >= 1, "teacher.batch_size must be >= 1")


@dataclasses.dataclass(frozen=True)
class StudentConfig:
  """The student architectures (names from `models.ARCHITECTURES`) and their head.

  Attributes:
    archs, head, dropout, width: see `models.build_model`.
    baseline_inits: initialisations of the supervised baselines: "scratch" (random) and/or
      "imagenet" (a frozen ImageNet backbone, the study's other 60 baselines; paper
      architectures only, weights read from `imagenet_dir`).
    imagenet_dir: directory of keras.applications' no-top ImageNet weight files (default
      ~/.keras/models, where Keras caches them).
    generations: born-again generations: generation 1 learns from the zoo teacher, generation
      k+1 from generation k's student (same architecture and settings); with two or more, the
      ensemble of a chain's generations is scored too (stage "generation_ensemble").
    classes: train students only on pool examples of these classes (multiclass task; the
      unseen-class experiment); empty: all classes.

  The architecture "same" is self-distillation: the student is the teacher's own network
  (`keras.models.clone_model`), freshly initialised.
  """

  archs: tuple[str, ...] = ("mlp", "cnn")
  head: str = "study"
  dropout: float = 0.25
  width: int | None = None
  baseline_inits: tuple[str, ...] = ("scratch",)
  imagenet_dir: str | None = None
  generations: int = 1
  classes: tuple[int, ...] = ()

  def __post_init__(self):
    _check(len(self.archs) > 0, "student.archs is empty; give at least one architecture")
    _check(self.generations >= 1, f"student.generations={self.generations} must be >= 1")
    _check(len(set(self.classes)) == len(self.classes) and all(c >= 0 for c in self.classes),
           f"student.classes={self.classes} must be distinct class indices >= 0")
    _check_choice("student.head", self.head, ("study", "pooled"))
    _check(0.0 <= self.dropout < 1.0, f"student.dropout={self.dropout} must be in [0, 1)")
    _check_choices("student.baseline_inits", self.baseline_inits, BASELINE_INITS)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """One run's distillation objective (see `losses.distillation_loss`).

  Attributes:
    kind: "hard" (the study's rounded teacher probabilities), "soft_kl" or "soft_xent" (soft
      targets at `temperature`, scaled by T^2).
    temperature: softening temperature T > 0 (unused by "hard").
    alpha: weight of the ground-truth loss on the labelled examples of the stream; 0 = pure
      distillation (the study).
  """

  kind: str = "hard"
  temperature: float = 1.0
  alpha: float = 0.0

  def __post_init__(self):
    _check_choice("loss.kind", self.kind, LOSS_KINDS)
    _check(math.isfinite(self.temperature) and self.temperature > 0,
           f"loss.temperature={self.temperature} must be > 0 and finite")
    _check(0.0 <= self.alpha <= 1.0, f"loss.alpha={self.alpha} must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class LossGrid:
  """The objectives of a matrix: every kind x temperature x alpha (matrix axes).

  "hard" ignores the temperature, so it enters the grid once per alpha (at T = 1).
  """

  kinds: tuple[str, ...] = ("hard",)
  temperatures: tuple[float, ...] = (1.0,)
  alphas: tuple[float, ...] = (0.0,)

  def __post_init__(self):
    _check(len(self.temperatures) > 0, "loss.temperatures is empty")
    _check(len(self.alphas) > 0, "loss.alphas is empty")
    _check(set(self.kinds) != {"hard"} or set(self.temperatures) == {1.0},
           f"--temperature={','.join(f'{t:g}' for t in self.temperatures)} has no effect: hard "
           "pseudo-labels are the rounded teacher probabilities, at no temperature; add a soft "
           "loss (--loss=hard,soft_kl) or drop --temperature")
    self.configs()  # Each combination is checked.

  def configs(self) -> tuple[LossConfig, ...]:
    _check_choices("loss.kinds", self.kinds, LOSS_KINDS)
    out: list[LossConfig] = []
    for kind in self.kinds:
      for temperature in (self.temperatures if kind != "hard" else (1.0,)):
        for alpha in self.alphas:
          loss = LossConfig(kind=kind, temperature=float(temperature), alpha=float(alpha))
          if loss not in out:
            out.append(loss)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation of each student run.

  Attributes:
    optimizers: student optimizers, one matrix axis ("adam", "sgd").
    learning_rates: learning rates, one matrix axis shared by every optimizer; empty uses the
      per-optimizer ones below.
    adam_learning_rate: Adam's (the study used 1e-4 for every student).
    sgd_learning_rate: SGD's (momentum 0.9).
    schedule: "constant" or "cosine" (decay to 0 over the run, after `warmup_epochs` of linear
      warm-up); a function of the optimizer's step, so a resumed run continues its schedule.
    warmup_epochs: linear warm-up epochs of the cosine schedule.
    batch_size: PER-REPLICA batch size; the global batch is this times the replica count.
    epochs: maximum epochs, one matrix axis.
    min_steps_per_epoch: an epoch is one pass over the training set or this many optimizer
      steps, whichever is more (0: one pass). A baseline on a 3% split of 30 examples makes one
      step per pass; this gives it the budget of a student on the pool (the demo: 20).
    early_stopping: validate each epoch on the validation split (holdout protocol only) and
      select weights by `monitor`; stop after `patience` epochs without improvement.
    monitor: the validation metric to select on, any the run logs: val_label_loss (default),
      val_auc (binary), val_accuracy (multiclass), val_agreement, val_kl, val_distill_loss,
      val_loss. Minimised if it ends in "loss" or "kl", else maximised. The default, the
      ground-truth cross-entropy on validation, is a proper scoring rule: it keeps improving
      after a small split's AUC has saturated at 1.0 and favours calibrated logits, which the
      0.5 threshold of F1 needs.
    patience: epochs without improvement before stopping; 0 never stops (model selection
      only, for patient schedules).
    select: which weights a validated run keeps and scores: "best" (the best epoch on
      `monitor`) or "last". Both epochs, and the last epoch's F1, are in the results row.
    seeds: run seeds, one matrix axis.
    steps_per_execution: training steps per compiled call (cuts Python overhead on GPU/TPU).
    precision: Keras dtype policy of the trained networks: "float32", "mixed_bfloat16" or
      "mixed_float16" (dynamic loss scaling); logits and losses stay float32. Speed (and
      numerics), not part of a run's identity; recorded in each results row.
    jit_compile: XLA-compile the training step (GPU/TPU; often slower on CPU). Recorded too.
    reuse_models: compiled models of finished runs kept in memory, so a later run of the same
      network, loss and optimizer re-initialises one instead of building and tracing anew
      (0: never). Speed only: a reused model starts from exactly the state a new one would.
    checkpoint_steps: checkpoint a run's full training state every this many steps (0: not
      by count); a killed run resumes at its last checkpoint when the command is rerun.
    checkpoint_minutes: ... and whenever this many minutes have passed since the last one
      (0: not by time). Every epoch end checkpoints too.
  """

  optimizers: tuple[str, ...] = ("adam",)
  learning_rates: tuple[float, ...] = ()
  adam_learning_rate: float = 1e-4
  sgd_learning_rate: float = 1e-2
  schedule: str = "constant"
  warmup_epochs: int = 0
  batch_size: int = 32
  epochs: tuple[int, ...] = (50,)
  min_steps_per_epoch: int = 0
  early_stopping: bool = True
  monitor: str = "val_label_loss"
  patience: int = 10
  select: str = "best"
  seeds: tuple[int, ...] = (0,)
  steps_per_execution: int = 1
  precision: str = "float32"
  jit_compile: bool = False
  reuse_models: int = 2
  checkpoint_steps: int = 0
  checkpoint_minutes: float = 10.0

  def __post_init__(self):
    _check_choices("train.optimizers", self.optimizers, OPTIMIZERS)
    for lr in self.learning_rates:
      _check(math.isfinite(lr) and lr > 0, f"train.learning_rates holds {lr}; each must be > 0 "
             "and finite")
    for name in ("adam_learning_rate", "sgd_learning_rate"):
      value = getattr(self, name)
      _check(math.isfinite(value) and value > 0, f"train.{name}={value} must be > 0 and finite")
    _check_choice("train.schedule", self.schedule, SCHEDULES)
    _check(self.warmup_epochs >= 0, f"train.warmup_epochs={self.warmup_epochs} must be >= 0")
    _check(self.warmup_epochs == 0 or self.schedule == "cosine",
           f"--warmup_epochs={self.warmup_epochs} has no effect on the constant schedule; use "
           "--schedule=cosine or drop --warmup_epochs")
    _check(self.batch_size >= 1, f"train.batch_size={self.batch_size} must be >= 1")
    _check(len(self.epochs) > 0, "train.epochs is empty")
    _check(self.min_steps_per_epoch >= 0,
           f"train.min_steps_per_epoch={self.min_steps_per_epoch} must be >= 0 (0: one pass)")
    for e in self.epochs:
      _check(e >= 1, f"train.epochs holds {e}; each must be >= 1")
      _check(self.schedule != "cosine" or self.warmup_epochs < e,
             f"train.warmup_epochs={self.warmup_epochs} leaves nothing of a {e}-epoch run to decay")
    _check_choice("train.monitor (--monitor)", self.monitor, MONITORS)
    _check(self.patience >= 0, f"train.patience={self.patience} must be >= 0 (0: never stop)")
    _check_choice("train.select", self.select, SELECTIONS)
    _check(len(self.seeds) > 0, "train.seeds is empty; give at least one seed")
    _check(self.steps_per_execution >= 1, "train.steps_per_execution must be >= 1")
    _check_choice("train.precision", self.precision, PRECISIONS)
    _check(self.reuse_models >= 0, f"train.reuse_models={self.reuse_models} must be >= 0 (0: never)")
    _check(self.checkpoint_steps >= 0,
           f"train.checkpoint_steps={self.checkpoint_steps} must be >= 0 (0: not by count)")
    _check(math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0,
           f"train.checkpoint_minutes={self.checkpoint_minutes} must be >= 0 and finite (0: not "
           "by time)")

  def learning_rates_for(self, optimizer: str) -> tuple[float, ...]:
    return self.learning_rates or (getattr(self, f"{optimizer}_learning_rate"),)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """Everything stage 3 needs: data, teachers, students, loss, schedule, matrix and hardware.

  Attributes:
    preset: the preset this config started from (recorded, not interpreted).
    workdir: where data, labels, runs and the results table go.
    protocol: "holdout" (distill on a pool disjoint from val/test, early-stop on val, score on
      test) or "original" (the study: distill on the test split and score on it, no early
      stopping).
    baseline: also train each student architecture on the labelled split alone (stage
      "baseline"), the comparison a distilled student must beat.
    strategy, tpu: tf.distribute strategy name and TPU address.
    collective_timeout: multi-worker runs: seconds after which a collective still waiting for
      a lost worker fails (0: wait forever).
    shard_index, num_shards: run only every num_shards-th run of the matrix, from shard_index.
    work_queue: every process takes the whole matrix and claims its runs one at a time (N
      workers started with the same command share the work; `training.loop.train_runs`).
    only: a matrix filter such as "arch=ResNet50,split_percent=3|10".
    pool_balance: "teacher" resamples the holdout pool so each class of the teacher's hard
      labels is equally frequent, as the study balanced its labelled data (the natural pool
      is 2-6% positive for BigEarthNet, the test lists 50%); "none" streams it as it is.
    retrain_stale: retrain the finished runs whose inputs (split lists, data, teacher, label
      cache) changed since they finished; False refuses to go on and names them.
  """

  preset: str = "demo"
  workdir: str = "results/demo"
  protocol: str = "holdout"
  baseline: bool = True
  strategy: str = "auto"
  tpu: str | None = None
  collective_timeout: float = 0.0
  shard_index: int = 0
  num_shards: int = 1
  work_queue: bool = False
  only: str = ""
  pool_balance: str = "teacher"
  retrain_stale: bool = False
  data: DataConfig = DataConfig()
  teacher: TeacherConfig = TeacherConfig()
  student: StudentConfig = StudentConfig()
  loss: LossGrid = LossGrid()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    _check_choice("protocol", self.protocol, PROTOCOLS)
    _check_choice("pool_balance", self.pool_balance, POOL_BALANCES)
    _check_choice("strategy", self.strategy, STRATEGIES)
    _check(self.strategy != "tpu" or bool(self.tpu), "strategy='tpu' needs --tpu (name or grpc:// address)")
    _check(self.num_shards >= 1, f"num_shards={self.num_shards} must be >= 1")
    _check(not (self.work_queue and self.num_shards > 1),
           f"--work_queue claims runs from the whole matrix; it takes no --num_shards "
           f"(given {self.num_shards}): drop one of them")
    _check(self.collective_timeout >= 0,
           f"collective_timeout={self.collective_timeout} must be >= 0 (0: wait forever)")
    _check(
        0 <= self.shard_index < self.num_shards,
        f"shard_index={self.shard_index} must be in [0, num_shards={self.num_shards})",
    )
    _check(bool(self.workdir), "workdir is empty; give --workdir")
    _check(self.protocol != "original" or not any(self.loss.alphas),
           f"--protocol=original trains on the test list's teacher labels alone: it has no "
           f"labelled examples, so --alpha={','.join(f'{a:g}' for a in self.loss.alphas)} would "
           "silently weigh a ground-truth term that is always empty; use --alpha=0, or "
           "--protocol=holdout to mix in the labelled split")
    _check(self.teacher.mixup == 0 or not any(self.loss.alphas),
           "mixup mixes the images, so their ground-truth labels no longer apply: use --alpha=0 "
           "with --mixup")
    _check(self.train.monitor != ("val_auc" if self.data.task == "multiclass" else "val_accuracy"),
           f"--monitor={self.train.monitor} is not logged for the {self.data.task} task; use "
           f"{'val_accuracy' if self.data.task == 'multiclass' else 'val_auc'} or val_label_loss")
    _check(not self.student.classes or self.data.task == "multiclass",
           "student.classes (--student_classes) needs --task=multiclass: it keeps the pool's "
           "examples of those classes")


PRESETS: dict[str, DistillConfig] = {
    # The study's stage 3 at full scale: 36 stage-2 teachers x 5 students = 180 runs on the
    # 120x120x10 BigEarthNet-S2 records, Adam 1e-4, batch 32, 50 epochs.
    "paper": DistillConfig(
        preset="paper",
        workdir="results/paper",
        baseline=False,  # The study's 120 baselines are their own stage.
        data=DataConfig(source="records", data_dir="data/bigearthnet", schemes=SCHEMES,
                        cache=False),
        teacher=TeacherConfig(zoo_dir="teachers", batch_size=128),
        student=StudentConfig(archs=("Xception", "InceptionV3", "ResNet50", "ResNet101V2",
                                     "ResNet152")),
        train=TrainConfig(optimizers=("adam",), batch_size=32, epochs=(50,), patience=10),
    ),
    # The embedded default: scikit-learn's digits as a rare-positive binary task, demo teachers
    # trained here, small students with Adam and SGD over three seeds.
    "demo": DistillConfig(
        preset="demo",
        workdir="results/demo",
        data=DataConfig(source="digits", schemes=("basic",), split_percents=(3, 10, 25, 100)),
        teacher=TeacherConfig(demo_arch="cnn", demo_width=32, demo_epochs=40),
        student=StudentConfig(archs=("mlp", "cnn"), head="pooled", dropout=0.0, width=None),
        train=TrainConfig(optimizers=("adam", "sgd"), adam_learning_rate=1e-3, batch_size=64,
                          epochs=(20,), min_steps_per_epoch=20, patience=5, seeds=(0, 1, 2),
                          steps_per_execution=4),
    ),
    # The same path in under two minutes: for CI and for trying the install.
    "smoke": DistillConfig(
        preset="smoke",
        workdir="results/smoke",
        data=DataConfig(source="digits", schemes=("basic",), split_percents=(10, 100)),
        teacher=TeacherConfig(demo_arch="cnn", demo_width=16, demo_epochs=8),
        student=StudentConfig(archs=("mlp",), head="pooled", dropout=0.0),
        train=TrainConfig(optimizers=("adam", "sgd"), adam_learning_rate=1e-3, batch_size=64,
                          epochs=(4,), patience=3, seeds=(0,), steps_per_execution=4),
    ),
    # A patient and consistent teacher (Beyer et al. 2021) on the digits: function matching
    # (the teacher sees the student's cropped, flipped and mixed-up batch), soft targets, a
    # long cosine schedule, model selection on validation without stopping early.
    "patient": DistillConfig(
        preset="patient",
        workdir="results/patient",
        baseline=False,
        data=DataConfig(source="digits", schemes=("basic",), split_percents=(10,)),
        teacher=TeacherConfig(modes=("consistent",), augment="mild_crop", mixup=1.0,
                              demo_arch="cnn", demo_width=32, demo_epochs=40),
        student=StudentConfig(archs=("mlp", "cnn"), head="pooled", dropout=0.0),
        loss=LossGrid(kinds=("soft_kl",), temperatures=(1.0,)),
        train=TrainConfig(optimizers=("adam",), adam_learning_rate=1e-3, schedule="cosine",
                          warmup_epochs=5, batch_size=64, epochs=(300,), patience=0,
                          select="best", seeds=(0,), steps_per_execution=4),
    ),
}


def get_preset(name: str) -> DistillConfig:
  """Returns the named preset.

  Raises:
    KeyError: naming the unknown preset and listing the known ones.
  """
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def override(config: Any, changes: Mapping[str, Any]) -> Any:
  """Returns `config` with fields replaced by dotted path, e.g. {"train.epochs": 3}.

  Raises:
    ValueError: for a path that names no field (the known fields are listed), or a value that
      breaks an invariant.
  """
  nested: dict[str, dict[str, Any]] = {}
  direct: dict[str, Any] = {}
  for path, value in changes.items():
    head, _, rest = path.partition(".")
    names = {f.name for f in dataclasses.fields(config)}
    if head not in names:
      raise ValueError(
          f"{type(config).__name__} has no field {head!r} (from {path!r}); fields: {', '.join(sorted(names))}"
      )
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      direct[head] = value
  for head, sub in nested.items():
    direct[head] = override(getattr(config, head), sub)
  return dataclasses.replace(config, **direct)


def to_dict(config: Any) -> dict[str, Any]:
  """A JSON-ready dict of a (nested) config dataclass."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
  """Rebuilds a config dataclass from `to_dict` output (lists become tuples)."""
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name not in data:
      continue
    value = data[f.name]
    if dataclasses.is_dataclass(f.default):
      value = from_dict(type(f.default), value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[f.name] = value
  return cls(**kwargs)
