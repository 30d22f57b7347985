"""The whole study as one resumable pipeline: prepare -> pretrain -> finetune -> label ->
distill -> baseline.

`StudyConfig` holds the settings of every stage: the stage-3 `DistillConfig` (data, students,
loss, schedule, strategy, matrix filters; its workdir is the study's), the shared stage-1
settings (`PretrainConfig`: encoder architecture, temperature, batch, epochs, views), the named
encoders to pretrain (`EncoderSpec`: the study's BEN, CA_adam and CA_sgd, or any a user
defines with its own data and optimizer), the stage-2 `FinetuneConfig`, and whether the
supervised baselines run. Every step skips what is finished, so rerunning the command resumes
the study where it stopped, and a finished study reruns in seconds.

Layout of `<workdir>`: `data/` (the digits demo), `pretrain/<encoder>/` (stage 1), `zoo/`
(stage 2's teacher zoo and manifest), `labels/` (teacher logits), `runs/<run_id>/` (every
finetune, distill and baseline run, each with its results row) and `results.{parquet,csv}`.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Sequence

import pandas as pd

from simclr_distill import checkpointing, config as config_lib, fileio, finetune, matrix, models
from simclr_distill import pretrain, probe as probe_lib, provenance, reference as reference_lib
from simclr_distill import results
from simclr_distill import stats
from simclr_distill import stage3
from simclr_distill import teachers as teachers_lib
from simclr_distill.data import records

log = logging.getLogger(__name__)

ZOO = "zoo"


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """One pretrained encoder of the study (a row of its encoder axis).

  Attributes:
    name: the encoder's name, the zoo's `encoder` column (BEN, CA_adam, ...); "none" means a
      randomly initialised network fine-tuned like the others (the pretraining ablation).
    optimizer: pretraining optimizer, "adam" or "sgd" (SGD: momentum 0.9, cosine decay).
    learning_rate: pretraining peak learning rate; None takes 5e-4 for Adam, 0.1 for SGD
      (the study's values).
    data_dir: prepared data to pretrain on (e.g. California tiles); None: the study's data.
    checkpoint: an already pretrained SimCLR network (`simclr.keras`); stage 1 is skipped.
    epochs: pretraining epochs; None takes the shared pretraining setting.
    freeze: what stays frozen when this encoder's teachers are fine-tuned ("none", "encoder",
      "blocks:N"); None takes the shared stage-2 setting (`--freeze`). Recorded in every
      teacher's row, and named in every comparison of teachers that differ in it.
  """

  name: str
  optimizer: str = "adam"
  learning_rate: float | None = None
  data_dir: str | None = None
  checkpoint: str | None = None
  epochs: int | None = None
  freeze: str | None = None

  def __post_init__(self):
    config_lib._check(bool(self.name) and "/" not in self.name and "," not in self.name,
                      f"encoder name {self.name!r} must be non-empty, without '/' or ','")
    if self.freeze is not None:
      object.__setattr__(self, "freeze", finetune.parse_freeze(self.freeze))
      config_lib._check(self.pretrained or self.freeze == "none",
                        f"encoder {self.name}: freeze={self.freeze} would keep a random-init "
                        "network's random features; train it whole (freeze=none)")
    config_lib._check_choice(f"encoder {self.name} optimizer", self.optimizer, config_lib.OPTIMIZERS)

  @property
  def pretrained(self) -> bool:
    return self.name != finetune.RANDOM_INIT

  def pretrain_config(self, base: pretrain.PretrainConfig) -> pretrain.PretrainConfig:
    lr = self.learning_rate or (0.1 if self.optimizer == "sgd" else base.learning_rate)
    return dataclasses.replace(base, name=self.name, optimizer=self.optimizer, learning_rate=lr,
                               epochs=self.epochs or base.epochs)


_SPEC_FIELDS = {"optimizer": str, "learning_rate": float, "data_dir": str, "checkpoint": str,
                "epochs": int, "freeze": str}


def parse_encoder_spec(text: str) -> EncoderSpec:
  """Parses "NAME[:key=value,...]", e.g. "CA_sgd:optimizer=sgd,learning_rate=0.1,data_dir=D"
  (keys: optimizer, learning_rate, data_dir, checkpoint, epochs, freeze).

  Raises:
    ValueError: for a malformed spec or an unknown key (the keys are listed).
  """
  name, _, rest = text.strip().partition(":")
  values = {}
  for term in filter(None, (t.strip() for t in rest.split(","))):
    key, sep, value = term.partition("=")
    if not sep or key not in _SPEC_FIELDS:
      raise ValueError(f"--encoder {text!r}: {term!r} is not KEY=VALUE with KEY one of "
                       f"{', '.join(_SPEC_FIELDS)}")
    try:
      values[key] = _SPEC_FIELDS[key](value)
    except ValueError:
      raise ValueError(f"--encoder {text!r}: {key}={value!r} is not a valid "
                       f"{_SPEC_FIELDS[key].__name__}") from None
  return EncoderSpec(name=name.strip(), **values)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """Every stage's settings (see the module docstring)."""

  distill: config_lib.DistillConfig
  pretrain: pretrain.PretrainConfig
  encoders: tuple[EncoderSpec, ...]
  finetune: finetune.FinetuneConfig = finetune.FinetuneConfig()
  baseline: bool = True
  baseline_seeds: tuple[int, ...] = ()  # Seeds of the baselines; empty: the students' seeds.
  archive_dir: str | None = None  # A BigEarthNet-S2 archive to prepare if the data is not yet.
  split_dirs: tuple[tuple[str, str], ...] = ()  # (scheme, split-list dir) to import when preparing.
  # Stage 1's probes of every pretrained encoder and of a random-init one (validation lists).
  probe: bool = True
  # The classical semi-supervised reference (label spreading) on every scheme and split.
  references: bool = True
  reference: reference_lib.ReferenceConfig = reference_lib.ReferenceConfig()
  # Stage 3 distils the teachers of these encoders only (empty: every encoder's); the others
  # still go through stages 1 and 2 and their comparisons.
  distill_encoders: tuple[str, ...] = ()

  def __post_init__(self):
    names = [e.name for e in self.encoders]
    config_lib._check(len(names) > 0, "the study has no encoder; give --encoder or --encoders")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    config_lib._check(not duplicated, f"encoder(s) {', '.join(duplicated)} defined twice")
    unknown = sorted(set(self.distill_encoders) - set(names))
    config_lib._check(not unknown, f"--distill_encoders names {', '.join(unknown)}, not an "
                      f"encoder of this study ({', '.join(names)})")

  @property
  def workdir(self) -> pathlib.Path:
    return pathlib.Path(self.distill.workdir)

  def probe_config(self) -> probe_lib.ProbeConfig | None:
    """The stage-1 probes of this study's schemes and splits (None when off)."""
    if not self.probe:
      return None
    d = self.distill.data
    return probe_lib.ProbeConfig(schemes=d.schemes, split_percents=d.split_percents)

  def baseline_config(self) -> config_lib.DistillConfig:
    """The stage-3 config the baselines run with (their own seeds, if given)."""
    if not self.baseline_seeds:
      return self.distill
    return config_lib.override(self.distill, {"train.seeds": self.baseline_seeds})

  def selected_encoders(self) -> list[EncoderSpec]:
    wanted = self.distill.teacher.encoders
    if wanted:
      unknown = sorted(set(wanted) - {e.name for e in self.encoders})
      if unknown:
        raise ValueError(f"--encoders names {', '.join(unknown)}, not defined in this study "
                         f"({', '.join(e.name for e in self.encoders)}); define it with "
                         "--encoder=NAME:optimizer=...,data_dir=...")
    if "encoder" in self.distill.teacher.ensemble_over:
      return list(self.encoders)  # Ensembles over encoders need every encoder's teachers.
    return [e for e in self.encoders if not wanted or e.name in wanted]


