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
