"""Stage 2: the teacher model on a pretrained network, freezing, the run, the zoo."""

import dataclasses

import keras
import numpy as np
import pytest

from simclr_distill import matrix, results, simclr, study_config, teacher_net
from simclr_distill import config as C
from simclr_distill import teachers as teachers_lib
from simclr_distill.steps import finetune as finetune_step
from simclr_distill.training import context
from simclr_distill.training.executor import execute_run


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
  """A stage-1 network (random weights are enough here) saved as stage 1 saves it."""
  path = tmp_path_factory.mktemp("encoder") / "simclr.keras"
  keras.utils.set_random_seed(3)
  simclr.build_simclr_model("cnn", (8, 8, 1), width=8).save(path)
  return path


def test_freeze_choices_are_normalised_and_bad_ones_explained():
  assert study_config.parse_freeze("none") == "none"
  assert study_config.parse_freeze("encoder") == "encoder"
  assert study_config.parse_freeze("3") == study_config.parse_freeze("blocks:3") == "blocks:3"
  assert study_config.parse_freeze(0) == "none"
  with pytest.raises(ValueError, match="none .* encoder .* blocks:N"):
    study_config.parse_freeze("head")
  assert study_config.FinetuneConfig(freeze="2").freeze == "blocks:2"


@pytest.mark.parametrize("arch, shape, expected", [
    ("cnn", (8, 8, 1), ["cnn_block1", "cnn_block2"]),
    ("mlp", (8, 8, 1), ["mlp_dense1", "mlp_dense2"]),
    ("resnet18", (8, 8, 1), ["resnet18_stem"] + [f"resnet18_stage{s}_block{b}" for s in (1, 2, 3, 4)
                                                   for b in (1, 2)]),
    ("ResNet50", (32, 32, 4), ["conv1"] + [f"conv{s}_block{b}" for s, n in ((2, 3), (3, 4), (4, 6), (5, 3))
                                          for b in range(1, n + 1)]),
    ("InceptionV3", (75, 75, 3), [f"mixed{i}" for i in range(11)]),
])
def test_encoder_blocks_follow_each_architecture(arch, shape, expected):
  network = simclr.build_simclr_model(arch, shape, width=8 if arch in ("cnn", "mlp", "resnet18") else None)
  blocks = teacher_net.encoder_blocks(network)
  assert [name for name, _ in blocks] == expected
  weighted = [l for l in teacher_net.encoder_layers(network) if l.weights]
  assert sum(len([l for l in layers if l.weights]) for _, layers in blocks) == len(weighted)


def test_teacher_keeps_the_pretrained_weights_and_adds_the_study_head(encoder_checkpoint):
  network = keras.models.load_model(encoder_checkpoint)
  teacher = teacher_net.build_teacher(encoder_checkpoint, arch="cnn", input_shape=(8, 8, 1), width=8,
                                      num_outputs=1, dropout=0.5, freeze="none")
  assert teacher.layers[0].name == "image" and tuple(teacher.input.shape[1:]) == (8, 8, 1)
  np.testing.assert_array_equal(teacher.get_layer("projection_512").get_weights()[0],
                                network.get_layer("projection_512").get_weights()[0])
  assert [teacher.get_layer(n).units for n in ("finetune_dense1", "finetune_dense2", "logits")] == [256, 256, 1]
  assert [teacher.get_layer(n).rate for n in ("finetune_dropout1", "finetune_dropout2")] == [0.5, 0.5]
  assert "projection_128" not in [l.name for l in teacher.layers]
  assert all(l.trainable for l in teacher.layers)


def test_freeze_encoder_trains_the_head_only_and_blocks_freeze_a_prefix(encoder_checkpoint):
  head_only = teacher_net.build_teacher(encoder_checkpoint, arch="cnn", input_shape=(8, 8, 1), width=8,
                                        num_outputs=1, dropout=0.5, freeze="encoder")
  trainable = {l.name for l in head_only.layers if l.trainable and l.weights}
  assert trainable == {"finetune_dense1", "finetune_dense2", "logits"}
  first = teacher_net.build_teacher(encoder_checkpoint, arch="cnn", input_shape=(8, 8, 1), width=8,
                                    num_outputs=1, dropout=0.5, freeze="blocks:1")
  frozen = {l.name for l in first.layers if not l.trainable and l.weights}
  assert frozen == {"cnn_block1_conv1", "cnn_block1_conv2"}
  with pytest.raises(ValueError, match="only 2 blocks"):
    teacher_net.build_teacher(encoder_checkpoint, arch="cnn", input_shape=(8, 8, 1), width=8,
                              num_outputs=1, dropout=0.5, freeze="blocks:3")
  with pytest.raises(ValueError, match=r"takes \(8, 8, 1\) inputs but the data is \(8, 8, 3\)"):
    teacher_net.build_teacher(encoder_checkpoint, arch="cnn", input_shape=(8, 8, 3), width=8,
                              num_outputs=1, dropout=0.5, freeze="none")


