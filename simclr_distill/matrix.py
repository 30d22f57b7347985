"""The run matrix: one `RunSpec` per trained model, deterministic ids, filters and shards.

A run id is a readable prefix plus a hash of the run's fully resolved settings, so the same
settings always give the same id (a rerun finds and skips finished runs) and any change of a
setting gives a new one. Shards take every num_shards-th run of the id-sorted matrix, so
`--num_shards` machines or array-job tasks split it without talking to each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Sequence

from simclr_distill.config import DistillConfig, LossConfig
from simclr_distill.teachers import TeacherEntry

STAGES = ("distill", "baseline", "finetune")
_LATER_FIELDS = {"encoder": "", "encoder_optimizer": "", "encoder_digest": "", "freeze": "none",
                 "init": "scratch"}


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything that determines one trained model."""

  stage: str
  arch: str
  labeling: str
  split_percent: int
  optimizer: str
  learning_rate: float
  seed: int
  protocol: str
  task: str
  epochs: int
  batch_size: int  # per replica
  early_stopping: bool
  patience: int
  monitor: str
  head: str
  dropout: float
  width: int | None
  dataset: str
  loss: LossConfig = LossConfig()
  teacher: TeacherEntry | None = None
  teacher_mode: str = "offline"
  pool_balance: str = "none"
  # Stage 2: the pretrained encoder a teacher is fine-tuned from ("none": random init), its
  # pretraining optimizer and checkpoint digest, and which of its layers stay frozen.
  encoder: str = ""
  encoder_optimizer: str = ""
  encoder_digest: str = ""
  freeze: str = "none"
  # Baselines: "scratch" (random init) or "imagenet" (a frozen ImageNet backbone).
  init: str = "scratch"

  def settings(self) -> dict[str, Any]:
    """The resolved settings, JSON-ready (what the run id hashes).

    A teacher's provenance is not part of a run's identity; fields added after the first
    release are left out at their defaults, so earlier run ids (and finished runs) stay valid.
    """
    settings = json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))
    if settings["teacher"] is not None:
      settings["teacher"].pop("provenance", None)
    for name, default in _LATER_FIELDS.items():
      if settings[name] == default:
        del settings[name]
    return settings

  @property
  def run_id(self) -> str:
    digest = hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:10]
    if self.teacher:
      source = self.teacher.teacher_id
    elif self.encoder:
      source = f"{self.encoder}-{self.labeling}-{self.split_percent}"
    else:
      source = f"{self.labeling}-{self.split_percent}"
    return f"{self.stage}-{self.arch}-{source}-{self.optimizer}-s{self.seed}-{digest}"

  def axes(self) -> dict[str, Any]:
    """The values `--only` filters on and the results table records."""
    t = self.teacher
    encoder = t.encoder if t else self.encoder
    if t:
      teacher_id = t.teacher_id
    elif self.stage == "finetune" and self.encoder:  # The teacher this run makes.
      teacher_id = teacher_name(self.encoder, self.labeling, self.split_percent, self.seed, self.task)
    else:
      teacher_id = ""
    return {
        "stage": self.stage, "arch": self.arch, "labeling": self.labeling,
        "split_percent": self.split_percent, "optimizer": self.optimizer, "seed": self.seed,
        "protocol": self.protocol, "loss_kind": self.loss.kind,
        "temperature": self.loss.temperature, "alpha": self.loss.alpha,
        "teacher_mode": self.teacher_mode if t else "", "pool_balance": self.pool_balance,
        "teacher_id": teacher_id, "encoder": encoder,
        "encoder_optimizer": t.encoder_optimizer if t else self.encoder_optimizer,
        "freeze": self.freeze, "init": self.init,
    }


def teacher_name(encoder: str, scheme: str, percent: int, seed: int, task: str = "binary") -> str:
  """A stage-2 teacher's id: `<encoder>-<scheme>-<pct>`, plus `-s<seed>` for seeds other than
  0 and `-multiclass` for the multiclass task."""
  suffix = (f"-s{seed}" if seed else "") + ("-multiclass" if task == "multiclass" else "")
  return f"{encoder}-{scheme}-{percent}{suffix}"


