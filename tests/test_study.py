"""The whole study: presets and their matrices, encoder definitions, ImageNet baselines, and the
chain prepare -> pretrain -> finetune -> label -> distill -> baseline run as a user runs it."""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from simclr_distill import labelling, matrix, models, results, simclr, study_config, teacher_net
from simclr_distill import config as C
from simclr_distill import teachers as teachers_lib
from simclr_distill.steps import pretrain as pretrain_step
from tests.test_matrix import study_zoo
from tests.test_stages import stage


def test_paper_preset_is_the_studys_339_models():
  cfg = study_config.get_preset("paper")
  assert [e.name for e in cfg.encoders] == ["BEN", "CA_adam", "CA_sgd"]
  assert [e.pretrain_config(cfg.pretrain).learning_rate for e in cfg.encoders] == [5e-4, 5e-4, 0.1]
  assert [e.optimizer for e in cfg.encoders] == ["adam", "adam", "sgd"]
  assert cfg.pretrain.arch == "ResNet152" and cfg.pretrain.temperature == 0.1
  encoders = [teacher_net.Encoder(name=e.name, optimizer=e.optimizer, arch="ResNet152") for e in cfg.encoders]
  teachers = matrix.finetune_matrix(cfg.distill, cfg.finetune, encoders, "d")
  assert len(teachers) == 36 and len({r.axes()["teacher_id"] for r in teachers}) == 36
  assert {(r.learning_rate, r.patience, r.monitor, r.dropout, r.epochs) for r in teachers} == {
      (5e-5, 25, "val_auc", 0.5, 50)}
  students = matrix.build_matrix(cfg.distill, study_zoo(), "d")
  assert len(students) == 180
  baselines = matrix.build_matrix(dataclasses.replace(cfg.distill, baseline=True), [], "d")
  assert len(baselines) == 120
  assert pd.Series([r.init for r in baselines]).value_counts().to_dict() == {"scratch": 60, "imagenet": 60}
  # A finetune run's teacher id is the zoo's id, which the distillation matrix refers to.
  assert {r.axes()["teacher_id"] for r in teachers} == {e.teacher_id for e in study_zoo()}


def test_encoder_specs_parse_and_bad_ones_are_explained():
  spec = study_config.parse_encoder_spec("CA_sgd:optimizer=sgd,learning_rate=0.1,data_dir=/d/ca,epochs=5")
  assert spec == study_config.EncoderSpec("CA_sgd", "sgd", 0.1, "/d/ca", None, 5)
  assert study_config.parse_encoder_spec("BEN") == study_config.EncoderSpec("BEN")
  with pytest.raises(ValueError, match="KEY one of optimizer, learning_rate"):
    study_config.parse_encoder_spec("BEN:lr=0.1")
  with pytest.raises(ValueError, match="learning_rate='fast' is not a valid float"):
    study_config.parse_encoder_spec("BEN:learning_rate=fast")
  with pytest.raises(ValueError, match="optimizer='lars' is not one of adam, sgd"):
    study_config.parse_encoder_spec("BEN:optimizer=lars")
  with pytest.raises(ValueError, match="defined twice"):
    dataclasses.replace(study_config.get_preset("demo"), encoders=(study_config.EncoderSpec("a"), study_config.EncoderSpec("a")))
  cfg = study_config.get_preset("demo")
  picked = dataclasses.replace(cfg, distill=C.override(cfg.distill, {"teacher.encoders": ("none",)}))
  assert [e.name for e in picked.selected_encoders()] == ["none"]
  unknown = dataclasses.replace(cfg, distill=C.override(cfg.distill, {"teacher.encoders": ("BEN",)}))
  with pytest.raises(ValueError, match="--encoders names BEN, not defined in this study"):
    unknown.selected_encoders()


