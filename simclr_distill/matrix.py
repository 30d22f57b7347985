"""The run matrix: one `RunSpec` per trained model, deterministic ids, filters and shards.

A run id is a readable prefix plus a hash of the run's fully resolved settings, so the same
settings always give the same id (a rerun finds and skips finished runs) and any change of a
setting gives a new one. Shards take every num_shards-th run of the id-sorted matrix, so
`--num_shards` machines or array-job tasks split it without talking to each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from typing import Any, Iterable, Sequence

from simclr_distill import config as config_lib
from simclr_distill.config import DistillConfig, LossConfig
from simclr_distill.teachers import TeacherEntry, TeacherError, make_ensemble

STAGES = ("distill", "baseline", "finetune")
_LATER_TEACHER_FIELDS = {"members": [], "combine": ""}


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
  # Stage 3's teaching: the student's augmentation policy (fixed/independent/consistent
  # modes), mixup's Beta parameter (consistent), and the born-again generation (2: the
  # teacher is generation 1's student).
  augment: str = ""
  mixup: float = 0.0
  generation: int = 1
  schedule: str = "constant"
  warmup_epochs: int = 0
  select: str = "best"
  student_classes: tuple[int, ...] = ()
  # An epoch is at least this many optimizer steps (several passes over a small labelled split).
  min_steps: int = 0

  def settings(self) -> dict[str, Any]:
    """The resolved settings, JSON-ready (what the run id hashes).

    A teacher's provenance is not part of a run's identity; fields added after the first
    release are left out at their defaults, so earlier run ids (and finished runs) stay valid.
    """
    settings = json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))
    if settings["teacher"] is not None:
      _strip_teacher(settings["teacher"])
      if self.generation > 1:  # Its id is the parent run's id; where that run lives is not.
        settings["teacher"].pop("path")
    for name, default in _LATER_FIELDS.items():
      if settings[name] == default:
        del settings[name]
    return settings

  @property
  def run_id(self) -> str:
    digest = hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:10]
    if self.teacher and self.generation > 1:  # Not the parent's long id, nested each generation.
      source = f"{root_teacher_id(self)}-gen{self.generation}"
    elif self.teacher:
      source = self.teacher.teacher_id
    elif self.encoder:
      source = f"{self.encoder}-{self.labeling}-{self.split_percent}"
    else:
      source = f"{self.labeling}-{self.split_percent}"
    return f"{self.stage}-{self.arch}-{source}-{self.optimizer}-s{self.seed}-{digest}"

  @property
  def method(self) -> str:
    """A short label of the teaching recipe, e.g. "soft_kl T=4 / consistent+mixup1 /
    ensemble(logits) / gen2": the column results are grouped by to compare methods over seeds
    (no "," or "|", so `--only=method=...` can name it)."""
    if self.stage != "distill":
      return "supervised" if self.stage == "baseline" else self.stage
    loss = self.loss
    parts = [loss.kind if loss.kind == "hard" else f"{loss.kind} T={loss.temperature:g}"]
    if loss.alpha:
      parts[0] += f" a={loss.alpha:g}"
    mode = self.teacher_mode + (f"+mixup{self.mixup:g}" if self.mixup else "")
    parts.append(mode)
    ensemble = self.teacher.combine if self.teacher is not None and self.teacher.members else (
        self.teacher.provenance.get("root_ensemble", "") if self.teacher is not None else "")
    if ensemble:  # Taught by an ensemble, or descended from a student of one.
      parts.append(f"ensemble({ensemble})")
    if self.arch == SAME_ARCH:
      parts.append("self")
    if self.generation > 1:
      parts.append(f"gen{self.generation}")
    if self.student_classes:
      parts.append("classes " + "+".join(map(str, self.student_classes)))
    return " / ".join(parts)

  @property
  def root_teacher_id(self) -> str:
    """The zoo teacher (or ensemble) at the start of this run's chain of generations."""
    return root_teacher_id(self)

  @property
  def display_arch(self) -> str:
    """The architecture as the results table shows it: "same:<teacher's arch>" for a copy of
    the teacher's own network."""
    if self.arch == SAME_ARCH and self.teacher and self.teacher.arch:
      return f"{self.arch}:{self.teacher.arch}"
    return self.arch

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
        "freeze": self.freeze, "init": self.init, "learning_rate": self.learning_rate,
        "epochs": self.epochs, "mixup": self.mixup, "augment": self.augment,
        "schedule": self.schedule, "method": self.method,
    }


# Fields added after the first release (every field declared after `pool_balance`) are left out
# of a run's identity at their defaults, so the ids of runs finished before a field existed
# stay valid: a new setting of the run is a new field at the end of `RunSpec`, nothing more.
_FIELDS = dataclasses.fields(RunSpec)
_LATER_FIELDS = {f.name: json.loads(json.dumps(f.default)) for f in _FIELDS[
    [f.name for f in _FIELDS].index("pool_balance") + 1:]}