def build_matrix(config: DistillConfig, teachers: Sequence[TeacherEntry], dataset: str) -> list[RunSpec]:
  """Expands a config into its runs, sorted by run id.

  Distillation runs: every teacher of the configured schemes, split percents and encoders x
  student architectures x optimizers x seeds. Baseline runs (if `config.baseline`): the same
  students trained on each labelled split alone, with the ground truth.
  """
  d, s, t = config.data, config.student, config.train
  common = dict(task=d.task, epochs=t.epochs, batch_size=t.batch_size, patience=t.patience,
                monitor=t.monitor, head=s.head, dropout=s.dropout, width=s.width, dataset=dataset)
  selected = [e for e in teachers
              if e.labeling in d.schemes and e.split_percent in d.split_percents
              and (not config.teacher.encoders or e.encoder in config.teacher.encoders)]
  runs = []
  for arch in s.archs:
    for optimizer in t.optimizers:
      for seed in t.seeds:
        lr = t.learning_rate_for(optimizer)
        per_run = dict(arch=arch, optimizer=optimizer, learning_rate=lr, seed=seed, **common)
        for e in selected:
          runs.append(RunSpec(
              stage="distill", labeling=e.labeling, split_percent=e.split_percent,
              protocol=config.protocol, early_stopping=t.early_stopping and config.protocol == "holdout",
              loss=config.loss, teacher=e, teacher_mode=config.teacher.mode,
              pool_balance=config.pool_balance if config.protocol == "holdout" else "none",
              **per_run))
        if config.baseline:
          for init in s.baseline_inits:
            for scheme in d.schemes:
              for pct in d.split_percents:
                runs.append(RunSpec(
                    stage="baseline", labeling=scheme, split_percent=pct, protocol="holdout",
                    early_stopping=t.early_stopping, loss=LossConfig(kind="hard", alpha=1.0),
                    init=init, **per_run))
  return sorted(runs, key=lambda r: r.run_id)


def finetune_matrix(config: DistillConfig, finetune, encoders: Sequence, dataset: str) -> list[RunSpec]:
  """Stage 2's runs: every encoder x labelling scheme x split percent x seed, sorted by id.

  Args:
    config: data settings (schemes, split percents, task) come from here.
    finetune: a `finetune.FinetuneConfig`.
    encoders: `finetune.Encoder`s.
    dataset: the data's fingerprint.
  """
  d = config.data
  monitor = finetune.monitor
  if d.task == "multiclass" and monitor == "val_auc":
    monitor = "val_accuracy"  # AUC is tracked for the binary task only.
  runs = [RunSpec(
      stage="finetune", arch=e.arch, labeling=scheme, split_percent=pct, optimizer="adam",
      learning_rate=finetune.learning_rate, seed=seed, protocol="holdout", task=d.task,
      epochs=finetune.epochs, batch_size=finetune.batch_size, early_stopping=True,
      patience=finetune.patience, monitor=monitor, head="finetune", dropout=finetune.dropout,
      width=e.width, dataset=dataset, loss=LossConfig(kind="hard", alpha=1.0), encoder=e.name,
      encoder_optimizer=e.optimizer, encoder_digest=e.digest, freeze=finetune.freeze,
      init="simclr" if e.checkpoint else "scratch")
      for e in encoders for scheme in d.schemes for pct in d.split_percents
      for seed in finetune.seeds]
  return sorted(runs, key=lambda r: r.run_id)


def parse_only(only: str) -> dict[str, set[str]]:
  """Parses "arch=ResNet50|ResNet152,split_percent=3" into {axis: allowed values}.

  Raises:
    ValueError: for a malformed term or an unknown axis (the axes are listed).
  """
  filters: dict[str, set[str]] = {}
  for term in filter(None, (x.strip() for x in only.split(","))):
    key, sep, values = term.partition("=")
    if not sep or not key or not values:
      raise ValueError(f"--only term {term!r} is not AXIS=VALUE[|VALUE...]")
    filters.setdefault(key.strip(), set()).update(v.strip() for v in values.split("|"))
  return filters


def select(runs: Iterable[RunSpec], *, only: str = "", shard_index: int = 0,
           num_shards: int = 1) -> list[RunSpec]:
  """Filters runs by `--only`, then keeps this shard's share.

  Raises:
    ValueError: if `only` names an axis that runs do not have.
  """
  runs = list(runs)
  filters = parse_only(only)
  if runs and filters:
    axes = runs[0].axes()
    unknown = sorted(set(filters) - set(axes))
    if unknown:
      raise ValueError(f"--only names unknown axis {', '.join(unknown)}; axes: {', '.join(sorted(axes))}")
    runs = [r for r in runs
            if all(str(r.axes()[k]) in allowed for k, allowed in filters.items())]
  return runs[shard_index::num_shards]
