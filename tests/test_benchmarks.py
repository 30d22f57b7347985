"""The benchmark harness (benchmarks/ itself is run by hand): its ratios and data."""

import pytest

from benchmarks import common


def test_alternate_takes_self_timed_sides_and_report_judges_the_median_ratio():
  calls = []

  def ours():
    calls.append("ours")
    return 100, 2.0, 1.0  # 50 images/s of wall time, 100 per CPU-second

  def reference():
    calls.append("reference")
    return 100, 1.0, 1.0

  rates = common.alternate({"ours": ours, "reference": reference}, repeats=3)
  assert calls == ["ours", "reference"] + ["ours", "reference"] * 3  # warm-up, then in turn
  assert rates.wall == {"ours": [50.0] * 3, "reference": [100.0] * 3}
  report = common.Report("t")
  assert report.ratio("small", "x", rates, "ours", "reference", 0.95) == pytest.approx(0.5)
  row = report.rows[0]
  assert row["met"] is False and row["cpu_ratio"] == pytest.approx(1.0)


def test_tiled_digits_repeat_the_examples_and_their_split_lists(tmp_path):
  data = common.tiled_digits(tmp_path / "tiled", 1797 * 2 + 3)
  ids = data.ids()
  assert len(ids) == len(set(ids)) == 1797 * 2 + 3
  assert data.manifest["num_examples"] == len(ids)
  test = data.splits("basic")["test"]
  assert set(test) <= set(ids) and len(test) > 1
  assert sum(1 for _ in data.examples(test[:10])) == 10


def test_a_benchmark_refuses_to_time_sides_that_compute_different_losses():
  report = common.Report("t")
  common.same_loss(report, "small", {"ours": 0.5939, "keras": 0.5939})
  assert [row["value"] for row in report.rows] == [0.5939, 0.5939]  # Printed beside the timing.
  with pytest.raises(SystemExit, match="compute different losses"):
    common.same_loss(report, "small", {"ours": 0.5939, "keras": 0.0021})


def test_the_keras_reference_of_online_distillation_computes_the_studys_hard_loss():
  import numpy as np

  from benchmarks import distill_online
  from simclr_distill import losses

  rng = np.random.default_rng(0)
  teacher, student = rng.normal(size=(16, 1)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
  keras_side = float(distill_online.hard_pseudo_label_loss().compute_loss(teacher, student))
  ours = float(losses.distillation_loss(teacher, student, np.zeros(16, "float32"),
                                        np.zeros(16, "float32"), task="binary", kind="hard"))
  assert keras_side == pytest.approx(ours, rel=1e-6)