SAME_ARCH = "same"  # Self-distillation: the student is the teacher's own network, re-initialised.


def _strip_teacher(teacher: dict) -> None:
  """Drops what is not a teacher's identity from its settings (recursively for ensembles)."""
  teacher.pop("provenance", None)
  for member in teacher.get("members", []):
    _strip_teacher(member)
  for name, default in _LATER_TEACHER_FIELDS.items():
    if teacher.get(name) == default:
      del teacher[name]


def teacher_name(encoder: str, scheme: str, percent: int, seed: int, task: str = "binary") -> str:
  """A stage-2 teacher's id: `<encoder>-<scheme>-<pct>`, plus `-s<seed>` for seeds other than
  0 and `-multiclass` for the multiclass task."""
  suffix = (f"-s{seed}" if seed else "") + ("-multiclass" if task == "multiclass" else "")
  return f"{encoder}-{scheme}-{percent}{suffix}"


def ensemble_id(members: Sequence[TeacherEntry], combine: str) -> str:
  """A readable id for an ensemble: its member ids joined by "+" (a hash when that is long),
  with the combination unless it is the default (logits)."""
  ids = sorted(m.teacher_id for m in members)
  joined = "+".join(ids)
  if len(joined) > 90:
    joined = f"ens{len(ids)}-" + hashlib.sha1(joined.encode()).hexdigest()[:8]
  return joined + ("" if combine == "logits" else f"~{combine}")


def teacher_set(config: DistillConfig, zoo: Sequence[TeacherEntry]) -> list[TeacherEntry]:
  """The teachers a config distils: single zoo teachers (of the selected schemes, splits and
  encoders) and ensembles (see `TeacherConfig.ensemble_over` and `.ensembles`).

  Raises:
    TeacherError: for an explicit ensemble naming a teacher the zoo lacks, or mixing splits.
  """
  d, t = config.data, config.teacher
  in_scope = [e for e in zoo if e.labeling in d.schemes and e.split_percent in d.split_percents
              and not e.members]
  out = [e for e in in_scope if not t.encoders or e.encoder in t.encoders] if t.singles else []
  if t.ensemble_over:
    groups: dict[tuple, list[TeacherEntry]] = {}
    for e in in_scope:
      key = tuple((f, _entry_field(e, f)) for f in ("encoder", "encoder_optimizer", "seed", "arch",
                                                     "labeling", "split_percent")
                  if f not in t.ensemble_over and not (f == "encoder_optimizer" and "encoder" in t.ensemble_over))
      groups.setdefault(key, []).append(e)
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
      if len(members) >= 2:
        out.append(make_ensemble(ensemble_id(members, t.combine), members, t.combine))
  by_id = {e.teacher_id: e for e in zoo}
  for spec in t.ensembles:
    names = [m for m in spec.split("+") if m]
    unknown = [m for m in names if m not in by_id]
    if unknown:
      raise TeacherError(f"ensemble {spec!r} names teacher(s) {', '.join(unknown)} that the zoo "
                         f"lacks; it has {', '.join(sorted(by_id)) or 'none'}")
    members = [by_id[m] for m in names]
    out.append(make_ensemble(ensemble_id(members, t.combine), members, t.combine))
  unique: dict[str, TeacherEntry] = {}
  for e in out:
    unique.setdefault(e.teacher_id, e)
  return list(unique.values())


def _entry_field(entry: TeacherEntry, field: str) -> str:
  if field == "seed":
    return str(entry.provenance.get("seed", "0"))
  return str(getattr(entry, field))


def build_matrix(config: DistillConfig, teachers: Sequence[TeacherEntry], dataset: str) -> list[RunSpec]:
  """Expands a config over a zoo (`teachers`) into its generation-1 runs, sorted by run id.

  Distillation runs: every teacher of `teacher_set` x student architecture x optimizer x
  learning rate x epochs x loss (kind, temperature, alpha) x teaching mode x seed. Baseline
  runs (if `config.baseline`): the same students trained on each labelled split alone, with
  the ground truth. Later generations follow from finished runs (`next_generation`).
  """
  d, s, t = config.data, config.student, config.train
  common = dict(task=d.task, batch_size=t.batch_size, patience=t.patience,
                monitor=t.monitor, head=s.head, dropout=s.dropout, width=s.width, dataset=dataset,
                schedule=t.schedule, warmup_epochs=t.warmup_epochs, select=t.select,
                min_steps=t.min_steps_per_epoch)
  selected = teacher_set(config, teachers)
  runs = []
  for arch, optimizer, seed, epochs in itertools.product(s.archs, t.optimizers, t.seeds, t.epochs):
    for lr in t.learning_rates_for(optimizer):
      per_run = dict(arch=arch, optimizer=optimizer, learning_rate=lr, seed=seed, epochs=epochs,
                     **common)
      for e, loss, mode in itertools.product(selected, config.loss.configs(), config.teacher.modes):
        if arch == SAME_ARCH and e.members:
          continue  # An ensemble has no one network to copy.
        augment = config.teacher.augment if mode in config_lib.AUGMENTED_MODES else ""
        runs.append(RunSpec(
            stage="distill", labeling=e.labeling, split_percent=e.split_percent,
            protocol=config.protocol, early_stopping=t.early_stopping and config.protocol == "holdout",
            loss=loss, teacher=e, teacher_mode=mode,
            pool_balance=config.pool_balance if config.protocol == "holdout" else "none",
            augment="" if augment == "none" else augment,
            mixup=config.teacher.mixup if mode == "consistent" else 0.0,
            student_classes=tuple(s.classes), **per_run))
      if config.baseline and arch != SAME_ARCH:
        for init in s.baseline_inits:
          for scheme in d.schemes:
            for pct in d.split_percents:
              runs.append(RunSpec(
                  stage="baseline", labeling=scheme, split_percent=pct, protocol="holdout",
                  early_stopping=t.early_stopping, loss=LossConfig(kind="hard", alpha=1.0),
                  init=init, **per_run))
  return sorted(runs, key=lambda r: r.run_id)