PRESETS: dict[str, StudyConfig] = {
    # The study: BEN on BigEarthNet (Adam 5e-4), CA_adam and CA_sgd on California tiles (Adam
    # 5e-4; SGD 0.1 with cosine decay) -> 36 teachers -> 180 students -> 120 baselines (five
    # architectures x 6 splits x 2 schemes, from scratch and on frozen ImageNet backbones).
    "paper": StudyConfig(
        distill=dataclasses.replace(
            config_lib.PRESETS["paper"], workdir="results/study_paper", baseline=False,
            teacher=dataclasses.replace(config_lib.PRESETS["paper"].teacher, zoo_dir=None),
            student=dataclasses.replace(config_lib.PRESETS["paper"].student,
                                        baseline_inits=("scratch", "imagenet"))),
        pretrain=pretrain.PRESETS["paper"],
        encoders=(EncoderSpec("BEN", "adam", 5e-4),
                  EncoderSpec("CA_adam", "adam", 5e-4, data_dir="data/california"),
                  EncoderSpec("CA_sgd", "sgd", 0.1, data_dir="data/california")),
        finetune=finetune.FinetuneConfig(),
    ),
    # The digits study on CPU (about 7 minutes on 2 cores), built to resolve its own
    # differences: the expanded scheme (3, 5, 8 and 9 vs the rest), whose test list holds 216
    # digits (the basic scheme's holds 52, where one digit moves F1 by 0.02). SimCLR with Adam
    # and with SGD, probed on validation, each fine-tuned with its encoder frozen; a random-init
    # network trained whole (the ablation); three seeds on the 3% and 10% splits (18 teachers);
    # label spreading as the classical reference; the Adam encoder's teachers distilled into
    # an MLP and a CNN with hard and soft targets; the baselines over three seeds.
    "demo": StudyConfig(
        distill=config_lib.DistillConfig(
            preset="demo", workdir="results/study_demo", baseline=False,
            data=config_lib.DataConfig(source="digits", schemes=("expanded",),
                                       split_percents=(3, 10)),
            student=config_lib.StudentConfig(archs=("mlp", "cnn"), head="pooled", dropout=0.0),
            loss=config_lib.LossGrid(kinds=("hard", "soft_kl"), temperatures=(1.0,)),
            # At least 20 steps per epoch: the baselines' 30 and 100 labelled digits get the
            # optimizer steps of a student on the 1,290-digit pool (21 per epoch), not 1-2.
            train=config_lib.TrainConfig(optimizers=("adam",), adam_learning_rate=1e-3,
                                         batch_size=64, epochs=(20,), min_steps_per_epoch=20,
                                         patience=5, seeds=(0,), steps_per_execution=4)),
        pretrain=pretrain.PRESETS["demo"],
        # SGD 0.03: at 0.1 and above (the study's 0.1) the small CNN learns less or nothing.
        # Frozen encoders: on the 3% split's validation lists (val_100, 216 digits) teachers
        # on the frozen Adam encoder reached F1 0.965 vs 0.883 trained whole; a random-init
        # network cannot be frozen usefully (0.56) and is trained whole (0.84).
        encoders=(EncoderSpec("digits_adam", "adam", 1e-3, freeze="encoder"),
                  EncoderSpec("digits_sgd", "sgd", 0.03, freeze="encoder"),
                  EncoderSpec(finetune.RANDOM_INIT)),
        # Early stopping on validation loss, not the study's validation AUC: the demo's val lists
        # hold 6-22 digits, on which AUC reaches 1.0 in the first epochs and then never
        # improves. The paper preset keeps val AUC.
        finetune=finetune.FinetuneConfig(learning_rate=1e-3, batch_size=32, epochs=40,
                                         min_steps_per_epoch=20, patience=10,
                                         monitor="val_label_loss", seeds=(0, 1, 2)),
        baseline_seeds=(0, 1, 2),
        # Stage 3 distils the Adam encoder's teachers (with the random-init ones too,
        # `--distill_encoders=digits_adam,none`, the study takes 2.5 minutes longer: their
        # students measured no better than the baselines, F1 -0.026 to +0.004).
        distill_encoders=("digits_adam",),
    ),
    # Beyond the study, on the digits: hard labels, soft labels at T = 1 and 4, offline and
    # consistent teaching with mixup (function matching), one teacher (digits_adam) and the
    # ensemble of the three encoders' teachers, a born-again second generation, three seeds
    # each: 72 students of the 10% split (about 12 minutes on 2 cores after stages 1 and 2).
    # `python -m stages.results --workdirs=results/methods_demo --group_by=stage,method`.
    "methods": StudyConfig(
        distill=config_lib.DistillConfig(
            preset="methods", workdir="results/methods_demo", baseline=False,
            data=config_lib.DataConfig(source="digits", schemes=("basic",), split_percents=(10,)),
            teacher=config_lib.TeacherConfig(
                modes=("offline", "consistent"), augment="mild_crop", mixup=1.0,
                encoders=("digits_adam",), ensemble_over=("encoder",)),
            student=config_lib.StudentConfig(archs=("mlp",), head="pooled", dropout=0.0,
                                             generations=2),
            loss=config_lib.LossGrid(kinds=("hard", "soft_kl"), temperatures=(1.0, 4.0)),
            train=config_lib.TrainConfig(optimizers=("adam",), adam_learning_rate=1e-3,
                                         batch_size=64, epochs=(20,), patience=5, seeds=(0, 1, 2),
                                         steps_per_execution=4)),
        pretrain=pretrain.PRESETS["demo"],
        encoders=(EncoderSpec("digits_adam", "adam", 1e-3), EncoderSpec("digits_sgd", "sgd", 0.03),
                  EncoderSpec(finetune.RANDOM_INIT)),
        finetune=finetune.FinetuneConfig(learning_rate=1e-3, batch_size=32, epochs=40,
                                         patience=10, monitor="val_label_loss", seeds=(0,)),
        baseline=False,
    ),
    # The whole chain in about two minutes, for CI and for trying an install.
    "smoke": StudyConfig(
        distill=dataclasses.replace(
            config_lib.PRESETS["smoke"], workdir="results/study_smoke", baseline=False,
            train=dataclasses.replace(config_lib.PRESETS["smoke"].train, optimizers=("adam",))),
        pretrain=pretrain.PRESETS["smoke"],
        encoders=(EncoderSpec("digits_adam", "adam", 1e-3), EncoderSpec(finetune.RANDOM_INIT)),
        finetune=finetune.FinetuneConfig(learning_rate=1e-3, batch_size=32, epochs=4, patience=3,
                                         monitor="val_label_loss"),
    ),
}