def test_imagenet_baseline_adapts_the_first_convolution_and_freezes_the_backbone(tmp_path):
  keras.utils.set_random_seed(0)
  reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
  reference.save(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
  model = models.build_model("ResNet50", (32, 32, 10), 1, head="pooled")
  count = models.load_imagenet_backbone(model, "ResNet50",
                                        models.imagenet_weights_path("ResNet50", str(tmp_path)))
  assert count == len([l for l in reference.layers if l.weights])
  kernel = model.get_layer("conv1_conv").get_weights()[0]
  rgb = reference.get_layer("conv1_conv").get_weights()[0]
  np.testing.assert_allclose(kernel[:, :, :3], rgb * 0.3, rtol=1e-6)
  np.testing.assert_allclose(kernel[:, :, 3:], np.repeat(rgb.mean(2, keepdims=True), 7, 2) * 0.3, rtol=1e-5)
  np.testing.assert_array_equal(model.get_layer("conv5_block3_3_conv").get_weights()[0],
                                reference.get_layer("conv5_block3_3_conv").get_weights()[0])
  assert [l.name for l in model.layers if l.weights and l.trainable] == ["logits"]
  with pytest.raises(FileNotFoundError, match="no ImageNet weights for ResNet152 at .*--baseline_inits"):
    models.imagenet_weights_path("ResNet152", str(tmp_path))
  with pytest.raises(ValueError, match="cnn has no ImageNet weights"):
    models.imagenet_weights_path("cnn", str(tmp_path))


def test_study_chains_all_stages_into_one_table(smoke_study):
  workdir, proc = smoke_study
  table = pd.read_parquet(workdir / results.TABLE_PARQUET)
  assert list(table.columns) == list(results.COLUMNS) and (table["status"] == "ok").all()
  # 2 encoders (digits_adam, none) x 2 splits teachers; each distilled into the MLP; 2 baselines;
  # stage 1's probes of digits_adam and of a random-init network on both splits; the classical
  # reference on both splits.
  assert table["stage"].value_counts().to_dict() == {
      "finetune": 4, "distill": 4, "baseline": 2, "pretrain": 4, "reference": 2}
  teachers = table[table["stage"] == "finetune"]
  assert set(teachers["model"]) == {"digits_adam", "none"}
  assert set(teachers["init"]) == {"simclr", "scratch"}
  distilled = table[table["stage"] == "distill"]
  assert set(distilled["teacher_id"]) == set(teachers["teacher_id"])
  assert (workdir / "pretrain" / "digits_adam" / "simclr.keras").is_file()
  assert not (workdir / "pretrain" / "none").exists()
  assert "results:" in proc.stdout and "teachers: pretrained vs random init" in proc.stdout
  assert "interval (bootstrap over the test examples and the runs)" in proc.stdout
  probes = table[table["stage"] == "pretrain"]
  assert set(probes["encoder"]) == {"digits_adam", "none"}
  assert probes["probe_linear_accuracy"].between(0, 1).all()
  assert np.allclose(probes.loc[probes["encoder"] == "digits_adam", "pretrain_chance_loss"],
                     np.log(255))
  comparisons = pd.read_csv(workdir / "comparisons.csv")
  assert {"teachers: pretrained vs random init", "teachers vs the classical reference",
          "encoders: pretrained vs random init (linear probe on validation)"} <= set(
              comparisons["question"])
  assert (comparisons["low"] <= comparisons["difference"]).all()
  assert (comparisons["difference"] <= comparisons["high"]).all()


def test_zoo_manifest_lists_every_teacher_with_its_provenance(smoke_study):
  workdir, _ = smoke_study
  table = pd.read_parquet(workdir / results.TABLE_PARQUET)
  teachers = table[table["stage"] == "finetune"].set_index("teacher_id")
  entries = teachers_lib.read_zoo(workdir / "zoo")
  assert {e.teacher_id for e in entries} == set(teachers.index)
  for e in entries:
    row = teachers.loc[e.teacher_id]
    assert e.provenance["source_run"] == row["run_id"]
    assert float(e.provenance["test_f1"]) == pytest.approx(row["f1"], abs=1e-4)
    assert e.resolve(workdir / "zoo").is_file() and e.output == "logits"
    if e.encoder == "digits_adam":
      assert e.provenance["pretrain_checkpoint"].endswith("pretrain/digits_adam/simclr.keras")
      assert e.encoder_optimizer == "adam" and len(e.provenance["pretrain_digest"]) == 16


def test_rerunning_the_study_trains_nothing(smoke_study):
  workdir, _ = smoke_study
  before = {p: p.stat().st_mtime_ns for p in workdir.glob("runs/*/student.keras")}
  proc = stage("stages.study", "--preset=smoke", f"--workdir={workdir}")
  assert "finetune: 4 runs in this shard, 4 already finished, 0 to train" in proc.stderr
  assert "baseline: 2 runs in this shard, 2 already finished, 0 to train" in proc.stderr
  assert {p: p.stat().st_mtime_ns for p in workdir.glob("runs/*/student.keras")} == before
  # The single stages find the same work done.
  proc = stage("stages.finetune", "--preset=smoke", f"--workdir={workdir}")
  assert "4 already finished, 0 to train" in proc.stderr and "teacher zoo:" in proc.stdout


def test_an_external_zoo_of_h5_and_savedmodel_files_labels_exactly_like_stage_2s(smoke_study, tmp_path):
  workdir, _ = smoke_study
  entries = [e for e in teachers_lib.read_zoo(workdir / "zoo") if e.split_percent == 10]
  external = []
  for i, e in enumerate(entries):
    model = keras.models.load_model(e.resolve(workdir / "zoo"))
    (tmp_path / "ext").mkdir(exist_ok=True)
    if i % 2 == 0:  # A legacy .h5 file: whether it outputs logits is read from its last layer.
      path, output = f"{e.teacher_id}.h5", "auto"
      model.save(tmp_path / "ext" / path)
    else:  # A SavedModel says nothing about its outputs: the manifest must.
      path, output = f"saved/{e.teacher_id}", "logits"
      model.export(str(tmp_path / "ext" / path))
    external.append(teachers_lib.TeacherEntry(
        teacher_id=e.teacher_id, labeling=e.labeling, split_percent=e.split_percent, path=path,
        encoder=e.encoder, encoder_optimizer=e.encoder_optimizer, output=output, arch=e.arch))
  teachers_lib.write_zoo(tmp_path / "ext", external)
  out = tmp_path / "work"
  shutil.copytree(workdir / "data", out / "data")
  stage("stages.distill", "--preset=smoke", f"--workdir={out}", f"--teacher_zoo={tmp_path / 'ext'}",
        "--split_percents=10", "--optimizers=adam", "--nobaseline")
  for e in entries:
    ids, ours = labelling.load_cached_logits(workdir / "labels", e.teacher_id)
    ids_ext, theirs = labelling.load_cached_logits(out / "labels", e.teacher_id)
    assert list(ids) == list(ids_ext)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
  rows = pd.read_parquet(out / results.TABLE_PARQUET)
  assert sorted(rows["teacher_id"]) == sorted(e.teacher_id for e in entries)
  assert (rows["status"] == "ok").all()


def test_stage_errors_say_what_to_do(tmp_path):
  proc = stage("stages.finetune", "--preset=smoke", f"--workdir={tmp_path}", check=False)
  assert proc.returncode == 2 and "encoder digits_adam is not pretrained" in proc.stderr
  assert "stages.pretrain --encoders=digits_adam" in proc.stderr
  proc = stage("stages.study", "--preset=smoke", f"--workdir={tmp_path}", "--encoder=x:lr=1",
               check=False)
  assert proc.returncode == 2 and "KEY one of optimizer" in proc.stderr
  proc = stage("stages.study", "--preset=smoke", f"--workdir={tmp_path}", "--num_shards=2",
               check=False)
  assert proc.returncode == 2 and "run the stages one by one" not in proc.stderr
  assert "--num_shards/--work_queue share the work of the steps" in proc.stderr
  assert "give --steps (e.g. --steps=distill)" in proc.stderr
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}",
               "--baseline_inits=imagenet", check=False)
  assert proc.returncode == 2 and "mlp has no ImageNet weights" in proc.stderr


