"""Typed, frozen configuration for the distillation stage, with named presets.

A run's behaviour is fully described by a `DistillConfig`. Presets (`paper`, `demo`, `smoke`)
are plain data; entry points override single fields by dotted path (`train.epochs`) with
`override`, which goes through `dataclasses.replace` so every invariant is checked again.
Every run writes its resolved config as JSON beside its checkpoint (`to_dict`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

PROTOCOLS = ("holdout", "original")
POOL_BALANCES = ("teacher", "none")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
TEACHER_MODES = ("offline", "online")
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
  """Which teachers are used and how they are queried.

  Attributes:
    zoo_dir: a teacher zoo (directory with `manifest.csv`); None trains the demo zoo into
      `<workdir>/teachers` from the labelled splits.
    mode: "offline" (teacher logits cached once by the labelling step) or "online" (the teacher
      runs inside each training step).
    encoders: keep only teachers whose pretrained encoder is listed (empty: all).
    demo_arch, demo_width, demo_epochs: the architecture and schedule of demo teachers.
    batch_size: batch size of the labelling pass.
  """

  zoo_dir: str | None = None
  mode: str = "offline"
  encoders: tuple[str, ...] = ()
  demo_arch: str = "cnn"
  demo_width: int | None = 32
  demo_epochs: int = 40
  batch_size: int = 256

  def __post_init__(self):
    _check_choice("teacher.mode", self.mode, TEACHER_MODES)
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
  """

  archs: tuple[str, ...] = ("mlp", "cnn")
  head: str = "study"
  dropout: float = 0.25
  width: int | None = None
  baseline_inits: tuple[str, ...] = ("scratch",)
  imagenet_dir: str | None = None

  def __post_init__(self):
    _check(len(self.archs) > 0, "student.archs is empty; give at least one architecture")
    _check_choice("student.head", self.head, ("study", "pooled"))
    _check(0.0 <= self.dropout < 1.0, f"student.dropout={self.dropout} must be in [0, 1)")
    _check_choices("student.baseline_inits", self.baseline_inits, BASELINE_INITS)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The distillation objective (see `losses.distillation_loss`).

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
    _check(self.temperature > 0, f"loss.temperature={self.temperature} must be > 0")
    _check(0.0 <= self.alpha <= 1.0, f"loss.alpha={self.alpha} must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation of each student run.

  Attributes:
    optimizers: student optimizers, one matrix axis ("adam", "sgd").
    learning_rate: one learning rate for every optimizer; None uses the per-optimizer ones.
    adam_learning_rate: Adam's (the study used 1e-4 for every student).
    sgd_learning_rate: SGD's (momentum 0.9).
    batch_size: PER-REPLICA batch size; the global batch is this times the replica count.
    epochs: maximum epochs.
    early_stopping: stop on `monitor` over the validation split (holdout protocol only).
    monitor, patience: early-stopping metric (minimised if it ends in "loss", else maximised)
      and patience. The default, the ground-truth cross-entropy on validation, is a proper
      scoring rule: it keeps improving after a small split's AUC has saturated at 1.0 and
      favours calibrated logits, which the 0.5 threshold of F1 needs.
    seeds: run seeds, one matrix axis.
    steps_per_execution: training steps per compiled call (cuts Python overhead on GPU/TPU).
  """

  optimizers: tuple[str, ...] = ("adam",)
  learning_rate: float | None = None
  adam_learning_rate: float = 1e-4
  sgd_learning_rate: float = 1e-2
  batch_size: int = 32
  epochs: int = 50
  early_stopping: bool = True
  monitor: str = "val_label_loss"
  patience: int = 10
  seeds: tuple[int, ...] = (0,)
  steps_per_execution: int = 1

  def __post_init__(self):
    _check_choices("train.optimizers", self.optimizers, OPTIMIZERS)
    for name in ("learning_rate", "adam_learning_rate", "sgd_learning_rate"):
      value = getattr(self, name)
      _check(value is None or value > 0, f"train.{name}={value} must be > 0")
    _check(self.batch_size >= 1, f"train.batch_size={self.batch_size} must be >= 1")
    _check(self.epochs >= 1, f"train.epochs={self.epochs} must be >= 1")
    _check(self.patience >= 1, f"train.patience={self.patience} must be >= 1")
    _check(len(self.seeds) > 0, "train.seeds is empty; give at least one seed")
    _check(self.steps_per_execution >= 1, "train.steps_per_execution must be >= 1")

  def learning_rate_for(self, optimizer: str) -> float:
    return self.learning_rate or getattr(self, f"{optimizer}_learning_rate")


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
    shard_index, num_shards: run only every num_shards-th run of the matrix, from shard_index.
    only: a matrix filter such as "arch=ResNet50,split_percent=3|10".
    pool_balance: "teacher" resamples the holdout pool so each class of the teacher's hard
      labels is equally frequent, as the study balanced its labelled data (the natural pool
      is 2-6% positive for BigEarthNet, the test lists 50%); "none" streams it as it is.
  """

  preset: str = "demo"
  workdir: str = "results/demo"
  protocol: str = "holdout"
  baseline: bool = True
  strategy: str = "auto"
  tpu: str | None = None
  shard_index: int = 0
  num_shards: int = 1
  only: str = ""
  pool_balance: str = "teacher"
  data: DataConfig = DataConfig()
  teacher: TeacherConfig = TeacherConfig()
  student: StudentConfig = StudentConfig()
  loss: LossConfig = LossConfig()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    _check_choice("protocol", self.protocol, PROTOCOLS)
    _check_choice("pool_balance", self.pool_balance, POOL_BALANCES)
    _check_choice("strategy", self.strategy, STRATEGIES)
    _check(self.strategy != "tpu" or bool(self.tpu), "strategy='tpu' needs --tpu (name or grpc:// address)")
    _check(self.num_shards >= 1, f"num_shards={self.num_shards} must be >= 1")
    _check(
        0 <= self.shard_index < self.num_shards,
        f"shard_index={self.shard_index} must be in [0, num_shards={self.num_shards})",
    )
    _check(bool(self.workdir), "workdir is empty; give --workdir")


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
        train=TrainConfig(optimizers=("adam",), batch_size=32, epochs=50, patience=10),
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
                          epochs=20, patience=5, seeds=(0, 1, 2), steps_per_execution=4),
    ),
    # The same path in under two minutes: for CI and for trying the install.
    "smoke": DistillConfig(
        preset="smoke",
        workdir="results/smoke",
        data=DataConfig(source="digits", schemes=("basic",), split_percents=(10, 100)),
        teacher=TeacherConfig(demo_arch="cnn", demo_width=16, demo_epochs=8),
        student=StudentConfig(archs=("mlp",), head="pooled", dropout=0.0),
        train=TrainConfig(optimizers=("adam", "sgd"), adam_learning_rate=1e-3, batch_size=64,
                          epochs=4, patience=3, seeds=(0,), steps_per_execution=4),
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