def get_preset(name: str) -> StudyConfig:
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


# ---- The steps -------------------------------------------------------------------------------


def prepare(cfg: StudyConfig) -> records.PreparedData:
  """Step 0: the study's data (the digits demo, or BigEarthNet prepared from `archive_dir`).

  Raises:
    FileNotFoundError: for records data that is neither prepared nor preparable.
  """
  d = cfg.distill.data
  if d.source == "records" and not (pathlib.Path(d.data_dir) / records.MANIFEST).is_file():
    if not cfg.archive_dir:
      raise FileNotFoundError(
          f"no prepared data at {d.data_dir}; give --archive_dir (a BigEarthNet-S2 archive) to "
          "prepare it here, or run stages.prepare first")
    from simclr_distill.data import bigearthnet

    log.info("preparing %s from %s", d.data_dir, cfg.archive_dir)
    bigearthnet.prepare_archive(cfg.archive_dir, d.data_dir, split_dirs=dict(cfg.split_dirs))
  return stage3.open_data(cfg.distill)


def pretrain_encoders(cfg: StudyConfig, data: records.PreparedData, strategy, *,
                      train: bool = True) -> list[finetune.Encoder]:
  """Stage 1 for each selected encoder (skipping finished ones); returns them ready to fine-tune.

  Args:
    train: pretrain missing encoders; False only finds them (stages.finetune).

  Raises:
    FileNotFoundError: for a missing checkpoint (with `train` False, a missing pretraining).
  """
  encoders = []
  for spec in cfg.selected_encoders():
    pcfg = spec.pretrain_config(cfg.pretrain)
    if not spec.pretrained:
      encoders.append(finetune.Encoder(name=spec.name, arch=pcfg.arch, width=pcfg.width,
                                       freeze=spec.freeze))
      continue
    if spec.checkpoint:
      checkpoint = pathlib.Path(spec.checkpoint)
      if not checkpoint.exists():
        raise FileNotFoundError(f"encoder {spec.name}: no checkpoint at {checkpoint}")
      made_here = checkpoint.parent / "config.json"  # Written by stage 1 beside its checkpoint.
      own = fileio.read_json(made_here).get("pretrain") if made_here.is_file() else None
      if own:
        pcfg = dataclasses.replace(pcfg, arch=own["arch"], width=own.get("width"))
      if train and cfg.probe and checkpoint.is_file():
        pretrain.probe_pretraining(pcfg, data, cfg.workdir, checkpoint, cfg.probe_config(),
                                   global_batch=0, preset=cfg.distill.preset,
                                   settings={"checkpoint": fileio.digest(checkpoint)},
                                   retrain_stale=cfg.distill.retrain_stale)
    elif not train:
      checkpoint = cfg.workdir / "pretrain" / spec.name / pretrain.CHECKPOINT
      if not checkpoint.is_file():
        raise FileNotFoundError(
            f"encoder {spec.name} is not pretrained: no {checkpoint}; run `python -m "
            f"stages.pretrain --name={spec.name} --workdir={cfg.workdir}` (or stages.study), or "
            "give --encoder=NAME:checkpoint=PATH")
    else:
      own = data if spec.data_dir is None else records.PreparedData.open(
          spec.data_dir, bands=cfg.distill.data.bands or None, image_size=cfg.distill.data.image_size,
          standardize=cfg.distill.data.standardize)
      if own.image_shape != data.image_shape:
        raise ValueError(f"encoder {spec.name}: its data {spec.data_dir} has images of "
                         f"{own.image_shape}, the study's {data.image_shape}; prepare both alike")
      train_cfg = cfg.distill.train
      checkpoint = pretrain.run_pretraining(
          pcfg, own, cfg.workdir, strategy=strategy, checkpoint=checkpointing.CheckpointPolicy(
              train_cfg.checkpoint_steps, train_cfg.checkpoint_minutes),
          probe=cfg.probe_config(), preset=cfg.distill.preset,
          retrain_stale=cfg.distill.retrain_stale)
    encoders.append(finetune.Encoder(name=spec.name, optimizer=spec.optimizer,
                                     checkpoint=str(checkpoint), arch=pcfg.arch, width=pcfg.width,
                                     freeze=spec.freeze))
  return encoders


