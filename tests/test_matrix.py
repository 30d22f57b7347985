import pytest

from simclr_distill import config as C, matrix
from simclr_distill.teachers import TeacherEntry


def study_zoo():
  """The study's 36 teachers: 3 encoders x 6 splits x 2 labelling schemes."""
  encoders = {"BEN": "adam", "CA_adam": "adam", "CA_sgd": "sgd"}
  return [TeacherEntry(teacher_id=f"{enc}-{scheme}-{pct}", encoder=enc, encoder_optimizer=opt,
                       labeling=scheme, split_percent=pct, path=f"{enc}-{scheme}-{pct}.keras")
          for enc, opt in encoders.items() for scheme in ("basic", "expanded")
          for pct in (1, 3, 10, 25, 50, 100)]


def test_paper_preset_is_180_runs_with_unique_deterministic_ids():
  runs = matrix.build_matrix(C.get_preset("paper"), study_zoo(), "ben:590326:0")
  assert len(runs) == 180
  assert len({r.run_id for r in runs}) == 180
  again = matrix.build_matrix(C.get_preset("paper"), list(reversed(study_zoo())), "ben:590326:0")
  assert [r.run_id for r in runs] == [r.run_id for r in again]
  assert {r.arch for r in runs} == {"Xception", "InceptionV3", "ResNet50", "ResNet101V2", "ResNet152"}
  assert all(r.loss.kind == "hard" and r.learning_rate == 1e-4 for r in runs)


def test_any_setting_changes_the_id():
  base = matrix.build_matrix(C.get_preset("paper"), study_zoo()[:1], "d")[0]
  for changes in ({"epochs": 49}, {"seed": 1}, {"dataset": "other"}):
    import dataclasses
    assert dataclasses.replace(base, **changes).run_id != base.run_id


def test_optimizers_seeds_and_baselines_multiply():
  cfg = C.override(C.get_preset("paper"), {"train.optimizers": ("adam", "sgd"), "train.seeds": (0, 1),
                                            "baseline": True})
  runs = matrix.build_matrix(cfg, study_zoo(), "d")
  distill = [r for r in runs if r.stage == "distill"]
  baseline = [r for r in runs if r.stage == "baseline"]
  assert len(distill) == 180 * 4
  assert len(baseline) == 5 * 2 * 2 * 2 * 6  # archs x optimizers x seeds x schemes x splits
  assert {r.learning_rate for r in distill if r.optimizer == "sgd"} == {1e-2}


def test_only_and_shards_partition_the_matrix():
  runs = matrix.build_matrix(C.get_preset("paper"), study_zoo(), "d")
  picked = matrix.select(runs, only="arch=ResNet50,split_percent=3|10")
  assert len(picked) == 3 * 2 * 2  # encoders x schemes x splits
  assert all(r.arch == "ResNet50" and r.split_percent in (3, 10) for r in picked)
  shards = [matrix.select(runs, shard_index=i, num_shards=7) for i in range(7)]
  ids = [r.run_id for shard in shards for r in shard]
  assert len(ids) == len(set(ids)) == 180
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("only, message", [
    ("arch", "is not AXIS=VALUE"),
    ("colour=red", "unknown axis colour; axes: "),
])
def test_bad_only_filters(only, message):
  runs = matrix.build_matrix(C.get_preset("paper"), study_zoo(), "d")
  with pytest.raises(ValueError, match=message):
    matrix.select(runs, only=only)
