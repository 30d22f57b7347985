import json
import multiprocessing

import pandas as pd
import pytest

from simclr_distill import results


def _row(run_id, **kw):
  return {"run_id": run_id, "stage": "distill", "status": "ok", "arch": "mlp", "split_percent": 10,
          "f1": 0.5, "seed": 0, **kw}


def _finish(args):
  workdir, start, count = args
  for i in range(start, start + count):
    results.write_row(workdir, _row(f"run-{i:03d}", f1=i / 100))
    results.consolidate(workdir)


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
  # Four processes finish runs at the same time; two of them were given the same runs.
  jobs = [(str(tmp_path), 0, 20), (str(tmp_path), 20, 20), (str(tmp_path), 40, 20), (str(tmp_path), 40, 20)]
  with multiprocessing.get_context("spawn").Pool(4) as pool:
    pool.map(_finish, jobs)
  for table in (pd.read_parquet(tmp_path / results.TABLE_PARQUET), pd.read_csv(tmp_path / results.TABLE_CSV)):
    assert len(table) == 60 and table["run_id"].is_unique
    assert list(table.columns) == list(results.COLUMNS)
  assert not list(tmp_path.glob(".*.tmp*"))


def test_schema_columns_include_the_study_columns():
  assert results.COLUMNS[:len(results.STUDY_COLUMNS)] == results.STUDY_COLUMNS
  for needed in ("run_id", "stage", "protocol", "teacher_id", "encoder", "encoder_optimizer",
                 "student_optimizer", "learning_rate", "temperature", "alpha", "epochs_run", "seed",
                 "wall_seconds", "images_per_second", "checkpoint", "code_version", "finished_at"):
    assert needed in results.COLUMNS


def test_unknown_columns_and_newer_schemas_are_refused(tmp_path):
  with pytest.raises(ValueError, match="outside the schema: colour"):
    results.write_row(tmp_path, _row("a", colour="red"))
  path = results.row_path(tmp_path, "b")
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({**_row("b"), "schema_version": results.SCHEMA_VERSION + 1}))
  with pytest.raises(ValueError, match="newer than this code's"):
    results.read_rows([tmp_path])


def test_query_and_summary(tmp_path):
  for i, (arch, f1) in enumerate([("mlp", 0.5), ("mlp", 0.7), ("cnn", 0.9)]):
    results.write_row(tmp_path, _row(f"r{i}", arch=arch, f1=f1))
  results.write_row(tmp_path, _row("r9", arch="cnn", status="failed", f1=None))
  table = results.load_table([tmp_path])
  assert list(results.query(table, "arch == 'mlp'")["f1"]) == [0.5, 0.7]
  summary = results.summarize(table, ["arch"], ["f1"])
  assert summary.loc["mlp", ("f1", "mean")] == pytest.approx(0.6)
  assert summary.loc["mlp", ("f1", "std")] == pytest.approx(0.1414, abs=1e-4)
  assert summary.loc["cnn", ("f1", "count")] == 1  # the failed run is left out
  with pytest.raises(ValueError, match="--filter 'nope ==' failed"):
    results.query(table, "nope ==")
  with pytest.raises(ValueError, match="no column\\(s\\) colour"):
    results.summarize(table, ["colour"])


def test_summaries_keep_protocols_schemes_and_architectures_apart():
  frame = pd.DataFrame({
      "stage": ["distill"] * 4 + ["baseline"], "status": ["ok"] * 4 + ["failed"],
      "protocol": ["holdout", "original", "holdout", "holdout", "holdout"],
      "labeling": ["basic", "basic", "expanded", "basic", "basic"],
      "arch": ["ResNet50"] * 3 + ["mlp", "cnn"], "method": ["hard / offline"] * 5,
      "split_percent": [3] * 5, "f1": [0.5, 0.9, 0.7, 0.1, 0.0]})
  keys = results.summary_keys(frame, ["stage", "split_percent"])
  assert keys == ["stage", "split_percent", "protocol", "labeling", "arch"]
  summary = results.summarize(frame, keys, ["f1"])
  # No group mixes the original protocol's run with the holdout ones, or two schemes.
  assert summary[("f1", "count")].max() == 1 and len(summary) == 4
  # Asked explicitly, the pooling is the user's choice.
  assert results.summarize(frame, ["stage"], ["f1"]).loc["distill", ("f1", "count")] == 4