def finetune_teachers(cfg: StudyConfig, encoders: Sequence[finetune.Encoder], *,
                      zoo_dir: str | pathlib.Path | None = None, safe_mode: bool = True,
                      only: str | None = None) -> pathlib.Path:
  """Stage 2: fine-tunes every encoder on every split (this shard's share) into the zoo.

  Args:
    only: a run filter (default: `cfg.distill.only`).

  Returns the zoo directory. Finished runs are (re)published, so an interrupted stage never
  leaves a trained teacher out of the manifest.
  """
  zoo = pathlib.Path(zoo_dir or cfg.workdir / ZOO)
  zoo.mkdir(parents=True, exist_ok=True)
  ctx = stage3.make_context(cfg.distill, safe_mode=safe_mode,
                            encoders={e.name: e for e in encoders})
  runs = matrix.select(matrix.finetune_matrix(cfg.distill, cfg.finetune, encoders,
                                              ctx.data.fingerprint()),
                       only=cfg.distill.only if only is None else only,
                       shard_index=cfg.distill.shard_index, num_shards=cfg.distill.num_shards)
  by_name = {e.name: e for e in encoders}

  def publish(run, row):
    if row["status"] == "ok":
      finetune.publish_teacher(zoo, run, row, ctx.workdir / row["checkpoint"], by_name[run.encoder])

  stage3.train_runs(runs, ctx, "finetune", after=publish)
  listed = {e.provenance.get("source_run"): e for e in teachers_lib.read_zoo(zoo)} if (
      zoo / teachers_lib.MANIFEST).is_file() else {}
  for run in runs:
    # Finished before a kill but not yet listed, or listed with a file that is not the run's
    # checkpoint (replaced, corrupted, or published by an earlier version of the run): list it.
    if not results.is_done(ctx.workdir, run.run_id):
      continue
    row = results.read_row(ctx.workdir, run.run_id)
    entry = listed.get(run.run_id)
    if row.get("status") != "ok":
      continue
    current = entry is not None and entry.resolve(zoo).is_file() and (
        provenance.file_digest(entry.resolve(zoo))
        == provenance.file_digest(ctx.workdir / row["checkpoint"]))
    if not current:
      publish(run, row)
  return zoo


