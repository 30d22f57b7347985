"""The settings table (simclr_distill.settings) against the config dataclasses, the flags
stages/common.py generates from it, the generic --set override and --print_config.

Everything but the last tests runs in-process without TensorFlow; those run a stage command
in a subprocess and stop before TensorFlow loads.
"""

import dataclasses
import os
import pathlib
import subprocess
import sys
import types
import typing

import pytest
from absl import flags

from simclr_distill import config_paths, settings, study_config
from simclr_distill import config as config_lib
from stages import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASES = {"distill": lambda: config_lib.get_preset("demo"),
         "study": lambda: study_config.get_preset("demo"),
         "prepare": study_config.PrepareConfig}


def _field(config, path):
  """(value, type annotation) of the field `path` names in `config`."""
  *heads, last = path.split(".")
  for name in heads:
    config = getattr(config, name)
  return getattr(config, last), typing.get_type_hints(type(config))[last]


def _matches(value, hint) -> bool:
  """Whether `value` is of the annotation `hint` (the types configs use)."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return any(_matches(value, a) for a in args)
  if hint is type(None):
    return value is None
  if origin is tuple:
    if not isinstance(value, tuple):
      return False
    if len(args) == 2 and args[1] is Ellipsis:
      return all(_matches(v, args[0]) for v in value)
    return len(value) == len(args) and all(map(_matches, value, args))
  if hint is float:
    return isinstance(value, float)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, hint)


# A value each setting can take on the demo presets that differs from theirs, as the command
# line gives it, where the one `_sample` derives from the kind would not do; and the flags some
# need beside them to meet the invariants.
_SAMPLES = {
    "data_dir": "some/prepared/dir", "schemes": "basic,expanded", "teacher_mode": "online",
    "ensemble_over": "encoder", "ensembles": "a+b", "optimizers": "sgd", "loss": "soft_kl",
    "temperature": "1,4", "alpha": "0,0.5", "mixup": "0.5", "monitor": "val_auc",
    "finetune_monitor": "val_auc", "shard_index": "1", "num_shards": "3",
    "tpu": "grpc://10.0.0.1:8470", "strategy": "mirrored", "student_classes": "0,1",
    "warmup_epochs": "2", "freeze": "encoder", "baseline_inits": "imagenet",
    "single_teachers": "false", "encoder": ["digits_adam", "x:optimizer=sgd"],
    "encoders": "digits_adam", "distill_encoders": "", "split_percents": "3,10,25",
    "epochs": "7", "learning_rate": "0.003", "archs": "ResNet50", "bands": "rgb",
}
_WITH = {"mixup": {"teacher_mode": "consistent"}, "single_teachers": {"ensembles": "a+b"},
         "student_classes": {"task": "multiclass"}, "temperature": {"loss": "hard,soft_kl"},
         "warmup_epochs": {"schedule": "cosine"}, "shard_index": {"num_shards": "3"}}


def _sample(row: settings.Setting, current, hint) -> str:
  if row.flag in _SAMPLES:
    return _SAMPLES[row.flag]
  if row.kind == settings.ENUM:
    return next(c for c in row.choices if c != current)
  if row.kind == settings.BOOL:
    return "false" if current else "true"
  if row.kind == settings.INT:
    return str((current or 0) + 2)
  if row.kind == settings.FLOAT:
    return str((current or 0.1) / 2)
  if row.kind == settings.INT_LIST:
    return "4,5"
  return "sample_text"


CASES = [(root, row) for root in settings.ROOTS for row in settings.offered(root)
         if row.path is not None]


@pytest.mark.parametrize("root,row", CASES, ids=[f"{r}:--{row.flag}" for r, row in CASES])
def test_each_flag_changes_exactly_its_field(root, row):
  """The table cannot drift from the dataclasses: each row's path names a field of the
  command's config, its flag's value has the field's type, and giving it changes that field
  (and its declared companions) only."""
  base = BASES[root]()
  path = row.path_on(root)
  current, hint = _field(base, path)
  values = {**_WITH.get(row.flag, {}), row.flag: _sample(row, current, hint)}
  changes = settings.changes_from_values(settings.SETTINGS, values, root=root)
  assert path in changes and _matches(changes[path], hint), (changes, hint)
  changed = settings.resolve(base, values, root=root)
  assert _field(changed, path)[0] == changes[path] != current
  before = dict(config_paths.flatten(base))
  after = dict(config_paths.flatten(changed))
  differ = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
  differ = {p.split("[")[0] for p in differ}  # encoders[1].name -> encoders
  assert differ <= set(changes), (differ, changes)
  assert path in differ


def test_every_old_flag_is_a_row_with_its_old_path():
  """Each flag of the hand-written mapping this table replaced keeps its name and field."""
  old = {"workdir": "workdir", "data_dir": "data.data_dir", "schemes": "data.schemes",
         "split_percents": "data.split_percents", "task": "data.task", "bands": "data.bands",
         "image_size": "data.image_size", "standardize": "data.standardize",
         "teacher_zoo": "teacher.zoo_dir", "teacher_mode": "teacher.modes",
         "augment": "teacher.augment", "mixup": "teacher.mixup",
         "single_teachers": "teacher.singles", "ensemble_over": "teacher.ensemble_over",
         "ensembles": "teacher.ensembles", "ensemble_combine": "teacher.combine",
         "fold_batchnorm": "teacher.fold_batchnorm", "encoders": "teacher.encoders",
         "archs": "student.archs", "head": "student.head", "dropout": "student.dropout",
         "generations": "student.generations", "student_classes": "student.classes",
         "loss": "loss.kinds", "temperature": "loss.temperatures", "alpha": "loss.alphas",
         "optimizers": "train.optimizers", "learning_rate": "train.learning_rates",
         "schedule": "train.schedule", "warmup_epochs": "train.warmup_epochs",
         "select": "train.select", "adam_learning_rate": "train.adam_learning_rate",
         "sgd_learning_rate": "train.sgd_learning_rate", "batch_size": "train.batch_size",
         "epochs": "train.epochs", "min_steps_per_epoch": "train.min_steps_per_epoch",
         "patience": "train.patience", "early_stopping": "train.early_stopping",
         "seeds": "train.seeds", "steps_per_execution": "train.steps_per_execution",
         "mixed_precision": "train.precision", "jit_compile": "train.jit_compile",
         "reuse_models": "train.reuse_models", "checkpoint_steps": "train.checkpoint_steps",
         "checkpoint_minutes": "train.checkpoint_minutes", "protocol": "protocol",
         "baseline": "baseline", "strategy": "strategy", "tpu": "tpu",
         "shard_index": "shard_index", "num_shards": "num_shards", "only": "only",
         "retrain_stale": "retrain_stale", "pool_balance": "pool_balance",
         "monitor": "train.monitor", "baseline_inits": "student.baseline_inits",
         "imagenet_dir": "student.imagenet_dir"}
  rows = {r.flag: r for r in settings.SETTINGS}
  assert {f: rows[f].path_on("distill") for f in old} == old
  study = {**{f"pretrain_{f}": f"pretrain.{f}" for f in (
      "arch", "width", "epochs", "batch_size", "temperature", "policy", "seed")},
           "freeze": "finetune.freeze", "finetune_seeds": "finetune.seeds",
           "finetune_learning_rate": "finetune.learning_rate", "encoder": "encoders",
           "baseline": "baseline", "baseline_seeds": "baseline_seeds", "probe": "probe",
           "references": "references", "distill_encoders": "distill_encoders",
           "archive_dir": "prepare.archive_dir", "epochs": "distill.train.epochs"}
  assert {f: rows[f].path_on("study") for f in study} == study
  assert len(rows) == len(settings.SETTINGS)  # One row per flag.


# ---- The special cases, as table data ----------------------------------------------------------


def _study(preset="demo", **values):
  return settings.resolve(study_config.get_preset(preset), values, root="study")


def test_data_dir_also_reads_records():
  for root, prefix in (("study", "distill."), ("distill", "")):
    changes = settings.changes_from_values(settings.SETTINGS, {"data_dir": "D"}, root=root)
    assert changes == {f"{prefix}data.data_dir": "D", f"{prefix}data.source": "records"}


def test_seeds_alone_reset_the_study_baselines_seeds_and_baseline_seeds_win():
  assert study_config.get_preset("demo").baseline_seeds == (0, 1, 2)
  assert _study(seeds="4").baseline_seeds == ()
  assert _study(seeds="4", baseline_seeds="5,6").baseline_seeds == (5, 6)
  assert _study(seeds="4").distill.train.seeds == (4,)
  # Stage 3 has no baseline_seeds: --seeds there sets the run seeds only.
  assert settings.changes_from_values(settings.SETTINGS, {"seeds": "4"}, root="distill") == {
      "train.seeds": (4,)}


def test_baseline_is_the_study_step_there_and_stage_3_runs_here():
  cfg = _study(baseline="false")
  assert cfg.baseline is False and cfg.distill.baseline is False
  assert _study(baseline="true").distill.baseline is False  # Fixed: the study's is a step.
  distill = settings.resolve(config_lib.get_preset("demo"), {"baseline": False}, root="distill")
  assert distill.baseline is False and config_lib.get_preset("demo").baseline is True
  with pytest.raises(ValueError, match="distill.baseline is fixed on this command.*--baseline"):
    settings.resolve(study_config.get_preset("demo"), {}, ["distill.baseline=true"], root="study")


def test_archive_dir_takes_the_split_lists_given_beside_it():
  cfg = _study(archive_dir="A", expanded_splits="E")
  assert (cfg.prepare.archive_dir, cfg.prepare.split_dirs) == ("A", (("expanded", "E"),))
  # Nothing to prepare without an archive.
  assert _study(basic_splits="B").prepare.split_dirs == ()
  prepared = settings.resolve(study_config.PrepareConfig(), {"archive_dir": "A",
                                                             "basic_splits": "B"}, root="prepare")
  assert (prepared.archive_dir, prepared.split_dirs) == ("A", (("basic", "B"),))


def test_stages_prepare_takes_the_study_step_0_rows_and_its_own():
  rows = {r.flag: r for r in settings.offered("prepare", settings.PREPARE_GROUPS)}
  assert set(rows) == {"archive_dir", "basic_splits", "expanded_splits", "compute_stats",
                       "examples_per_shard", "workers", "output_dir", "source", "tfds_data_dir",
                       "tfds_split", "split_seed", "split_percents", "scene_dir", "patch_size",
                       "stride", "max_nodata_fraction", "max_cloud_fraction", "cloud_classes",
                       "scene_bands", "scene_scale", "scene_offset"}
  cfg = settings.resolve(study_config.PrepareConfig(), {
      "source": "scenes", "scene_dir": "S", "stride": "60", "cloud_classes": "8,9",
      "scene_bands": "B2,B3,B4,B8,B5,B6,B7,B8A,B11,B12,SCL"}, ["scenes.offset=-1000"],
      root="prepare")
  assert (cfg.scene_dir, cfg.scenes.step, cfg.scenes.patch_size, cfg.scenes.cloud_classes,
          cfg.scenes.bands[-1], cfg.scenes.offset) == ("S", 60, 120, (8, 9), "SCL", -1000.0)
  with pytest.raises(ValueError, match="stride=61 must be even"):
    settings.resolve(study_config.PrepareConfig(), {"stride": "61"}, root="prepare")
  # One flag, two fields: the label splits a study uses, the splits stages.prepare generates.
  assert rows["split_percents"].path_on("prepare") == "split_percents"
  assert rows["split_percents"].path_on("study") == "distill.data.split_percents"
  cfg = settings.resolve(study_config.PrepareConfig(), {
      "output_dir": "D", "split_percents": "5,50", "workers": "2", "source": "tfds"},
      ["examples_per_shard=10"], root="prepare")
  assert (cfg.output_dir, cfg.split_percents, cfg.workers, cfg.source,
          cfg.examples_per_shard) == ("D", (5, 50), 2, "tfds", 10)
  with pytest.raises(ValueError, match="split_percents=\\[0\\]: each must be in 1..100"):
    settings.resolve(study_config.PrepareConfig(), {"split_percents": "0"}, root="prepare")
  fv = flags.FlagValues()
  common.define_prepare_flags(flag_values=fv)
  assert set(rows) | {"set", "print_config"} == set(fv)  # No --preset: no presets.


def test_encoder_specs_replace_the_list_and_their_errors_name_the_flag():
  cfg = _study("smoke", encoder=["A:optimizer=sgd,learning_rate=0.1", "none"])
  assert [(e.name, e.optimizer, e.learning_rate) for e in cfg.encoders] == [
      ("A", "sgd", 0.1), ("none", "adam", None)]
  with pytest.raises(ValueError) as e:
    _study("smoke", encoder=["x:lr=1"])
  assert str(e.value).startswith("--encoder 'x:lr=1': 'lr=1' is not KEY=VALUE")


@pytest.mark.parametrize("values,message", [
    ({"seeds": ["0", "a"]}, "--seeds=0,a: invalid literal for int() with base 10: 'a'"),
    ({"epochs": "3,x"}, "--epochs=3,x: invalid literal for int() with base 10: 'x'"),
    ({"task": "regression"}, "--task=regression: 'regression' is not one of binary, multiclass"),
    ({"probe": "maybe"}, "--probe=maybe: 'maybe' is not true or false (1 or 0)"),
])
def test_a_bad_flag_value_names_the_flag_and_value(values, message):
  with pytest.raises(ValueError) as e:
    settings.changes_from_values(settings.SETTINGS, values, root="study")
  assert str(e.value) == message


# ---- The generated flags -----------------------------------------------------------------------


def _define(root, groups):
  fv = flags.FlagValues()
  (common.define_flags if root == "distill" else common.define_study_flags)(groups, flag_values=fv)
  return fv


@pytest.mark.parametrize("group", settings.STUDY_GROUPS)
def test_a_command_has_the_flags_of_the_groups_it_takes(group):
  for root in ("distill", "study"):  # stages.prepare: see test_stages_prepare_takes_...
    groups = settings.STAGE3_GROUPS if root == "distill" else settings.STUDY_GROUPS
    if group not in groups:
      continue
    others = tuple(g for g in groups if g != group)
    with_it, without = _define(root, groups), _define(root, others)
    mine = {r.flag for r in settings.offered(root, (group,))} - {
        r.flag for r in settings.offered(root, ())}
    assert mine and mine <= set(with_it) and not mine & set(without)


def test_stage_3_commands_are_not_offered_the_study_settings():
  fv = _define("distill", settings.STAGE3_GROUPS)
  for name in ("encoder", "baseline_seeds", "pretrain_epochs", "finetune_seeds", "archive_dir",
               "probe", "distill_encoders"):
    assert name not in fv
  assert {"epochs", "encoders", "baseline", "set", "print_config", "unsafe_load"} <= set(fv)


def test_generated_flags_parse_into_the_config():
  fv = _define("distill", settings.STAGE3_GROUPS)
  fv(["prog", "--epochs=3,5", "--task=multiclass", "--nofold_batchnorm", "--mixup=0",
      "--set=data.split_percents=3,10", "--set=train.epochs=7"])
  cfg = common.resolve_flags("distill", config_lib.get_preset("demo"), fv)
  assert cfg.train.epochs == (7,)  # --set comes after the named flags.
  assert (cfg.data.task, cfg.teacher.fold_batchnorm, cfg.data.split_percents) == (
      "multiclass", False, (3, 10))
  assert cfg.train.seeds == config_lib.get_preset("demo").train.seeds  # Not given: the preset's.
  assert fv["task"].default is None and fv["mixup"].help == next(
      r.help for r in settings.SETTINGS if r.flag == "mixup")


def test_study_flags_parse_into_the_study_config():
  fv = _define("study", settings.STUDY_GROUPS)
  fv(["prog", "--pretrain_epochs=3", "--encoder=A", "--encoder=B:optimizer=sgd",
      "--finetune_seeds=0,1", "--set=pretrain.temperature=0.2", "--set=finetune.seeds=4,5"])
  cfg = common.resolve_flags("study", study_config.get_preset("smoke"), fv)
  assert (cfg.pretrain.epochs, cfg.pretrain.temperature) == (3, 0.2)
  assert [e.name for e in cfg.encoders] == ["A", "B"] and cfg.finetune.seeds == (4, 5)


def test_a_new_setting_is_a_field_and_one_row(monkeypatch):
  """Adding a setting: the dataclass field, one row; the flag, its mapping onto both configs
  and --set come out of them."""

  @dataclasses.dataclass(frozen=True)
  class Train:
    epochs: int = 5
    label_smoothing: float = 0.0  # 1. The new field.

  @dataclasses.dataclass(frozen=True)
  class Distill:
    train: Train = Train()

  row = settings.Setting("label_smoothing", "distill.train.label_smoothing", settings.FLOAT,
                         "Label smoothing of the hard targets.", "loss")  # 2. One row.
  monkeypatch.setattr(settings, "SETTINGS", (*settings.SETTINGS, row))
  fv = _define("distill", ("loss",))
  assert fv["label_smoothing"].help == "Label smoothing of the hard targets."
  assert "label_smoothing" not in _define("distill", ("data",))
  fv(["prog", "--label_smoothing=0.1"])
  assert common.resolve_flags("distill", Distill(), fv) == Distill(Train(label_smoothing=0.1))
  assert settings.changes_from_values(settings.SETTINGS, {"label_smoothing": "0.1"}) == {
      "distill.train.label_smoothing": 0.1}
  assert settings.parse_assignment("train.label_smoothing=0.2", Distill()) == (
      "train.label_smoothing", 0.2)


def test_a_row_must_be_well_formed():
  with pytest.raises(ValueError, match="kind 'integer' is not one of"):
    settings.Setting("x", "distill.x", "integer", "X.", "data")
  with pytest.raises(ValueError, match="choices go with kind 'enum'"):
    settings.Setting("x", "distill.x", settings.ENUM, "X.", "data")


# ---- --set: any field by its dotted path ---------------------------------------------------------


@pytest.mark.parametrize("root,text,path,value", [
    ("distill", "train.epochs=3", "train.epochs", (3,)),
    ("distill", "data.split_percents=3,10", "data.split_percents", (3, 10)),
    ("distill", "data.image_size=none", "data.image_size", None),
    ("distill", "data.image_size=32", "data.image_size", 32),
    ("distill", "teacher.fold_batchnorm=0", "teacher.fold_batchnorm", False),
    ("distill", "data.bands=", "data.bands", ()),
    ("distill", "only=arch=mlp,split_percent=3|10", "only", "arch=mlp,split_percent=3|10"),
    ("study", "pretrain.temperature=0.2", "pretrain.temperature", 0.2),
    ("study", "finetune.seeds=0,1", "finetune.seeds", (0, 1)),
    ("study", "distill.train.epochs=3", "distill.train.epochs", (3,)),
    ("study", "reference.neighbours=4", "reference.neighbours", 4),  # No flag: --set only.
    ("study", "prepare.split_dirs=basic:B,expanded:E", "prepare.split_dirs",
     (("basic", "B"), ("expanded", "E"))),
])
def test_set_reaches_nested_fields_by_their_types(root, text, path, value):
  base = BASES[root]()
  assert settings.parse_assignment(text, base) == (path, value)
  changed = settings.resolve(base, {}, [text], root=root)
  assert _field(changed, path)[0] == value


@pytest.mark.parametrize("root,text,message", [
    ("distill", "train.epoch=3", "--set=train.epoch=3: train (TrainConfig) has no field 'epoch' "
     "(did you mean 'epochs'?); its fields: adam_learning_rate, batch_size,"),
    ("study", "pretrain.temp=0.2", "its fields: arch, batch_size, epochs, learning_rate, name, "
     "optimizer, policy, seed, temperature, width"),
    ("study", "bogus=1", "the config (StudyConfig) has no field 'bogus'"),
    ("distill", "train.epochs=abc", "--set=train.epochs=abc: train.epochs takes comma-separated "
     "integers; 'abc' is not an integer"),
    ("distill", "train.batch_size=3.5",
     "train.batch_size takes an integer; '3.5' is not an integer"),
    ("distill", "data.image_size=big", "takes an integer or none; 'big' is not an integer"),
    ("distill", "teacher.mixup=inf", "takes a number; 'inf' is not a finite number"),
    ("distill", "data.cache=yes", "takes true or false; 'yes' is not true or false"),
    ("distill", "train=3", "train is a group of fields; set one of them: train.optimizers,"),
    ("distill", "train.epochs.x=3", "train.epochs is a value (comma-separated integers), not a "
     "group of fields"),
    ("distill", "train.epochs", "--set=train.epochs is not PATH=VALUE, e.g. --set=train.epochs=3"),
    ("study", "encoders=A", "encoders holds EncoderSpec records, which --set does not parse; use "
     "--encoder"),
    ("study", "prepare.split_dirs=basic", "'basic' is not 2 values joined by ':'"),
])
def test_a_bad_set_says_what_the_field_takes(root, text, message):
  with pytest.raises(ValueError) as e:
    settings.parse_assignment(text, BASES[root]())
  assert message in str(e.value)


def test_set_values_still_meet_the_invariants():
  with pytest.raises(ValueError, match="train.seeds is empty"):
    settings.resolve(config_lib.get_preset("demo"), {}, ["train.seeds="], root="distill")


# ---- --print_config ----------------------------------------------------------------------------


@pytest.mark.parametrize("root,name", [(r, n) for r, presets in (
    ("distill", config_lib.PRESETS), ("study", study_config.PRESETS)) for n in presets])
def test_printed_config_lines_parse_back_to_its_values(root, name):
  """Every line --print_config shows works as a --set (records aside, which --set refuses)."""
  cfg = (config_lib if root == "distill" else study_config).get_preset(name)
  for line in config_paths.format_config(cfg).splitlines():
    path, _, _ = line.partition("=")
    if "[" in path:
      continue
    assert settings.parse_assignment(line, cfg, root=root) == (path, _field(cfg, path)[0]), line


def _stage(*args, cwd):
  """Runs a stage command; returns (exit status, stdout, stderr). The command reports on stderr,
  as it exits, whether TensorFlow was imported."""
  code = ("import atexit, runpy, sys\n"
          "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules,"
          " file=sys.stderr))\n"
          f"sys.argv = {list(args)!r}\n"
          "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")
  env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                        capture_output=True, timeout=120)
  return proc.returncode, proc.stdout, proc.stderr


def test_print_config_prints_the_resolved_config_and_exits_before_tensorflow(tmp_path):
  code, out, err = _stage("stages.study", "--preset=smoke", "--epochs=3",
                          "--set=pretrain.temperature=0.2", "--print_config", cwd=tmp_path)
  assert code == 0, err
  lines = set(out.splitlines())
  assert {"distill.train.epochs=3", "pretrain.temperature=0.2", "distill.preset=smoke",
          "distill.workdir=results/study_smoke"} <= lines
  assert "pretrain.epochs=2" in lines  # The smoke preset's own value.
  assert "tensorflow imported: False" in err
  assert list(tmp_path.iterdir()) == []  # Nothing written.


def test_a_bad_set_exits_2_before_anything_runs(tmp_path):
  code, out, err = _stage("stages.distill", "--preset=smoke", "--set=train.epoch=3", cwd=tmp_path)
  assert code == 2 and "Traceback" not in err
  assert err.startswith("error: --set=train.epoch=3: train (TrainConfig) has no field 'epoch'")
  assert "tensorflow imported: False" in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage,present,absent", [
    ("study", ("encoder", "pretrain_epochs", "finetune_seeds", "archive_dir", "teacher_zoo",
               "baseline_seeds", "set", "print_config"), ()),
    ("distill", ("teacher_zoo", "epochs", "encoders", "baseline", "set", "print_config"),
     ("encoder", "baseline_seeds", "pretrain_epochs")),
    ("pretrain", ("pretrain_arch", "pretrain_epochs", "pretrain_batch_size",
                  "pretrain_temperature", "pretrain_policy", "pretrain_seed", "pretrain_width",
                  "encoder", "encoders", "probe", "data_dir", "strategy", "checkpoint_steps",
                  "checkpoint_minutes", "retrain_stale", "set", "print_config"),
     ("name", "arch", "epochs", "batch_size", "teacher_zoo", "finetune_seeds")),
])
def test_help_lists_each_commands_flags(stage, present, absent):
  proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--help"], cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                        capture_output=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  listed = {line.split()[0].lstrip("-").replace("[no]", "")
            for line in proc.stdout.splitlines() if line.startswith("  --")}
  assert set(present) <= listed and not set(absent) & listed
