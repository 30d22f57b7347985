"""The stage entry points, run as a user runs them, on the smoke preset."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from simclr_distill import metrics, results
from tests.conftest import REPO

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def stage(*args, check=True, timeout=600):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
  return proc


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("smoke")
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}")
  return workdir, proc


def test_smoke_writes_the_results_table_with_the_schema(smoke):
  workdir, proc = smoke
  parquet = pd.read_parquet(workdir / results.TABLE_PARQUET)
  csv = pd.read_csv(workdir / results.TABLE_CSV)
  assert list(parquet.columns) == list(csv.columns) == list(results.COLUMNS)
  assert len(parquet) == len(csv) == 10
  # 2 demo teachers, 4 distilled students (2 teachers x adam/sgd), 4 baselines (2 splits x 2).
  assert parquet["stage"].value_counts().to_dict() == {"distill": 4, "baseline": 4, "finetune": 2}
  assert (parquet["status"] == "ok").all() and parquet["run_id"].is_unique
  distilled = parquet[parquet["stage"] == "distill"]
  assert set(distilled["student_optimizer"]) == {"adam", "sgd"}
  assert set(distilled["teacher_id"]) == {"none-basic-10", "none-basic-100"}
  assert (distilled["protocol"] == "holdout").all()
  assert distilled["f1"].between(0, 1).all() and distilled["agreement"].between(0, 1).all()
  assert (parquet["images_per_second"] > 0).all() and (parquet["wall_seconds"] > 0).all()
  assert "results:" in proc.stdout and "distill" in proc.stdout


def test_rerun_adds_no_rows_and_trains_nothing(smoke):
  workdir, _ = smoke
  checkpoints = sorted(workdir.glob("runs/*/student.keras"))
  before = {p: p.stat().st_mtime_ns for p in checkpoints}
  # A speed setting (how teachers run) is no part of a run's identity: nothing is retrained.
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}", "--nofold_batchnorm")
  assert "8 already finished, 0 to train" in proc.stderr
  assert len(pd.read_parquet(workdir / results.TABLE_PARQUET)) == 10
  assert {p: p.stat().st_mtime_ns for p in checkpoints} == before


def test_checkpoint_loads_in_plain_keras_and_reproduces_its_predictions_and_f1(smoke, tmp_path):
  workdir, _ = smoke
  table = pd.read_parquet(workdir / results.TABLE_PARQUET)
  row = table[table["stage"] == "distill"].iloc[0]
  run_dir = workdir / "runs" / row["run_id"]
  config = json.loads((run_dir / "config.json").read_text())
  assert config["run"]["arch"] == row["arch"] and config["preprocessing"] == "pixel / 16"
  script = textwrap.dedent(f"""
      import sys, numpy as np, pandas as pd, keras
      from sklearn.datasets import load_digits
      model = keras.models.load_model({str(run_dir / 'student.keras')!r})
      saved = pd.read_parquet({str(run_dir / 'predictions.parquet')!r})
      images = load_digits().images / 16.0
      x = np.stack([images[int(i.split('-')[1])] for i in saved['id']])[..., None].astype('float32')
      probs = 1 / (1 + np.exp(-model.predict(x, verbose=0)[:, 0]))
      assert 'simclr_distill' not in sys.modules
      np.save({str(tmp_path / 'probs.npy')!r}, probs)
  """)
  subprocess.run([sys.executable, "-c", script], check=True, env={**ENV, "PYTHONPATH": ""},
                 cwd=tmp_path, timeout=300)
  saved = pd.read_parquet(run_dir / "predictions.parquet")
  probs = __import__("numpy").load(tmp_path / "probs.npy")
  assert len(saved) == row["test_examples"] and set(saved.columns) >= {
      "id", "label", "teacher_prob", "student_prob"}
  pd.testing.assert_series_equal(pd.Series(probs, name="student_prob"), saved["student_prob"],
                                 rtol=1e-5, atol=1e-6)
  assert metrics.binary_metrics(saved["label"], probs)["f1"] == pytest.approx(row["f1"], abs=1e-9)


def test_results_stage_filters_and_groups(smoke):
  workdir, _ = smoke
  proc = stage("stages.results", f"--workdirs={workdir}", "--filter=stage == 'distill'",
               "--group_by=student_optimizer,split_percent", "--metrics=f1,agreement")
  lines = proc.stdout.splitlines()
  assert "mean" in lines[1] and "std" in lines[1] and "count" in lines[1]
  assert sum(line.startswith(("adam", "sgd")) for line in lines) == 2
  listing = stage("stages.results", f"--workdirs={workdir}", "--filter=split_percent == 100")
  assert listing.stdout.count("none-basic-100") == 2 and "baseline" in listing.stdout


@pytest.mark.parametrize("args, message", [
    (("--protocol=leaky",), "flag --protocol=leaky"),
    (("--archs=resnet9",), "unknown architecture 'resnet9'; known: "),
    (("--archs=Xception",), "Xception needs inputs of at least 71x71"),
    (("--data_dir=/nonexistent",), "/nonexistent is not a prepared data directory"),
    (("--teacher_zoo=/nonexistent",), "no teacher zoo manifest at /nonexistent/manifest.csv"),
    (("--alpha=2",), "loss.alpha=2.0 must be in"),
    (("--only=colour=red",), "unknown axis colour"),
    # Contradictory settings: their meaning would silently change, so they are refused.
    (("--protocol=original", "--alpha=0.5"), "--protocol=original trains on the test list's "
     "teacher labels alone: it has no labelled examples, so --alpha=0.5"),
    (("--loss=hard", "--temperature=4"), "--temperature=4 has no effect"),
    (("--warmup_epochs=3",), "--warmup_epochs=3 has no effect on the constant schedule"),
])
def test_bad_flags_stop_with_a_message_and_nonzero_status(smoke, args, message):
  workdir, _ = smoke
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}", *args, check=False)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


STAGES = ("prepare", "pretrain", "finetune", "label", "distill", "baseline", "study", "results",
          "dashboard")


@pytest.mark.parametrize("name", STAGES)
def test_the_installed_command_lists_the_stages_flags_grouped_with_the_presets_values(name):
  """`simclr-distill-<stage> --help` (the console script, whose main module defines no flag:
  absl's own help printed only "USAGE ... [flags]") shows the stage's docstring and every flag
  `--helpfull` lists for the stage's modules, under the README's group headings."""
  script = pathlib.Path(sys.executable).parent / f"simclr-distill-{name}"
  assert script.exists(), f"{script} is not installed: pip install -e ."
  proc = subprocess.run([str(script), "--help"], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert f"python -m stages.{name}" in proc.stdout and "USAGE" not in proc.stdout
  full = stage(f"stages.{name}", "--helpfull", check=False).stdout
  sections = re.split(r"^(\S+):$", full, flags=re.M)  # absl groups flags by defining module.
  own = {flag for module, text in zip(sections[1::2], sections[2::2])
         if module.startswith("stages.") or "/stages/" in module
         for flag in re.findall(r"^  --(?:\[no\])?(\w+):", text, re.M)}
  listed = set(re.findall(r"^  --(?:\[no\])?(\w+)", proc.stdout, re.M))
  assert own and own <= listed, own - listed
  headings = re.findall(r"^([a-z][^\n]*):$", proc.stdout, re.M)
  expected = {"distill": ["configuration", "data", "teachers", "encoders", "students", "loss",
                          "schedule",
                          "protocol", "baselines", "scale: devices, shards, checkpoints",
                          "cluster (--launcher=slurm)", "general"],
              "results": ["flags", "general"]}
  if name in expected:
    assert headings == expected[name]


def test_help_shows_the_value_each_preset_gives_a_setting():
  def shown(*args):
    out = stage("stages.study", *args, "--help").stdout
    return dict(re.findall(r"^  --(?:\[no\])?(\w+) \[([^\]]*)\]", out, re.M))

  demo, paper = shown(), shown("--preset=paper")
  assert (demo["epochs"], paper["epochs"]) == ("20", "50")
  assert demo["archs"] == "mlp,cnn" and paper["archs"].startswith("Xception,InceptionV3")
  assert paper["encoder"] == "BEN,CA_adam,CA_sgd" and paper["pretrain_epochs"] == "50"
  assert demo["launcher"] == "local"  # A plain flag shows its own default.
  head = subprocess.run(f"{sys.executable} -m stages.study --help | head -1", shell=True, cwd=REPO,
                        env=ENV, capture_output=True, text=True, timeout=120)
  assert head.stdout.startswith("The whole study") and "Traceback" not in head.stderr


def test_multiclass_digits_through_the_stage(tmp_path):
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={tmp_path}", "--task=multiclass",
               "--split_percents=100", "--optimizers=adam", "--nobaseline", "--loss=soft_kl",
               "--temperature=4")
  table = pd.read_parquet(tmp_path / results.TABLE_PARQUET)
  assert table["stage"].value_counts().to_dict() == {"distill": 1, "finetune": 1}
  row = table[table["stage"] == "distill"].iloc[0]
  assert row["task"] == "multiclass" and row["loss_kind"] == "soft_kl" and row["temperature"] == 4
  assert row["f1"] == row["macro_f1"] and 0 <= row["f1"] <= 1 and pd.isna(row["tp"])
  saved = pd.read_parquet(tmp_path / "runs" / row["run_id"] / "predictions.parquet")
  assert [f"student_prob_{k}" for k in range(10)] == [c for c in saved.columns if c.startswith("student_prob_")]
  assert "results:" in proc.stdout


def test_label_stage_then_original_protocol_with_an_external_zoo_and_online_teacher(smoke, tmp_path):
  workdir, _ = smoke
  shared = [f"--workdir={tmp_path}", f"--teacher_zoo={workdir / 'teachers'}",
            f"--data_dir={workdir / 'data'}", "--preset=smoke"]
  stage("stages.label", *shared)
  assert sorted(p.parent.name for p in (tmp_path / "labels").glob("*/_COMPLETE.json")) == [
      "none-basic-10", "none-basic-100"]
  stage("stages.distill", *shared, "--protocol=original", "--teacher_mode=online",
        "--only=split_percent=100,optimizer=adam", "--nobaseline")
  table = pd.read_parquet(tmp_path / results.TABLE_PARQUET)
  assert len(table) == 1
  row = table.iloc[0]
  # The study's protocol: trained on the test split itself, no early stopping.
  assert row["protocol"] == "original" and row["teacher_mode"] == "online"
  assert row["train_examples"] == row["test_examples"] and row["epochs_run"] == row["max_epochs"]