def run_baselines(config: config_lib.DistillConfig, *, safe_mode: bool = True,
                  require_match: bool = True) -> pd.DataFrame:
  """The supervised baselines: every student architecture (x init) trained on each labelled
  split alone, early-stopped on its validation split, scored on the test list.

  Raises:
    ValueError, FileNotFoundError: for architectures or ImageNet weights that cannot be used,
      before anything trains.
  """
  config = dataclasses.replace(config, baseline=True)
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  problems = baseline_problems(config)
  if problems:
    raise ValueError("the baselines cannot run; nothing was trained:\n  - " + "\n  - ".join(problems))
  ctx = stage3.make_context(config, safe_mode=safe_mode)
  for arch in config.student.archs:
    models.check_input_size(arch, ctx.data.image_shape)
  runs = matrix.select(matrix.build_matrix(config, [], ctx.data.fingerprint()), only=config.only,
                       shard_index=config.shard_index, num_shards=config.num_shards,
                       require_match=require_match)
  stage3.train_runs(runs, ctx, "baseline")
  return results.consolidate(workdir)


def baseline_problems(config: config_lib.DistillConfig) -> list[str]:
  """What stops the baselines of `config` before they train: ImageNet weights missing for any
  architecture that needs them (all listed at once) and a monitor a baseline does not log."""
  problems = []
  if "imagenet" in config.student.baseline_inits:
    missing = []
    for arch in config.student.archs:
      try:
        models.imagenet_weights_path(arch, config.student.imagenet_dir)
      except FileNotFoundError:
        missing.append(f"{arch} ({models.imagenet_file(arch, config.student.imagenet_dir)})")
      except ValueError as e:
        problems.append(str(e))
    if missing:
      problems.append(
          f"no ImageNet weights for {len(missing)} architecture(s): {', '.join(missing)}; copy "
          "them there (keras.applications.<Arch>(weights='imagenet', include_top=False) "
          "downloads them on a machine with internet), point --imagenet_dir at them, or drop "
          "'imagenet' from --baseline_inits")
  if config.train.monitor in config_lib.DISTILL_MONITORS:
    problems.append(f"--monitor={config.train.monitor} is logged by distillation runs only; the "
                    "baselines have no teacher: use val_label_loss (or give the baselines their "
                    "own command)")
  return problems