def test_a_frozen_encoder_run_leaves_the_encoder_as_pretrained_and_publishes_a_teacher(
    encoder_checkpoint, tmp_path):
  config = C.override(C.get_preset("smoke"), {"workdir": str(tmp_path), "data.split_percents": (100,)})
  encoder = teacher_net.Encoder(name="enc", optimizer="sgd", checkpoint=str(encoder_checkpoint),
                                arch="cnn", width=8)
  ctx = context.make_context(config, encoders={"enc": encoder})
  ft = study_config.FinetuneConfig(freeze="encoder", learning_rate=1e-2, epochs=3, patience=3)
  (run,) = matrix.finetune_matrix(config, ft, [encoder], ctx.data.fingerprint())
  assert run.monitor == "val_auc" and run.head == "finetune" and run.encoder_digest == encoder.digest
  row = execute_run(run, ctx)
  assert row["status"] == "ok" and row["stage"] == "finetune" and row["model"] == "enc"
  assert row["teacher_id"] == "enc-basic-100" and row["freeze"] == "encoder" and row["init"] == "simclr"
  trained = keras.models.load_model(row["checkpoint"])
  pretrained = keras.models.load_model(encoder_checkpoint)
  for name in ("cnn_block1_conv1", "cnn_block2_conv2", "projection_512"):
    np.testing.assert_array_equal(trained.get_layer(name).get_weights()[0],
                                  pretrained.get_layer(name).get_weights()[0])
  fresh = teacher_net.build_teacher(encoder_checkpoint, arch="cnn", input_shape=(8, 8, 1), width=8,
                                    num_outputs=1, dropout=0.5, freeze="encoder")
  assert not np.allclose(trained.get_layer("logits").get_weights()[0],
                         fresh.get_layer("logits").get_weights()[0])

  zoo = tmp_path / "zoo"
  entry = finetune_step.publish_teacher(zoo, run, row, trained_path := tmp_path / "runs" / run.run_id / "student.keras",
                                   encoder)
  assert trained_path.is_file()
  (listed,) = teachers_lib.read_zoo(zoo)
  assert listed == entry and listed.encoder_optimizer == "sgd" and listed.output == "logits"
  assert listed.provenance["source_run"] == run.run_id
  assert listed.provenance["pretrain_digest"] == encoder.digest
  assert listed.provenance["freeze"] == "encoder" and float(listed.provenance["test_f1"]) == pytest.approx(row["f1"], abs=1e-4)
  assert results.is_done(tmp_path, run.run_id)


def test_provenance_is_not_part_of_a_students_identity():
  entry = teachers_lib.TeacherEntry(teacher_id="t", labeling="basic", split_percent=10, path="t.keras")
  traced = dataclasses.replace(entry, provenance={"source_run": "x", "test_f1": "0.9"})
  config = C.get_preset("smoke")
  a = matrix.build_matrix(config, [entry], "d")
  b = matrix.build_matrix(config, [traced], "d")
  assert [r.run_id for r in a] == [r.run_id for r in b]


def test_add_to_zoo_merges_and_keeps_external_rows(tmp_path):
  external = teachers_lib.TeacherEntry(teacher_id="ext", labeling="basic", split_percent=3,
                                       path="/elsewhere/ext.h5", encoder="BEN", output="probabilities")
  teachers_lib.write_zoo(tmp_path, [external])
  made = teachers_lib.TeacherEntry(teacher_id="new", labeling="expanded", split_percent=1,
                                   path="new.keras", provenance={"seed": "2"})
  teachers_lib.add_to_zoo(tmp_path, [made])
  teachers_lib.add_to_zoo(tmp_path, [dataclasses.replace(made, provenance={"seed": "3"})])
  entries = {e.teacher_id: e for e in teachers_lib.read_zoo(tmp_path)}
  assert set(entries) == {"ext", "new"}
  assert entries["ext"].output == "probabilities" and entries["ext"].provenance == {}
  assert entries["new"].provenance == {"seed": "3"}


def test_unknown_manifest_columns_are_still_refused(tmp_path):
  (tmp_path / "manifest.csv").write_text("teacher_id,labeling,split_percent,path,colour\nt,basic,1,t.keras,red\n")
  with pytest.raises(teachers_lib.TeacherError, match="unknown column.*colour"):
    teachers_lib.read_zoo(tmp_path)
