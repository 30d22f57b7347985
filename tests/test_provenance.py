"""A workdir a researcher can trust after edits, copies and corruption: finished runs are reused
only when their inputs are unchanged and their files intact (simclr_distill.provenance)."""

import os
import pathlib
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from simclr_distill import fileio, matrix, provenance, results
from simclr_distill.config import LossConfig
from tests.test_stages import stage

pytestmark = pytest.mark.faults


def _copy(smoke_study, tmp_path, name="work") -> pathlib.Path:
  source, _ = smoke_study
  target = tmp_path / name
  shutil.copytree(source, target)
  return target


def _rows(workdir) -> dict[str, bytes]:
  return {p.parent.name: p.read_bytes() for p in workdir.glob(f"runs/*/{results.ROW_FILE}")}


def test_a_changed_split_list_is_refused_then_exactly_the_affected_runs_retrain(
    smoke_study, tmp_path):
  workdir = _copy(smoke_study, tmp_path)
  before = _rows(workdir)
  table = results.read_rows([workdir])
  train_10 = workdir / "data" / "splits" / "basic" / "train_10"
  ids = train_10.read_text().splitlines()
  train_10.write_text("\n".join(ids[: len(ids) // 2]) + "\n")  # Halved, in place.

  proc = stage("stages.study", "--preset=smoke", f"--workdir={workdir}", check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "split list basic/train_10 changed" in proc.stderr and "--retrain_stale" in proc.stderr
  assert "already finished" not in proc.stderr.split("error:")[-1]
  assert _rows(workdir) == before  # Nothing finished was touched.

  proc = stage("stages.study", "--preset=smoke", f"--workdir={workdir}", "--retrain_stale")
  superseded = {p.parent.parent.name for p in workdir.glob(f"runs/*/{provenance.SUPERSEDED}/*")}
  # Every run that read train_10 (its teachers, students, baseline, reference and probes), and
  # only those: the 100% runs read other lists.
  expected = set(table.loc[table["split_percent"] == 10, "run_id"])
  assert superseded == expected and len(expected) >= 6, (superseded, expected)
  after = _rows(workdir)
  assert all(after[r] == before[r] for r in before if r not in expected)
  new = results.read_rows([workdir]).set_index("run_id")
  assert (new.loc[sorted(expected), "train_examples"]
          <= table.set_index("run_id").loc[sorted(expected), "train_examples"]).all()
  # The old files are kept, whole.
  for run_id in expected:
    kept = next((workdir / results.RUNS / run_id / provenance.SUPERSEDED).iterdir())
    assert (kept / results.ROW_FILE).read_bytes() == before[run_id]
  proc = stage("stages.study", "--preset=smoke", f"--workdir={workdir}")
  assert proc.stderr.count("0 to train") == 3 and "retrained" not in proc.stderr


def test_a_corrupt_checkpoint_or_truncated_predictions_are_retrained_and_named(
    smoke_study, tmp_path):
  workdir = _copy(smoke_study, tmp_path)
  table = results.read_rows([workdir])
  distilled = sorted(table.loc[table["stage"] == "distill", "run_id"])
  victim, truncated = distilled[0], distilled[1]
  checkpoint = workdir / results.RUNS / victim / "student.keras"
  size = checkpoint.stat().st_size
  checkpoint.write_bytes(np.random.default_rng(0).bytes(size))  # Same size, other bytes.
  predictions = workdir / results.RUNS / truncated / "predictions.parquet"
  predictions.write_bytes(predictions.read_bytes()[:100])
  before = _rows(workdir)

  proc = stage("stages.study", "--preset=smoke", f"--workdir={workdir}")
  assert f"{victim}: student.keras does not match its recorded digest" in proc.stderr
  assert f"{truncated}: predictions.parquet does not match" in proc.stderr
  assert "distill: 4 runs in this shard, 2 already finished, 2 to train" in proc.stderr
  for run_id in (victim, truncated):
    kept = next((workdir / results.RUNS / run_id / provenance.SUPERSEDED).iterdir())
    assert (kept / results.ROW_FILE).read_bytes() == before[run_id]
    assert provenance.verdict(workdir, run_id, None).state == "done"
  model = keras.models.load_model(checkpoint)  # The retrained one loads in plain Keras.
  assert model.output.shape[-1] == 1
  # Seeded: the retrained run scores as the original did.
  new = results.read_rows([workdir]).set_index("run_id")
  old = table.set_index("run_id")
  assert new.loc[victim, "f1"] == pytest.approx(old.loc[victim, "f1"], abs=1e-6)


def test_a_copied_workdir_resumes_to_nothing_to_do_without_loading_a_teacher(
    smoke_study, tmp_path):
  source, _ = smoke_study
  workdir = _copy(smoke_study, tmp_path, "elsewhere")
  # Nothing inside names where it was made.
  for path in workdir.rglob("*"):
    if path.is_file() and path.suffix in (".json", ".csv") and "superseded" not in path.parts:
      assert str(source) not in path.read_text(), path
  table = pd.read_parquet(workdir / results.TABLE_PARQUET)
  kept = table["checkpoint"].dropna()
  assert len(kept) and all(not pathlib.Path(c).is_absolute() for c in kept)
  caches = {p: p.stat().st_mtime_ns for p in workdir.glob("labels/**/*") if p.is_file()}
  checkpoints = {p: p.stat().st_mtime_ns for p in workdir.glob("runs/*/student.keras")}

  proc = stage("stages.study", "--preset=smoke", f"--workdir={workdir}")
  for stage_name in ("finetune", "distill", "baseline"):
    assert f"{stage_name}: " in proc.stderr and proc.stderr.count("0 to train") == 3
  assert "labelled" not in proc.stderr  # No teacher ran over the data.
  assert {p: p.stat().st_mtime_ns for p in workdir.glob("labels/**/*") if p.is_file()} == caches
  assert {p: p.stat().st_mtime_ns for p in workdir.glob("runs/*/student.keras")} == checkpoints
  # Tables read from the copy point into the copy.
  loaded = results.load_table([workdir / results.TABLE_PARQUET])
  assert all(pathlib.Path(c).is_file() and str(workdir) in c for c in loaded["checkpoint"].dropna())


def test_a_replaced_zoo_teacher_is_named_and_its_students_are_stale(smoke_study, tmp_path):
  workdir = _copy(smoke_study, tmp_path)
  zoo = workdir / "zoo"
  teachers = sorted(zoo.glob("*.keras"))
  shutil.copyfile(teachers[1], teachers[0])  # Another teacher's file under this one's name.
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}",
               f"--teacher_zoo={zoo}", "--nobaseline", check=False)
  assert proc.returncode == 2
  assert teachers[0].stem in proc.stderr and "does not match the digest" in proc.stderr


def test_the_label_cache_is_keyed_by_the_teachers_contents(smoke_study, tmp_path):
  workdir = _copy(smoke_study, tmp_path)
  marker = next(workdir.glob("labels/*/_COMPLETE.json"))
  key = fileio.read_json(marker)
  assert "checkpoint_digest" in key and "checkpoint" not in key and "checkpoint_mtime" not in key
  assert not any(str(v).startswith("/") for v in key.values())


def test_verdicts_name_what_changed_and_what_is_corrupt(tmp_path):
  run_dir = tmp_path / results.RUNS / "r1"
  run_dir.mkdir(parents=True)
  (run_dir / "student.keras").write_bytes(b"weights")
  inputs = {"data": "d1", "splits/basic/train_10": "a", "teacher/t": "x", "labels/t": "l"}
  results.write_row(tmp_path, {"run_id": "r1", "status": "ok", provenance.KEY: provenance.record(
      inputs, run_dir, ("student.keras", "predictions.parquet"), "v")})
  assert provenance.verdict(tmp_path, "r1", inputs).state == "done"
  # A rebuilt (or deleted) label cache alone does not make a run stale; a changed list does.
  assert provenance.verdict(tmp_path, "r1", {k: v for k, v in inputs.items()
                                             if k != "labels/t"}).state == "done"
  changed = provenance.verdict(tmp_path, "r1", {**inputs, "splits/basic/train_10": "b",
                                                "teacher/t": "y"})
  assert changed.state == "stale"
  assert changed.reasons == ("split list basic/train_10 changed", "teacher t's checkpoint changed")
  (run_dir / "student.keras").write_bytes(b"weightz")
  assert provenance.verdict(tmp_path, "r1", inputs).reasons == (
      "student.keras does not match its recorded digest (corrupt, truncated or replaced)",)
  (run_dir / "student.keras").unlink()
  assert provenance.verdict(tmp_path, "r1", inputs).reasons == ("student.keras is missing",)
  assert provenance.verdict(tmp_path, "r2", inputs).state == "todo"
  kept = provenance.supersede(tmp_path, "r1")
  assert (kept / results.ROW_FILE).is_file() and not results.is_done(tmp_path, "r1")


def test_a_run_that_trained_more_steps_than_it_declares_is_stale(tmp_path):
  """Rows written before an epoch trained exactly its steps: 4 steps per call on a 5-step
  epoch trained 8. They are stale, so no comparison mixes them with runs trained since."""
  inputs = {"data": "d1"}
  for run_id, per_call, per_epoch in (("old", 4, 5), ("ok", 4, 8), ("new", 1, 5)):
    (tmp_path / results.RUNS / run_id).mkdir(parents=True)
    results.write_row(tmp_path, {
        "run_id": run_id, "status": "ok", "steps_per_execution": per_call,
        "steps_per_epoch": per_epoch, provenance.KEY: provenance.record(
            inputs, tmp_path / results.RUNS / run_id, (), "v")})
  old = provenance.verdict(tmp_path, "old", inputs)
  assert old.state == "stale" and old.reasons == (
      "it trained 8 steps per epoch, not its 5 (steps_per_execution 4 does not divide them: "
      "Keras runs whole executions; fixed since)",)
  assert provenance.verdict(tmp_path, "ok", inputs).state == "done"
  assert provenance.verdict(tmp_path, "new", inputs).state == "done"


def test_only_that_selects_nothing_names_the_values_that_exist():
  runs = [matrix.RunSpec(stage="baseline", arch=a, labeling="basic", split_percent=p,
                         optimizer="adam", learning_rate=1e-3, seed=0, protocol="holdout",
                         task="binary", epochs=1, batch_size=8, early_stopping=True, patience=1,
                         monitor="val_label_loss", head="pooled", dropout=0.0, width=None,
                         dataset="d", loss=LossConfig(kind="hard", alpha=1.0))
          for a in ("cnn", "mlp") for p in (3, 10)]
  for only, expected in (("arch=mlpp", "no run has arch=mlpp; the runs have arch in cnn, mlp"),
                         ("arch==mlp", "no run has arch==mlp"),
                         ("split_percent=5|10", "no run has split_percent=5; the runs have "
                                                "split_percent in 10, 3"),
                         ("archs=mlp", "unknown axis archs")):
    with pytest.raises(ValueError, match=expected.replace("|", r"\|")):
      matrix.select(runs, only=only)
  assert len(matrix.select(runs, only="arch=mlp|cnn,split_percent=3")) == 2
  assert matrix.select(runs, only="", shard_index=5, num_shards=8) == []  # More shards than runs.


def test_failed_runs_exit_1_after_the_rest_and_are_listed_with_their_reasons(tmp_path):
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}", "--optimizers=sgd",
               "--learning_rate=0.01,1e30", "--split_percents=10", "--noearly_stopping",
               check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  table = results.read_rows([tmp_path])
  failed = table[table["status"] == "failed"]
  assert len(failed) == 1 and (table["status"] == "ok").sum() == 1
  assert f"FAILED: 1 run(s)" in proc.stdout
  assert failed["run_id"].iloc[0] in proc.stdout and "non-finite" in proc.stdout
  # The rerun trains nothing and still says so.
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}", "--optimizers=sgd",
               "--learning_rate=0.01,1e30", "--split_percents=10", "--noearly_stopping",
               check=False)
  assert proc.returncode == 1 and "0 to train" in proc.stderr and "FAILED" in proc.stdout


def test_only_and_positional_typos_stop_before_anything_runs(tmp_path):
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}", "--only=arch=mlpp",
               check=False)
  assert proc.returncode == 2 and "no run has arch=mlpp; the runs have arch in mlp" in proc.stderr
  assert not (tmp_path / results.RUNS).exists() or not list(tmp_path.glob("runs/*/result.json"))
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}", "--monitor=val_foo",
               check=False)
  assert proc.returncode == 2 and "--monitor)='val_foo' is not one of val_label_loss" in proc.stderr
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}",
               "--monitor=val_agreement", check=False)
  assert proc.returncode == 2 and "logged by distillation runs only" in proc.stderr
  assert not list(tmp_path.glob("runs/*/result.json"))


def test_a_batch_larger_than_the_training_set_is_warned_about(tmp_path):
  proc = stage("stages.baseline", "--preset=smoke", f"--workdir={tmp_path}", "--batch_size=512",
               "--split_percents=10", "--optimizers=adam", "--epochs=1")
  assert "the global batch (512) is larger than the training set" in proc.stderr
  assert "lower --batch_size to at most" in proc.stderr