def predicted_teachers(cfg: StudyConfig) -> list[teachers_lib.TeacherEntry]:
  """The zoo entries stage 2 will publish (ids, encoders, splits), before it has run."""
  d = cfg.distill.data
  return [teachers_lib.TeacherEntry(
      teacher_id=matrix.teacher_name(e.name, scheme, pct, seed, d.task), labeling=scheme,
      split_percent=pct, path="", encoder=e.name, encoder_optimizer=e.optimizer if e.pretrained else "",
      output="logits", arch=cfg.pretrain.arch, provenance={"seed": str(seed)})
      for e in cfg.selected_encoders() for scheme in d.schemes for pct in d.split_percents
      for seed in cfg.finetune.seeds]


def preflight(cfg: StudyConfig) -> None:
  """Every check of the study's inputs that can fail, before anything trains: the data (or
  the archive to prepare it from), each encoder's pretraining data and checkpoint, the
  teacher zoo, ImageNet weights of every baseline architecture that needs them, the split
  lists and input sizes, the monitors and `--only`.

  Raises:
    ValueError: listing every problem found, each with what to do.
  """
  problems = []
  d = cfg.distill.data
  data = None
  if d.source == "records" and not (pathlib.Path(d.data_dir) / records.MANIFEST).is_file():
    if not cfg.archive_dir:
      problems.append(f"no prepared data at {d.data_dir} (--data_dir): give --archive_dir (a "
                      "BigEarthNet-S2 archive) to prepare it there, or run stages.prepare first")
    elif not pathlib.Path(cfg.archive_dir).is_dir():
      problems.append(f"--archive_dir={cfg.archive_dir} is not a directory")
  else:
    try:
      data = stage3.open_data(cfg.distill)
    except (ValueError, FileNotFoundError) as e:
      problems.append(str(e))
  if cfg.distill.teacher.zoo_dir is None:
    for spec in cfg.selected_encoders():
      finished = (cfg.workdir / "pretrain" / spec.name / pretrain.CHECKPOINT).is_file()
      if spec.checkpoint and not pathlib.Path(spec.checkpoint).exists():
        problems.append(f"encoder {spec.name}: no checkpoint at {spec.checkpoint} "
                        f"(--encoder={spec.name}:checkpoint=...)")
      elif (spec.pretrained and not spec.checkpoint and spec.data_dir and not finished
            and not (pathlib.Path(spec.data_dir) / records.MANIFEST).is_file()):
        problems.append(
            f"encoder {spec.name} pretrains on {spec.data_dir}, which is not prepared data (no "
            f"{records.MANIFEST}): prepare it there with stages.prepare, or define the encoder "
            f"with another data_dir (--encoder={spec.name}:optimizer={spec.optimizer},"
            f"data_dir=...), or leave it out (--encoders)")
      if data is not None:
        try:
          models.check_input_size(spec.pretrain_config(cfg.pretrain).arch, data.image_shape)
        except (ValueError, KeyError) as e:
          problems.append(f"encoder {spec.name}: {e.args[0]}")
  else:
    try:
      stage3.check_zoo(teachers_lib.read_zoo(cfg.distill.teacher.zoo_dir),
                       pathlib.Path(cfg.distill.teacher.zoo_dir))
    except (ValueError, FileNotFoundError) as e:
      problems.append(str(e))
  if data is not None:
    for arch in cfg.distill.student.archs:
      if arch != matrix.SAME_ARCH:
        try:
          models.check_input_size(arch, data.image_shape)
        except (ValueError, KeyError) as e:
          problems.append(e.args[0])
  if cfg.baseline:
    problems += baseline_problems(cfg.baseline_config())
  if cfg.distill.only:
    distill_cfg = cfg.distill
    if cfg.distill_encoders:
      distill_cfg = dataclasses.replace(distill_cfg, teacher=dataclasses.replace(
          distill_cfg.teacher, encoders=cfg.distill_encoders))
    runs = matrix.build_matrix(dataclasses.replace(distill_cfg, baseline=False),
                               predicted_teachers(cfg), "")
    if cfg.baseline:
      runs += matrix.build_matrix(dataclasses.replace(cfg.baseline_config(), baseline=True), [], "")
    try:
      matrix.check_only(cfg.distill.only, runs)
    except ValueError as e:
      problems.append(str(e))
  if problems:
    raise ValueError("the study cannot run; nothing was trained. Every problem found:\n  - "
                     + "\n  - ".join(problems))


