"""Stage 1 on the digits demo: SimCLR pretraining runs, its loss falls, its checkpoint loads."""

import keras
import numpy as np
import pandas as pd
import pytest

from simclr_distill import simclr, study_config
from simclr_distill.data import digits
from simclr_distill.steps import pretrain as pretrain_step


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrain")
  data = digits.prepare_digits(root / "data", num_shards=2, percents=(10, 100))
  cfg = study_config.PretrainConfig(name="demo", arch="cnn", width=16, batch_size=128, epochs=6,
                                learning_rate=1e-3, temperature=0.5)
  return data, root, pretrain_step.run_pretraining(cfg, data, root)


def test_contrastive_loss_falls_on_the_digits(pretrained):
  _, root, _ = pretrained
  history = pd.read_csv(root / "pretrain" / "demo" / "history.csv")
  assert len(history) == 6
  # Chance level: the positive is one of 2B - 1 = 255 candidates, a loss of log(255) = 5.54.
  chance = np.log(2 * 128 - 1)
  assert history["loss"].iloc[-1] < history["loss"].iloc[0]
  assert history["loss"].iloc[-1] < chance - 0.3


def test_pool_excludes_both_test_lists_and_checkpoint_exposes_the_512_layer(pretrained):
  data, _, checkpoint = pretrained
  pool = set(simclr.pretraining_pool(data))
  tests = set().union(*(data.splits(scheme)["test"] for scheme in data.schemes))
  assert pool == set(data.ids()) - tests
  assert set(data.splits("basic")["val_100"]) - tests <= pool  # validation lists stay in stage 1
  model = keras.models.load_model(checkpoint)
  assert model.get_layer(simclr.PROJECTION_LAYER).output.shape[-1] == 512
  assert model.output.shape[-1] == 128
  assert not (checkpoint.parent / "training_state.npz").exists()
  again = pretrain_step.run_pretraining(study_config.PretrainConfig(name="demo"), data, checkpoint.parents[2])
  assert again == checkpoint  # finished: skipped


def test_views_are_seeded_and_differ_between_the_two_views(pretrained):
  data, _, _ = pretrained
  ids = data.ids()[:64]
  first = next(iter(simclr.make_view_pairs(data, ids, batch_size=8, seed=1, policy="study")))
  again = next(iter(simclr.make_view_pairs(data, ids, batch_size=8, seed=1, policy="study")))
  (v1, v2), = first
  np.testing.assert_array_equal(v1.numpy(), again[0][0].numpy())
  assert v1.shape == (8, 8, 8, 1) and not np.allclose(v1.numpy(), v2.numpy())


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="batch_size must be >= 2"):
    study_config.PretrainConfig(batch_size=1)
  with pytest.raises(ValueError, match="optimizer='lars' is not one of adam, sgd"):
    study_config.PretrainConfig(optimizer="lars")


def test_pretrain_stage_runs_and_skips_when_done(tmp_path):
  from tests.test_stages import stage

  proc = stage("stages.pretrain", "--preset=smoke", f"--workdir={tmp_path}", "--pretrain_epochs=1")
  checkpoint = tmp_path / "pretrain" / "digits_adam" / "simclr.keras"
  assert checkpoint.is_file() and f"pretrained encoder digits_adam: {checkpoint}" in proc.stdout
  mtime = checkpoint.stat().st_mtime_ns
  stage("stages.pretrain", "--preset=smoke", f"--workdir={tmp_path}", "--pretrain_epochs=1")
  assert checkpoint.stat().st_mtime_ns == mtime
  bad = stage("stages.pretrain", "--preset=smoke", f"--workdir={tmp_path}", "--pretrain_batch_size=1",
              check=False)
  assert bad.returncode != 0 and "batch_size must be >= 2" in bad.stderr