def root_teacher_id(run: RunSpec) -> str:
  """The zoo teacher (or ensemble) at the start of a run's chain of generations."""
  if run.teacher is None:
    return ""
  return run.teacher.provenance.get("root", run.teacher.teacher_id) if run.generation > 1 else run.teacher.teacher_id


def next_generation(parent: RunSpec, checkpoint: str) -> RunSpec:
  """The born-again child of a finished run: the same settings, taught by the parent's student
  (saved at `checkpoint`)."""
  root = parent.teacher
  teacher = TeacherEntry(teacher_id=parent.run_id, labeling=parent.labeling,
                         split_percent=parent.split_percent, path=str(checkpoint),
                         encoder=root.encoder, encoder_optimizer=root.encoder_optimizer,
                         output="logits", arch=parent.arch if parent.arch != SAME_ARCH else root.arch,
                         provenance={"root": root_teacher_id(parent),
                                     "root_ensemble": root.combine if root.members else
                                     root.provenance.get("root_ensemble", "")})
  return dataclasses.replace(parent, teacher=teacher, generation=parent.generation + 1)


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
      encoder_optimizer=e.optimizer, encoder_digest=e.digest,
      freeze=finetune.freeze if getattr(e, "freeze", None) is None else e.freeze,
      init="simclr" if e.checkpoint else "scratch", min_steps=finetune.min_steps_per_epoch)
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


def check_only(only: str, runs: Sequence[RunSpec]) -> None:
  """Checks that every term of `only` selects some of `runs`.

  Raises:
    ValueError: for an unknown axis (the axes are listed), or a value no run has (naming the
      values the runs have), or terms that select nothing together.
  """
  filters = parse_only(only)
  if not filters:
    return
  if not runs:
    raise ValueError(f"--only={only}: there is no run to select from")
  axes = sorted(runs[0].axes())
  unknown = sorted(set(filters) - set(axes))
  if unknown:
    raise ValueError(f"--only names unknown axis {', '.join(unknown)}; axes: {', '.join(axes)}")
  present = {k: sorted({str(r.axes()[k]) for r in runs}) for k in filters}
  for key, allowed in sorted(filters.items()):
    absent = sorted(allowed - set(present[key]))
    if absent:
      raise ValueError(f"--only={only}: no run has {key}={'|'.join(absent)}; the runs have "
                       f"{key} in {', '.join(present[key]) or '(no runs)'}")
  if not [r for r in runs if all(str(r.axes()[k]) in allowed for k, allowed in filters.items())]:
    raise ValueError(f"--only={only} selects no run: no run has all of these values at once")


def select(runs: Iterable[RunSpec], *, only: str = "", shard_index: int = 0,
           num_shards: int = 1, require_match: bool = True) -> list[RunSpec]:
  """Filters runs by `--only`, then keeps this shard's share (which may be empty: more shards
  than runs).

  Args:
    require_match: an `only` that selects no run is an error (see `check_only`); False when
      the caller checks it over several matrices (the study's students and baselines).

  Raises:
    ValueError: if `only` names an axis that runs do not have, or (with `require_match`)
      selects none of them.
  """
  runs = list(runs)
  filters = parse_only(only)
  if filters:
    if require_match:
      check_only(only, runs)
    elif runs:
      axes = runs[0].axes()
      unknown = sorted(set(filters) - set(axes))
      if unknown:
        raise ValueError(f"--only names unknown axis {', '.join(unknown)}; axes: {', '.join(sorted(axes))}")
    runs = [r for r in runs
            if all(str(r.axes()[k]) in allowed for k, allowed in filters.items())]
  return runs[shard_index::num_shards]