def run_study(cfg: StudyConfig, *, safe_mode: bool = True) -> pd.DataFrame:
  """Runs (or resumes) the whole study; returns its results table.

  With `distill.teacher.zoo_dir` set, stages 1 and 2 are skipped and that zoo is distilled
  (an external zoo and stage 2's are interchangeable).
  """
  if cfg.distill.num_shards > 1:
    raise ValueError("stages.study runs the stages in order in one job (spread over devices with "
                     "--strategy); to shard a stage over machines, run stages.pretrain, "
                     "stages.finetune, stages.label, stages.distill and stages.baseline with "
                     "--num_shards/--shard_index")
  preflight(cfg)
  cfg.workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  data = prepare(cfg)
  distill_cfg = dataclasses.replace(cfg.distill, baseline=False)
  if cfg.distill.teacher.zoo_dir is None:
    from simclr_distill.distill import build_strategy

    log.info("stage 1: pretraining %s", ", ".join(e.name for e in cfg.selected_encoders()))
    encoders = pretrain_encoders(cfg, data, build_strategy(cfg.distill.strategy, cfg.distill.tpu))
    log.info("stage 2: fine-tuning %d encoder(s) into %s", len(encoders), cfg.workdir / ZOO)
    # --only filters the student and baseline matrices; the teachers are chosen by --encoders,
    # --schemes, --split_percents and --finetune_seeds (an arch filter would drop them all).
    zoo = finetune_teachers(cfg, encoders, safe_mode=safe_mode, only="")
    distill_cfg = dataclasses.replace(
        distill_cfg, teacher=dataclasses.replace(distill_cfg.teacher, zoo_dir=str(zoo)))
  if cfg.distill_encoders:
    distill_cfg = dataclasses.replace(distill_cfg, teacher=dataclasses.replace(
        distill_cfg.teacher, encoders=cfg.distill_encoders))
  if cfg.references:
    log.info("the classical reference: label spreading on each split and the students' pool")
    d = cfg.distill.data
    reference_lib.run_references(data, cfg.workdir, schemes=d.schemes,
                                 split_percents=d.split_percents, task=d.task,
                                 config=cfg.reference, preset=cfg.distill.preset,
                                 retrain_stale=cfg.distill.retrain_stale)
  log.info("stage 3: labelling and distillation")
  stage3.run_distillation(distill_cfg, safe_mode=safe_mode, require_match=False)
  if cfg.baseline:
    log.info("supervised baselines")
    run_baselines(cfg.baseline_config(), safe_mode=safe_mode, require_match=False)
  table = results.consolidate(cfg.workdir)
  try:
    stats.write_comparisons(cfg.workdir, table)
  except (ValueError, FileNotFoundError) as e:  # Every run is safe on disk; say what is missing.
    log.warning("the study's comparisons were not written: %s", e)
  log.info("study finished in %.0f s: %d results rows in %s", time.perf_counter() - start,
           len(table), cfg.workdir / results.TABLE_PARQUET)
  return table
