"""Every command-line setting in one table: its flag, the config field it sets, how it parses.

`stages/common.py` generates each stage's absl flags from `SETTINGS` and builds the stage's
config with `resolve`; nothing else lists settings. A new setting is a field of a config
dataclass plus one `Setting` row here.

Paths are relative to `study_config.StudyConfig` ("distill.train.epochs", "pretrain.epochs",
"baseline_seeds"). The stage-3 commands (`stages.distill`, `stages.label`) build a
`DistillConfig`, which sees the rows under "distill." with that prefix dropped (`ROOTS`), and
`stages.prepare` a `PrepareConfig`, which sees those under "prepare."; the other rows are not
offered there.

Beside the named flags, `parse_assignment` reaches any field of a config by its dotted path
(`--set=train.epochs=3`), parsing the value by the field's type annotation
(`config_paths`), and `config_paths.format_config` prints a resolved config as the PATH=VALUE
lines `--set` takes.

No absl and no TensorFlow here: the table is plain data, checked against the dataclasses by
tests/test_settings.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

from simclr_distill import config as config_lib
from simclr_distill import config_paths, study_config

# How a flag's text parses; stages/common.py maps each kind to an absl DEFINE_* function.
STR, INT, FLOAT, BOOL, ENUM = "str", "int", "float", "bool", "enum"
LIST, INT_LIST, FLOAT_LIST = "list", "int_list", "float_list"  # Comma-separated.
MULTI = "multi"  # A repeatable flag; each occurrence is one string.
KINDS = (STR, INT, FLOAT, BOOL, ENUM, LIST, INT_LIST, FLOAT_LIST, MULTI)

# The configs a command builds, each with the prefix of the paths it sees (dropped there).
ROOTS = {"study": "", "distill": "distill.", "prepare": "prepare."}

ALWAYS = "always"  # The group every command takes.
STAGE3_GROUPS = ("data", "teachers", "encoders", "students", "loss", "schedule", "protocol",
                 "scale", "baseline")
STUDY_GROUPS = STAGE3_GROUPS + ("pretrain", "finetune", "study", "prepare")
PREPARE_GROUPS = ("data", "prepare", "prepare_stage")  # stages.prepare: its own rows, and those
# of the study's step 0 ("prepare") and of the data it shares (--split_percents).

Also = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Setting:
  """One row of the table: a flag and the config field it sets.

  Attributes:
    flag: the flag's name, without dashes.
    path: the field's dotted path relative to `StudyConfig`; None for a flag that is no field
      of its own but an input of another row's `also` (--basic_splits).
    kind: one of KINDS: how the flag's text parses into the field's value.
    help: the flag's help text.
    group: which commands take the flag (`STUDY_GROUPS`, or ALWAYS).
    choices: the accepted values of an ENUM.
    paths: the field on another command's config (a root of ROOTS) where it is not `path`
      less that root's prefix (--baseline: the study's baseline step on a StudyConfig, stage
      3's baseline runs on a DistillConfig; --split_percents: the label splits a study uses,
      the splits `stages.prepare` generates).
    also: changes made whenever the flag is given, paths as `path` (--data_dir reads records);
      or a function of every given flag's value returning them. Explicit flags win over these
      changes, and a change whose field a command's config lacks is skipped there.
    convert: turns the flag's parsed value into the field's value, instead of `kind`'s rule.
  """

  flag: str
  path: str | None
  kind: str
  help: str
  group: str
  choices: tuple[str, ...] = ()
  paths: Mapping[str, str] = dataclasses.field(default_factory=dict)
  also: Also | None = None
  convert: Callable[[Any], Any] | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"--{self.flag}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
    if (self.kind == ENUM) != bool(self.choices):
      raise ValueError(f"--{self.flag}: choices go with kind {ENUM!r}, and only with it")

  def path_on(self, root: str) -> str | None:
    """The field this flag sets on the `root` config, or None (not offered there)."""
    if root in self.paths:
      return self.paths[root]
    return _on_root(self.path, root)

  def offered_on(self, root: str) -> bool:
    return self.path is None or self.path_on(root) is not None

  def value(self, given: Any) -> Any:
    """The field's value for the flag's `given` value (absl's parsed one, or text).

    Raises:
      ValueError: saying why `given` is not a value of this setting.
    """
    if self.kind == MULTI and isinstance(given, str):
      given = [given]
    if self.convert is not None:
      return self.convert(given)
    if self.kind == ENUM:
      if given not in self.choices:
        raise ValueError(f"{given!r} is not one of {', '.join(self.choices)}")
      return str(given)
    return _CONVERTERS[self.kind](given)


def _encoder_specs(values: Iterable[str]) -> tuple[study_config.EncoderSpec, ...]:
  return tuple(study_config.parse_encoder_spec(v) for v in values)


def _split_dirs(values: Mapping[str, Any]) -> dict[str, Any]:
  """--archive_dir imports the split lists given beside it when it prepares the data."""
  return {"prepare.split_dirs": tuple((s, values[f"{s}_splits"]) for s in config_lib.SCHEMES
                                      if values.get(f"{s}_splits"))}


SETTINGS: tuple[Setting, ...] = (
    Setting("workdir", "distill.workdir", STR, "Output directory (default: the preset's, e.g. "
            "results/study_demo).", ALWAYS),
    # ---- data
    Setting("data_dir", "distill.data.data_dir", STR, "Prepared data (stages.prepare output). "
            "Omit for the embedded digits demo.", "data",
            also={"distill.data.source": "records"}),
    Setting("schemes", "distill.data.schemes", LIST, "Labelling schemes: basic, expanded.", "data"),
    Setting("split_percents", "distill.data.split_percents", INT_LIST, "Label splits in percent, "
            "e.g. 1,3,10,25,50,100 (stages.prepare: the splits it generates).", "data",
            paths={"prepare": "split_percents"}),
    Setting("task", "distill.data.task", ENUM, "binary (irrigated) or multiclass.", "data",
            choices=config_lib.TASKS),
    Setting("bands", "distill.data.bands", LIST, "Keep these bands, e.g. B04,B03,B02 or rgb "
            "(default: all).", "data"),
    Setting("image_size", "distill.data.image_size", INT, "Resize images to this size "
            "(bilinear).", "data"),
    Setting("standardize", "distill.data.standardize", BOOL, "Standardise bands with the data's "
            "mean/std.", "data"),
    # ---- teachers
    Setting("teacher_zoo", "distill.teacher.zoo_dir", STR, "Teacher zoo directory with "
            "manifest.csv; omit to train the demo zoo into <workdir>/teachers.", "teachers"),
    Setting("teacher_mode", "distill.teacher.modes", LIST, "Teaching modes, one matrix axis: "
            "offline (cached logits of the plain image, the study), online (the same, teacher in "
            "the step), fixed (cached logits, augmented student views), independent (teacher "
            "online on its own augmented view), consistent (teacher online on the student's own "
            "augmented, mixed-up batch: function matching).", "teachers"),
    Setting("augment", "distill.teacher.augment", STR, "Augmentation of "
            "fixed/independent/consistent views: inception_crop (default), mild_crop (tiny "
            "images), simclr, study, none.", "teachers"),
    Setting("mixup", "distill.teacher.mixup", FLOAT, "Mixup Beta(m, m) on consistent runs' "
            "batches (function matching); 0 = off.", "teachers"),
    Setting("single_teachers", "distill.teacher.singles", BOOL, "Distil each selected teacher on "
            "its own (--nosingle_teachers: ensembles only).", "teachers"),
    Setting("ensemble_over", "distill.teacher.ensemble_over", LIST, "Also distil ensembles over "
            "these teacher fields (encoder, encoder_optimizer, seed), e.g. encoder: the encoders "
            "of one split.", "teachers"),
    Setting("ensembles", "distill.teacher.ensembles", LIST, "Explicit ensembles, each "
            "ID+ID+... of zoo teacher ids.", "teachers"),
    Setting("ensemble_combine", "distill.teacher.combine", ENUM, "Ensembles average logits or "
            "probabilities.", "teachers", choices=config_lib.COMBINES),
    Setting("fold_batchnorm", "distill.teacher.fold_batchnorm", BOOL, "Run teachers with their "
            "BatchNormalization layers folded into the convolutions before them (default on: "
            "same logits up to float rounding, checked as each teacher loads; ~1.2x faster "
            "ResNet152 passes). --nofold_batchnorm runs the checkpoint as it is.", "teachers"),
    # ---- encoders
    Setting("encoders", "distill.teacher.encoders", LIST, "Only these pretrained encoders (BEN, "
            "CA_adam, ...) and their teachers.", "encoders"),
    Setting("encoder", "encoders", MULTI, "Define an encoder (repeatable; replaces the preset's "
            "list): NAME[:optimizer=adam|sgd,learning_rate=LR,data_dir=PREPARED,"
            "checkpoint=SIMCLR.keras,epochs=N]. NAME 'none' is the random-init ablation. E.g. "
            "--encoder=CA_sgd:optimizer=sgd,learning_rate=0.1,data_dir=data/california",
            "encoders", convert=_encoder_specs),
    # ---- students
    Setting("archs", "distill.student.archs", LIST, "Student architectures (see "
            "simclr_distill.models); 'same' is self-distillation (the teacher's own network, "
            "re-initialised).", "students"),
    Setting("generations", "distill.student.generations", INT, "Born-again generations: k+1 "
            "learns from k's student; the ensemble of the generations is scored too.", "students"),
    Setting("student_classes", "distill.student.classes", INT_LIST, "Unseen-class experiment "
            "(multiclass): train only on pool examples of these classes, e.g. 0,1,2,3,4,5.",
            "students"),
    Setting("head", "distill.student.head", ENUM, "Student head.", "students",
            choices=("study", "pooled")),
    Setting("dropout", "distill.student.dropout", FLOAT, "Student head dropout.", "students"),
    # ---- loss
    Setting("loss", "distill.loss.kinds", LIST, "Losses, one matrix axis: hard (the study), "
            "soft_kl, soft_xent.", "loss"),
    Setting("temperature", "distill.loss.temperatures", FLOAT_LIST, "Soft-target temperatures T "
            "(loss scaled by T^2), an axis, e.g. 1,4.", "loss"),
    Setting("alpha", "distill.loss.alphas", FLOAT_LIST, "Weights of the ground-truth loss on "
            "labelled examples, an axis.", "loss"),
    # ---- schedule
    Setting("optimizers", "distill.train.optimizers", LIST, "Student optimizers: adam, sgd.",
            "schedule"),
    Setting("learning_rate", "distill.train.learning_rates", FLOAT_LIST, "Learning rates for "
            "every optimizer, an axis (default: --adam_learning_rate / --sgd_learning_rate).",
            "schedule"),
    Setting("schedule", "distill.train.schedule", ENUM, "Learning-rate schedule: constant, or "
            "cosine decay to 0 over the run (resumes where it stopped).", "schedule",
            choices=config_lib.SCHEDULES),
    Setting("warmup_epochs", "distill.train.warmup_epochs", INT, "Linear warm-up epochs of the "
            "cosine schedule.", "schedule"),
    Setting("select", "distill.train.select", ENUM, "Weights a validated run keeps: the best "
            "epoch on --monitor, or the last.", "schedule", choices=config_lib.SELECTIONS),
    Setting("adam_learning_rate", "distill.train.adam_learning_rate", FLOAT, "Adam's learning "
            "rate (the study: 1e-4).", "schedule"),
    Setting("sgd_learning_rate", "distill.train.sgd_learning_rate", FLOAT, "SGD's learning rate "
            "(momentum 0.9).", "schedule"),
    Setting("batch_size", "distill.train.batch_size", INT, "Per-replica batch size.", "schedule"),
    Setting("epochs", "distill.train.epochs", INT_LIST, "Maximum epochs per run, an axis.",
            "schedule"),
    Setting("min_steps_per_epoch", "distill.train.min_steps_per_epoch", INT, "An epoch is one "
            "pass over the training set or this many steps, whichever is more: small labelled "
            "splits (a baseline on 30 examples) get the optimizer steps a student gets.",
            "schedule"),
    Setting("patience", "distill.train.patience", INT, "Early-stopping patience (epochs); 0 "
            "never stops (model selection only).", "schedule"),
    Setting("monitor", "distill.train.monitor", STR, "Validation metric of model selection and "
            "early stopping: val_label_loss (default), val_auc (binary), val_accuracy "
            "(multiclass), val_agreement, val_kl, val_distill_loss, val_loss.", "schedule"),
    Setting("early_stopping", "distill.train.early_stopping", BOOL, "Early-stop on validation "
            "(holdout protocol).", "schedule"),
    # --seeds alone sets the study's baselines' seeds too (--baseline_seeds, if given, wins).
    Setting("seeds", "distill.train.seeds", INT_LIST, "Run seeds, e.g. 0,1,2.", "schedule",
            also={"baseline_seeds": ()}),
    Setting("steps_per_execution", "distill.train.steps_per_execution", INT, "Training steps "
            "per compiled call (speed only; results are the same).", "schedule"),
    Setting("mixed_precision", "distill.train.precision", ENUM, "Dtype policy of the trained "
            "networks: float32, mixed_bfloat16 (TPU, A100/H100 GPUs, AMX CPUs) or mixed_float16 "
            "(older GPUs; dynamic loss scaling). Logits and losses stay float32; recorded in "
            "each results row.", "schedule", choices=config_lib.PRECISIONS),
    Setting("jit_compile", "distill.train.jit_compile", BOOL, "XLA-compile the training step "
            "(GPU/TPU; usually slower on CPU). Recorded in each results row.", "schedule"),
    Setting("reuse_models", "distill.train.reuse_models", INT, "Compiled models kept for later "
            "runs of the same network, loss and optimizer, which re-initialise one instead of "
            "tracing anew (speed only; 0 = never).", "schedule"),
    # ---- protocol
    Setting("protocol", "distill.protocol", ENUM, "holdout (sound, default) or original (the "
            "study: train and score on test).", "protocol", choices=config_lib.PROTOCOLS),
    # On the study the baselines are a step of their own; stage 3 trains them beside students.
    Setting("baseline", "baseline", BOOL, "Also train each student on the labelled split alone.",
            "protocol", paths={"distill": "baseline"}),
    Setting("pool_balance", "distill.pool_balance", ENUM, "teacher: resample the holdout pool to "
            "equal teacher-class frequencies; none: as it is.", "protocol",
            choices=config_lib.POOL_BALANCES),
    # ---- baseline
    Setting("baseline_inits", "distill.student.baseline_inits", LIST, "Baseline "
            "initialisations: scratch, imagenet (frozen ImageNet backbone; paper architectures, "
            "weights in --imagenet_dir).", "baseline"),
    Setting("imagenet_dir", "distill.student.imagenet_dir", STR, "keras.applications no-top "
            "ImageNet weight files (default ~/.keras/models).", "baseline"),
    Setting("baseline_seeds", "baseline_seeds", INT_LIST, "Seeds of the baselines (default: the "
            "preset's, else --seeds).", "baseline"),
    # ---- scale
    Setting("strategy", "distill.strategy", ENUM, "tf.distribute strategy: auto (TPU if --tpu, "
            "else one device: each task its own GPU), default, mirrored (one run over every "
            "visible GPU), multi_worker (TF_CONFIG, or the tasks of one srun), tpu.", "scale",
            choices=config_lib.STRATEGIES),
    Setting("tpu", "distill.tpu", STR, "TPU name or grpc:// address (with --strategy=tpu).",
            "scale"),
    Setting("collective_timeout", "distill.collective_timeout", FLOAT, "With "
            "--strategy=multi_worker: seconds after which a gradient all-reduce still waiting for "
            "a lost worker fails, so the others end with an error instead of hanging (0: wait "
            "forever). Must exceed the longest pause of any worker (tracing, evaluation, "
            "checkpoints).", "scale"),
    Setting("shard_index", "distill.shard_index", INT, "This process's shard of the run matrix "
            "(default: from SLURM_ARRAY_TASK_ID, or JOB_COMPLETION_INDEX of a Kubernetes "
            "Indexed Job).", "scale"),
    Setting("num_shards", "distill.num_shards", INT, "Number of shards the matrix is split into "
            "(default: SLURM_ARRAY_TASK_COUNT in a SLURM array task).", "scale"),
    Setting("work_queue", "distill.work_queue", BOOL, "Work-queue mode: every worker started "
            "with this same command takes the whole matrix and claims one run at a time, so "
            "slow runs do not leave workers idle (no shards).", "scale"),
    Setting("only", "distill.only", STR, 'Run a subset, e.g. "arch=ResNet50,split_percent=3|10".',
            "scale"),
    Setting("retrain_stale", "distill.retrain_stale", BOOL, "Retrain the finished runs whose "
            "inputs (split lists, data, teacher checkpoint, label cache) changed since they "
            "finished; without it such a rerun stops and names them. Their old files are kept in "
            "runs/<run_id>/superseded/.", "scale"),
    Setting("checkpoint_steps", "distill.train.checkpoint_steps", INT, "Checkpoint each training "
            "run's full state every N steps (0: not by count). A killed run (preemption, SIGKILL) "
            "resumes at its last checkpoint when the same command is rerun.", "scale"),
    Setting("checkpoint_minutes", "distill.train.checkpoint_minutes", FLOAT, "... and every M "
            "minutes (default 10; 0: not by time). Every epoch end checkpoints too.", "scale"),
    # ---- pretrain (stage 1)
    Setting("pretrain_arch", "pretrain.arch", STR, "Stage 1: encoder architecture (the study: "
            "ResNet152).", "pretrain"),
    Setting("pretrain_width", "pretrain.width", INT, "Stage 1: width of a small encoder (cnn, "
            "mlp, resnet18).", "pretrain"),
    Setting("pretrain_epochs", "pretrain.epochs", INT, "Stage 1: epochs.", "pretrain"),
    Setting("pretrain_batch_size", "pretrain.batch_size", INT, "Stage 1: per-replica batch size.",
            "pretrain"),
    Setting("pretrain_temperature", "pretrain.temperature", FLOAT, "Stage 1: NT-Xent temperature "
            "(the study: 0.1).", "pretrain"),
    Setting("pretrain_policy", "pretrain.policy", STR, "Stage 1: augmentation policy of the two "
            "views: study (the study's two of nine), simclr (the standard one), affine (small "
            "orientation-keeping warps, contrast and noise: the digits demo's), inception_crop, "
            "mild_crop.", "pretrain"),
    Setting("pretrain_seed", "pretrain.seed", INT, "Stage 1: seed.", "pretrain"),
    Setting("probe", "probe", BOOL, "Stage 1: probe every pretrained encoder and a random-init "
            "one (k-NN and linear probes of the frozen features, on validation).", "pretrain"),
    # ---- finetune (stage 2)
    Setting("freeze", "finetune.freeze", STR, "Stage 2: none (train all, as the study's code), "
            "encoder (train the head only, as its text says) or N (freeze the first N blocks).",
            "finetune"),
    Setting("finetune_learning_rate", "finetune.learning_rate", FLOAT, "Stage 2: Adam learning "
            "rate (the study: 5e-5).", "finetune"),
    Setting("finetune_batch_size", "finetune.batch_size", INT, "Stage 2: per-replica batch size.",
            "finetune"),
    Setting("finetune_epochs", "finetune.epochs", INT, "Stage 2: maximum epochs (the study: 50).",
            "finetune"),
    Setting("finetune_min_steps_per_epoch", "finetune.min_steps_per_epoch", INT, "Stage 2: an "
            "epoch is at least this many steps (several passes over a small split).", "finetune"),
    Setting("finetune_patience", "finetune.patience", INT, "Stage 2: early-stopping patience "
            "(the study: 25).", "finetune"),
    Setting("finetune_monitor", "finetune.monitor", STR, "Stage 2: early-stopping metric: val_auc "
            "(the study) or val_label_loss (the demo; better on small validation lists).",
            "finetune"),
    Setting("finetune_dropout", "finetune.dropout", FLOAT, "Stage 2: head dropout (the study: "
            "0.5).", "finetune"),
    Setting("finetune_seeds", "finetune.seeds", INT_LIST, "Stage 2: one teacher per seed, e.g. "
            "0,1,2.", "finetune"),
    # ---- study
    Setting("distill_encoders", "distill_encoders", LIST, "Stage 3 distils only the teachers of "
            "these encoders (default: the preset's, the demo's digits_adam; empty: all).", "study"),
    Setting("references", "references", BOOL, "Score the classical semi-supervised reference "
            "(label spreading on raw pixels) on every split, beside the teachers and students.",
            "study"),
    # ---- prepare (stages.prepare, and the study's step 0)
    Setting("archive_dir", "prepare.archive_dir", STR, "A BigEarthNet-S2 archive (one folder "
            "per patch) to prepare (stages.study: into --data_dir, when it is not prepared yet).",
            "prepare", also=_split_dirs),
    Setting("basic_splits", None, STR, "The study's basic split lists to import when preparing "
            "(train_1 ... test); omit to generate splits with the study's procedure.", "prepare"),
    Setting("expanded_splits", None, STR, "The same for the expanded scheme.", "prepare"),
    Setting("compute_stats", "prepare.compute_stats", BOOL, "Compute per-band mean/std from the "
            "data in the conversion pass instead of BigEarthNet's published ones.", "prepare"),
    Setting("examples_per_shard", "prepare.examples_per_shard", INT, "Patches per TFRecord shard "
            "(default 1000).", "prepare"),
    Setting("workers", "prepare.workers", INT, "Conversion processes (default: all cores).",
            "prepare"),
    Setting("output_dir", "prepare.output_dir", STR, "The prepared data directory to write.",
            "prepare_stage"),
    Setting("source", "prepare.source", ENUM, "Read the raw BigEarthNet archive, TFDS's "
            "prepared bigearthnet/all, or Sentinel-2 scenes cut into unlabelled patches for "
            "stage 1 (default archive).", "prepare_stage",
            choices=study_config.PREPARE_SOURCES),
    Setting("scene_dir", "prepare.scene_dir", STR, "Sentinel-2 scenes (--source=scenes): each "
            "GeoTIFF/JPEG 2000 file a multi-band scene, each folder a scene of one file per band "
            "(B02, B8A, SCL ... in the names; an L2A .SAFE folder works as it is).",
            "prepare_stage"),
    Setting("patch_size", "prepare.scenes.patch_size", INT, "Scene patches: side in 10 m "
            "pixels (default 120, BigEarthNet's).", "prepare_stage"),
    Setting("stride", "prepare.scenes.stride", INT, "Scene patches: grid step in 10 m pixels "
            "(default: the patch size, no overlap).", "prepare_stage"),
    Setting("max_nodata_fraction", "prepare.scenes.max_nodata_fraction", FLOAT, "Drop a scene "
            "patch with more no-data pixels than this share (default 0.5).", "prepare_stage"),
    Setting("max_cloud_fraction", "prepare.scenes.max_cloud_fraction", FLOAT, "Drop a scene "
            "patch with more cloud than this share, where the scene has an SCL band, a QA60 band "
            "or a cloud mask (default 0.1).", "prepare_stage"),
    Setting("cloud_classes", "prepare.scenes.cloud_classes", INT_LIST, "SCL classes counted as "
            "cloud (default 3,8,9,10: shadows, medium and high probability, cirrus).",
            "prepare_stage"),
    Setting("scene_bands", "prepare.scenes.bands", LIST, "Bands of single-file scenes in file "
            "order when their descriptions do not name them, e.g. B2,B3,B4,B8,B5,B6,B7,B8A,B11,"
            "B12,SCL (default: the study's order B04,B03,B02,B08,B05,B06,B07,B8A,B11,B12).",
            "prepare_stage"),
    Setting("scene_scale", "prepare.scenes.scale", FLOAT, "Multiply scene reflectances by this "
            "before storing (10000 for 0-1 reflectance; default 1).", "prepare_stage"),
    Setting("scene_offset", "prepare.scenes.offset", FLOAT, "Then add this (-1000 for L2A "
            "processing baseline >= 04.00 exports, whose BOA_ADD_OFFSET is -1000; default 0). "
            "A .SAFE product's own MTD_MSIL2A.xml offsets take its place.", "prepare_stage"),
    Setting("tfds_data_dir", "prepare.tfds_data_dir", STR, "TFDS data_dir holding "
            "bigearthnet/all (--source=tfds).", "prepare_stage"),
    Setting("tfds_split", "prepare.tfds_split", STR, "TFDS split to read (bigearthnet has only "
            "'train', the default).", "prepare_stage"),
    Setting("split_seed", "prepare.split_seed", INT, "Seed of generated splits (default 0).",
            "prepare_stage"),
)

# Fields a command's flags never change, with the reason a --set to them is refused.
FIXED: dict[str, dict[str, tuple[Any, str]]] = {
    "study": {"distill.baseline": (False, "the study trains its baselines as a step of their own "
                                          "(--baseline sets it)")},
}


def offered(root: str, groups: Iterable[str] | None = None,
            rows: Iterable[Setting] | None = None) -> list[Setting]:
  """The rows (default: SETTINGS) a command building the `root` config takes: those of
  `groups` (default: all) and of ALWAYS whose field that config has."""
  if root not in ROOTS:
    raise ValueError(f"unknown config {root!r}; known: {', '.join(ROOTS)}")
  wanted = None if groups is None else {ALWAYS, *groups}
  return [r for r in (SETTINGS if rows is None else rows)
          if (wanted is None or r.group in wanted) and r.offered_on(root)]


def changes_from_values(rows: Iterable[Setting], values: Mapping[str, Any], *,
                        root: str = "study") -> dict[str, Any]:
  """The config changes the given flags make: {dotted path on `root`: value}.

  Args:
    rows: the settings to read (others' values are ignored).
    values: {flag name: value} of the flags given, as absl parsed them (a list for list
      flags) or as text.
    root: "study", "distill" or "prepare": which config the paths are relative to.

  Raises:
    ValueError: "--flag=value: why" for a value its setting cannot take.
  """
  rows = [r for r in rows if r.flag in values]
  fixed: dict[str, Any] = {}
  given: dict[str, Any] = {}
  for row in rows:
    if row.also is not None:
      extra = row.also(values) if callable(row.also) else row.also
      for path, value in extra.items():
        if (on_root := _on_root(path, root)) is not None:
          fixed[on_root] = value
    path = row.path_on(root)
    if path is None:
      if row.path is not None:
        raise ValueError(f"--{row.flag} sets {row.path}, which a {root} config does not have")
      continue
    value = values[row.flag]
    try:
      given[path] = row.value(value)
    except ValueError as e:
      if str(e).startswith(f"--{row.flag}"):  # The converter named the flag already.
        raise
      shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
      raise ValueError(f"--{row.flag}={shown}: {e}") from None
  return {**fixed, **given}


def resolve(base: Any, values: Mapping[str, Any], assignments: Iterable[str] = (), *,
            root: str, rows: Iterable[Setting] | None = None) -> Any:
  """`base` with the given flags' changes, then each PATH=VALUE of `assignments` (--set).

  Every change goes through `config.override` at once, so every invariant is checked on the
  final config (a --set may repair what a flag alone would break).

  Args:
    base: the preset, a config of `root`.
    values: {flag name: value} of the given flags (see `changes_from_values`).
    assignments: PATH=VALUE texts (see `parse_assignment`), applied after the flags.
    root: "study", "distill" or "prepare": which config `base` is.
    rows: the table (default: SETTINGS).

  Returns:
    The new config.

  Raises:
    ValueError: a bad flag value, a bad --set, or a config that breaks an invariant.
  """
  rows = SETTINGS if rows is None else tuple(rows)
  fixed = FIXED.get(root, {})
  changes = changes_from_values(rows, values, root=root)
  changes.update({path: value for path, (value, _) in fixed.items()})
  for text in assignments:
    path, value = parse_assignment(text, base, rows=rows, root=root)
    if path in fixed:
      raise ValueError(f"--set={text}: {path} is fixed on this command: {fixed[path][1]}")
    changes[path] = value
  return config_lib.override(base, changes)


# ---- Any field by its dotted path (--set) --------------------------------------------------------


def parse_assignment(text: str, config: Any, *, rows: Iterable[Setting] | None = None,
                     root: str | None = None) -> tuple[str, Any]:
  """Parses "PATH=VALUE" (e.g. "train.epochs=3") against the fields of `config`.

  The value is parsed by the field's type annotation: int, float (finite), str, bool
  (true/false/1/0), `X | None` ("none"), `tuple[X, ...]` as comma-separated items (empty:
  the empty tuple), a pair `tuple[X, Y]` as X:Y.

  Args:
    text: the assignment, as given to --set.
    config: the (nested) config dataclass whose field `PATH` names.
    rows: the table (default: SETTINGS), to name the flag that sets a field --set cannot
      parse (--encoder).
    root: which config `config` is ("study", "distill"); default: from its type.

  Returns:
    (path, value), ready for `config.override`.

  Raises:
    ValueError: for a malformed assignment, a path that names no field (the fields at that
      level are listed), a group of fields, or a value the field's type cannot take.
  """
  root = root or _root_of(config)
  path, sep, raw = text.partition("=")
  path = path.strip()
  if not sep or not path:
    raise ValueError(f"--set={text} is not PATH=VALUE, e.g. --set={_EXAMPLES[root]} "
                     "(--print_config lists the paths)")
  hint = config_paths.field_type(type(config), path, text)
  if dataclasses.is_dataclass(config_paths.item_type(hint)):
    flags = [f"--{r.flag}" for r in (SETTINGS if rows is None else rows)
             if r.path_on(root) == path]
    raise ValueError(f"--set={text}: {path} holds {config_paths.item_type(hint).__name__} records, which "
                     f"--set does not parse; use {' or '.join(flags) or 'the command flags'}")
  try:
    return path, config_paths.parse_value(raw, hint)
  except ValueError as e:
    raise ValueError(f"--set={text}: {path} takes {config_paths.describe(hint)}; {e}") from None


# ---- Helpers -----------------------------------------------------------------------------------

_EXAMPLES = {"study": "distill.train.epochs=3", "distill": "train.epochs=3",
             "prepare": "examples_per_shard=500"}


def _on_root(path: str | None, root: str) -> str | None:
  prefix = ROOTS[root]
  if path is None or not path.startswith(prefix):
    return None
  return path[len(prefix):]


def _root_of(config: Any) -> str:
  if isinstance(config, config_lib.DistillConfig):
    return "distill"
  return "prepare" if isinstance(config, study_config.PrepareConfig) else "study"


def _items(value: Any) -> list[str]:
  """A list flag's items: absl's parsed list, or comma-separated text."""
  if isinstance(value, (list, tuple)):
    return list(value)
  return [s.strip() for s in str(value).split(",")] if str(value).strip() else []


def _bool(value: Any) -> bool:
  return value if isinstance(value, bool) else config_paths.parse_value(str(value), bool)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    STR: str,
    INT: int,
    FLOAT: float,
    BOOL: _bool,
    LIST: lambda v: tuple(_items(v)),
    INT_LIST: lambda v: tuple(int(x) for x in _items(v)),
    FLOAT_LIST: lambda v: tuple(float(x) for x in _items(v)),
    MULTI: tuple,
}
