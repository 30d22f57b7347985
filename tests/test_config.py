import dataclasses

import pytest

from simclr_distill import config as C


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_presets_are_valid_and_roundtrip_through_json(name):
  preset = C.get_preset(name)
  assert preset.preset == name
  assert C.from_dict(C.DistillConfig, C.to_dict(preset)) == preset


def test_paper_preset_is_the_study():
  paper = C.get_preset("paper")
  assert paper.student.archs == ("Xception", "InceptionV3", "ResNet50", "ResNet101V2", "ResNet152")
  assert paper.loss.configs() == (C.LossConfig(kind="hard", temperature=1.0, alpha=0.0),)
  assert paper.teacher.modes == ("offline",)
  assert paper.train.batch_size == 32 and paper.train.epochs == (50,)
  assert paper.train.learning_rates_for("adam") == (1e-4,)
  assert paper.data.schemes == ("basic", "expanded")
  assert paper.data.split_percents == (1, 3, 10, 25, 50, 100)


def test_override_by_dotted_path_checks_invariants_again():
  base = C.get_preset("demo")
  changed = C.override(base, {"train.epochs": (3,), "loss.kinds": ("soft_kl",), "protocol": "original"})
  assert (changed.train.epochs, changed.loss.kinds, changed.protocol) == ((3,), ("soft_kl",), "original")
  assert changed.train.optimizers == base.train.optimizers
  with pytest.raises(ValueError, match="loss.alpha=1.5 must be in"):
    C.override(base, {"loss.alphas": (0.0, 1.5)})
  with pytest.raises(ValueError, match="has no field 'epoch'.*fields: .*epochs"):
    C.override(base, {"train.epoch": 3})


@pytest.mark.parametrize("changes, message", [
    ({"protocol": "leaky"}, "protocol='leaky' is not one of holdout, original"),
    ({"strategy": "tpu"}, "needs --tpu"),
    ({"shard_index": 2, "num_shards": 2}, r"shard_index=2 must be in \[0, num_shards=2\)"),
    ({"train.optimizers": ("adam", "lamb")}, "'lamb' is not one of adam, sgd"),
    ({"train.seeds": ()}, "train.seeds is empty"),
    ({"data.source": "records"}, "needs data.data_dir"),
    ({"data.split_percents": (0,)}, r"each must be in \(0, 100\]"),
    ({"loss.temperatures": (1.0, 0.0), "loss.kinds": ("soft_kl",)}, "must be > 0"),
    ({"loss.kinds": ("hard", "soft")}, "'soft' is not one of hard, soft_kl, soft_xent"),
    ({"teacher.modes": ("offline", "shared")}, "'shared' is not one of offline, online, fixed"),
    ({"teacher.mixup": 0.2}, "add consistent to --teacher_mode"),
    ({"teacher.modes": ("consistent",), "teacher.mixup": 0.2, "loss.alphas": (0.0, 0.5)},
     "use --alpha=0 with --mixup"),
    ({"teacher.modes": ("fixed",), "teacher.augment": "none"}, "give --augment a policy"),
    ({"teacher.ensembles": ("a-basic-10",)}, "two or more teacher ids"),
    ({"teacher.ensemble_over": ("arch",)}, "'arch' is not one of encoder, encoder_optimizer, seed"),
    ({"teacher.singles": False}, "no teacher would teach"),
    ({"student.classes": (0, 1)}, "needs --task=multiclass"),
    ({"student.generations": 0}, "generations=0 must be >= 1"),
    ({"train.schedule": "cosine", "train.warmup_epochs": 20}, "leaves nothing of a 20-epoch run"),
    ({"train.patience": -1}, "0: never stop"),
    ({"train.select": "first"}, "'first' is not one of best, last"),
    ({"train.learning_rates": (1e-3, 0.0)}, "each must be > 0"),
    # Combinations whose meaning would silently change are refused.
    ({"protocol": "original", "loss.alphas": (0.0, 0.5)},
     "--protocol=original trains on the test list's teacher labels alone: it has no labelled "
     "examples, so --alpha=0,0.5 would silently weigh"),
    ({"loss.temperatures": (4.0,)}, "--temperature=4 has no effect: hard pseudo-labels"),
    ({"train.warmup_epochs": 2}, "--warmup_epochs=2 has no effect on the constant schedule"),
])
def test_bad_values_say_what_to_change(changes, message):
  with pytest.raises(ValueError, match=message):
    C.override(C.get_preset("demo"), changes)


def test_unknown_preset_lists_known_ones():
  with pytest.raises(KeyError, match="known: demo, paper, patient, smoke"):
    C.get_preset("tiny")


def test_configs_are_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    C.get_preset("demo").train.epochs = (3,)


def test_a_loss_grid_is_every_kind_temperature_and_alpha_with_hard_once():
  grid = C.LossGrid(kinds=("hard", "soft_kl"), temperatures=(1.0, 4.0), alphas=(0.0, 0.5))
  got = [(c.kind, c.temperature, c.alpha) for c in grid.configs()]
  assert got == [("hard", 1.0, 0.0), ("hard", 1.0, 0.5), ("soft_kl", 1.0, 0.0),
                 ("soft_kl", 1.0, 0.5), ("soft_kl", 4.0, 0.0), ("soft_kl", 4.0, 0.5)]
