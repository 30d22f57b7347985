import pytest

from simclr_distill import matrix
from simclr_distill import config as C
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


# ---- Pinned ids of every stage's runs ----------------------------------------------------------
# Hashes of the sorted run ids, computed before the library's restructuring (commit 874ae0b):
# a change that alters any run's id (so finished runs would no longer be found) fails here.
PINNED_IDS = {
    "paper distill": (180, "750bc1e654a1"),
    "demo finetune": (18, "7a65a43a9d14"),
    "demo baselines": (12, "35929b3162f9"),
    "demo distill": (24, "3858acc396b8"),
    "methods distill": (36, "a51e91748f54"),
}


def _id_hash(runs) -> tuple[int, str]:
  import hashlib

  return len(runs), hashlib.sha1("\n".join(sorted(r.run_id for r in runs)).encode()).hexdigest()[:12]


def test_run_ids_of_every_stage_are_unchanged():
  import dataclasses

  from simclr_distill import teacher_net
  from simclr_distill import study_config as S

  @dataclasses.dataclass(frozen=True)
  class Encoder(teacher_net.Encoder):  # Its checkpoint's digest given, not read from a file.
    given_digest: str = ""

    @property
    def digest(self) -> str:
      return self.given_digest

  demo = S.get_preset("demo")
  encoders = [Encoder("digits_adam", "adam", "x.keras", "cnn", 32, "encoder", given_digest="d1"),
              Encoder("digits_sgd", "sgd", "y.keras", "cnn", 32, "encoder", given_digest="d2"),
              Encoder("none", arch="cnn", width=32)]
  runs = {"paper distill": matrix.build_matrix(C.get_preset("paper"), study_zoo(), "ben:590326:0")}
  runs["demo finetune"] = matrix.finetune_matrix(demo.distill, demo.finetune, encoders,
                                                 "digits:1797:0")
  runs["demo baselines"] = matrix.build_matrix(
      dataclasses.replace(demo.baseline_config(), baseline=True), [], "digits:1797:0")
  zoo = [TeacherEntry(teacher_id=matrix.teacher_name("digits_adam", "expanded", p, s),
                      labeling="expanded", split_percent=p, path="t.keras", encoder="digits_adam",
                      encoder_optimizer="adam", output="logits", arch="cnn",
                      provenance={"seed": str(s)}) for p in (3, 10) for s in (0, 1, 2)]
  runs["demo distill"] = matrix.build_matrix(dataclasses.replace(demo.distill, baseline=False),
                                             zoo, "digits:1797:0")
  methods = [TeacherEntry(teacher_id=f"{e}-basic-10", labeling="basic", split_percent=10,
                          path="t.keras", encoder=e, encoder_optimizer=o, output="logits",
                          arch="cnn")
             for e, o in (("digits_adam", "adam"), ("digits_sgd", "sgd"), ("none", ""))]
  runs["methods distill"] = matrix.build_matrix(S.get_preset("methods").distill, methods,
                                                "digits:1797:0")
  assert {name: _id_hash(r) for name, r in runs.items()} == PINNED_IDS
  assert runs["demo finetune"][0].run_id == "finetune-cnn-digits_adam-expanded-10-adam-s0-10442151e8"