def test_baselines_take_their_own_seeds_in_the_demo():
  cfg = study_config.get_preset("demo")
  assert cfg.distill.train.seeds == (0,) and cfg.baseline_config().train.seeds == (0, 1, 2)
  runs = matrix.build_matrix(dataclasses.replace(cfg.baseline_config(), baseline=True), [], "d")
  assert len(runs) == 2 * 2 * 3  # mlp, cnn x 2 splits x 3 seeds (Adam)
  assert {r.min_steps for r in runs} == {20}  # The students' optimizer steps per epoch.


def test_an_encoder_given_by_checkpoint_keeps_its_own_architecture(tmp_path):
  from simclr_distill.data import digits

  data = digits.prepare_digits(tmp_path / "data", num_shards=1, percents=(100,))
  keras.utils.set_random_seed(0)
  own = tmp_path / "elsewhere" / "simclr.keras"
  own.parent.mkdir()
  simclr.build_simclr_model("mlp", (8, 8, 1), width=16).save(own)
  (own.parent / "config.json").write_text(json.dumps({"pretrain": {"arch": "mlp", "width": 16}}))
  cfg = dataclasses.replace(study_config.get_preset("smoke"), encoders=(
      study_config.EncoderSpec("mine", "sgd", checkpoint=str(own)), study_config.EncoderSpec("none")))
  mine, none = pretrain_step.pretrain_encoders(cfg, data, strategy=None, train=False)
  assert (mine.name, mine.arch, mine.width, mine.optimizer) == ("mine", "mlp", 16, "sgd")
  assert mine.checkpoint == str(own) and len(mine.digest) == 16
  assert (none.name, none.arch, none.checkpoint) == ("none", cfg.pretrain.arch, None)
  missing = dataclasses.replace(cfg, encoders=(study_config.EncoderSpec("BEN"),))
  with pytest.raises(FileNotFoundError, match="encoder BEN is not pretrained"):
    pretrain_step.pretrain_encoders(missing, data, strategy=None, train=False)


def test_results_compare_prints_the_studys_questions_with_intervals(smoke_study, tmp_path):
  workdir, _ = smoke_study
  out = tmp_path / "comparisons.csv"
  proc = stage("stages.results", "--compare", f"--workdirs={workdir}", f"--output={out}")
  assert "basic labels, 10% split: 52 test examples" in proc.stdout
  assert "teachers: pretrained vs random init" in proc.stdout and "excludes 0" in proc.stdout
  written = pd.read_csv(out)
  saved = pd.read_csv(workdir / "comparisons.csv")  # The study's own, same seeds: same numbers.
  pd.testing.assert_frame_equal(written.drop(columns=["workdir"]), saved, check_dtype=False)
  proc = stage("stages.results", "--compare", f"--workdirs={workdir}", "--confidence=0.5")
  narrow = proc.stdout
  assert "50% interval" in narrow
  proc = stage("stages.results", "--compare", f"--workdirs={workdir / 'results.csv'}", check=False)
  assert proc.returncode == 2 and "--workdirs must be workdirs" in proc.stderr
