"""The results dashboard: sources, filters, figures, the live app in headless Chromium, the
static report, and the published study beside a reproduction."""

import json

import numpy as np
import pandas as pd
import pytest

from simclr_distill import dashboard, results
from simclr_distill.dashboard import figures, published
from tests import browser
from tests.conftest import ARTIFACTS, REPO, SHARED_REFERENCE
from tests.test_stages import ENV


def published_dir():
  return SHARED_REFERENCE / "results" if SHARED_REFERENCE.is_dir() else None


# ---- Published tables ---------------------------------------------------------------------------


def test_the_studys_three_tables_load_into_the_schema(reference_dir):
  frame = published.load_published([reference_dir / "results"])
  assert frame.groupby("stage").size().to_dict() == {"distill": 180, "finetune": 36, "baseline": 120}
  assert list(frame.columns) == [*results.COLUMNS, "source"] and (frame["source"] == "published").all()
  assert set(frame["labeling"]) == {"basic", "expanded"}
  distill = frame[frame["stage"] == "distill"]
  assert set(distill["model"]) == {"BEN", "CA_adam", "CA_sgd"}
  assert (distill["protocol"] == "original").all()
  assert set(distill[distill["model"] == "CA_sgd"]["encoder_optimizer"]) == {"sgd"}
  baseline = frame[frame["stage"] == "baseline"]
  assert baseline.groupby(["init", "labeling"]).size().to_dict() == {
      ("imagenet", "basic"): 30, ("imagenet", "expanded"): 30, ("scratch", "basic"): 30,
      ("scratch", "expanded"): 30}
  # The study's headline: mean F1 of the 15 basic-label students at 1% and 100%.
  basic = distill[distill["labeling"] == "basic"].groupby("split_percent")["f1"].mean()
  assert basic[1] == pytest.approx(0.773, abs=5e-4) and basic[100] == pytest.approx(0.846, abs=5e-4)


def test_compare_puts_published_and_reproduced_side_by_side(reference_dir, tmp_path):
  pub = published.load_published([reference_dir / "results" / "distill_results.csv"])
  mine = pub[(pub["model"] == "BEN") & (pub["split_percent"] == 10)].copy()
  mine = pd.concat([mine.assign(f1=mine["f1"] + 0.01, seed=0), mine.assign(f1=mine["f1"] + 0.03, seed=1)])
  mine["source"] = "mine"
  table = published.compare(pub, mine)
  both = table.dropna(subset=["reproduced_mean"])
  assert len(both) == 10  # 5 archs x 2 schemes
  np.testing.assert_allclose(both["difference"], 0.02, atol=1e-9)
  assert (both["reproduced_count"] == 2).all() and len(table) == 180
  bad = tmp_path / "distill_results.csv"
  bad.write_text("model,accuracy\nBEN,0.5\n")
  with pytest.raises(ValueError, match="not one of the study's result tables.*split_percent"):
    published.read_published(bad)


# ---- Figures ------------------------------------------------------------------------------------


def synthetic(rows=200, seed=0):
  rng = np.random.default_rng(seed)
  frame = pd.DataFrame({
      "run_id": [f"r{i}" for i in range(rows)], "stage": rng.choice(["distill", "baseline"], rows),
      "arch": rng.choice(["mlp", "cnn"], rows), "split_percent": rng.choice([3, 10, 100], rows),
      "student_optimizer": rng.choice(["adam", "sgd"], rows), "labeling": "basic",
      "f1": rng.uniform(0.5, 1.0, rows), "status": "ok", "seed": rng.integers(0, 3, rows),
      "teacher_id": "", "source": "here"})
  return dashboard.normalise(frame)


def test_metric_by_split_plots_group_means_and_spreads_in_split_order():
  frame = synthetic()
  fig = figures.metric_by_split(frame, "f1", "arch")
  expected = frame.assign(split=frame["split_percent"].astype(int)).groupby(["arch", "split"])["f1"]
  for trace in fig.data:
    arch = trace.name
    assert list(trace.x) == ["3%", "10%", "100%"]
    np.testing.assert_allclose(trace.y, expected.mean()[arch].to_numpy())
    np.testing.assert_allclose(trace.error_y.array, expected.std()[arch].to_numpy())
  two = pd.concat([frame, frame.assign(source="published")])
  assert sorted(t.name for t in figures.metric_by_split(two, "f1", "arch").data) == [
      "cnn [here]", "cnn [published]", "mlp [here]", "mlp [published]"]
  empty = figures.metric_by_split(frame.iloc[:0], "f1", "arch")
  assert not empty.data and "no rows match" in empty.layout.annotations[0].text


def test_pr_curve_matches_scikit_learn():
  from sklearn.metrics import precision_recall_curve

  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 300)
  scores = np.round(rng.uniform(size=300), 2)  # ties
  precision, recall = figures.pr_curve(labels, scores)
  p, r, _ = precision_recall_curve(labels, scores)
  np.testing.assert_allclose(precision[1:], p[::-1][1:])
  np.testing.assert_allclose(recall[1:], r[::-1][1:])


def test_teacher_vs_students_reads_the_teachers_own_rows():
  frame = dashboard.normalise(pd.DataFrame({
      "run_id": ["t", "s1", "s2"], "stage": ["finetune", "distill", "distill"],
      "teacher_id": ["A-basic-3", "A-basic-3", "A-basic-3"], "arch": ["cnn", "mlp", "cnn"],
      "f1": [0.8, 0.7, 0.9], "auc": [0.85, 0.75, 0.95], "status": "ok", "split_percent": 3}))
  fig = figures.teacher_vs_students(frame, "auc")
  points = {t.name: (list(t.x), list(t.y)) for t in fig.data if t.mode == "markers"}
  assert points == {"cnn": ([0.85], [0.95]), "mlp": ([0.85], [0.75])}


# Two teaching methods x three seeds with known F1 and agreement, one failed run (left out of
# every aggregate) and a supervised baseline without a method.
METHOD_F1 = {"soft_kl T=4": [0.5, 0.6, 0.7], "soft_kl T=1 / consistent+mixup1 / gen2": [0.8, 0.8, 0.9]}
METHOD_AGREEMENT = {"soft_kl T=4": [0.9, 0.9, 0.9], "soft_kl T=1 / consistent+mixup1 / gen2": [0.7, 0.8, 0.9]}


def methods_frame():
  rows = []
  for method, f1s in METHOD_F1.items():
    for seed, (f1, agreement) in enumerate(zip(f1s, METHOD_AGREEMENT[method])):
      rows.append({"run_id": f"{method}-{seed}", "stage": "distill", "method": method, "seed": seed,
                   "f1": f1, "agreement": agreement, "teacher_kl": 0.1 if "gen2" in method else 0.3,
                   "status": "ok", "temperature": 1.0 if "T=1" in method else 4.0,
                   "generation": 2 if "gen2" in method else 1, "teacher_mode": "consistent",
                   "arch": "mlp", "split_percent": 3, "learning_rate": 1e-3})
  rows.append({**rows[0], "run_id": "failed", "f1": 0.0, "agreement": 0.0, "status": "error"})
  rows.append({"run_id": "base", "stage": "baseline", "arch": "mlp", "seed": 0, "f1": 0.4,
               "status": "ok", "split_percent": 3})
  return dashboard.normalise(pd.DataFrame(rows).assign(source="here"))


def test_summary_table_gives_mean_std_count_and_standard_error_over_seeds():
  frame = methods_frame()
  assert dashboard.default_group_by(frame) == ["stage", "method"]
  assert dashboard.default_group_by(synthetic()) == ["stage", "arch"]
  table = dashboard.summary_table(frame, ["stage", "method"], "f1")
  assert list(table.columns) == ["stage", "method"] + [f"{m}_{s}" for m in ("f1", "agreement")
                                                        for s in ("mean", "std", "count", "se")]
  assert list(zip(table["stage"], table["method"])) == [
      ("baseline", ""), ("distill", "soft_kl T=1 / consistent+mixup1 / gen2"), ("distill", "soft_kl T=4")]
  for method, f1s in METHOD_F1.items():
    row = table[table["method"] == method].iloc[0]
    for metric, values in (("f1", f1s), ("agreement", METHOD_AGREEMENT[method])):
      std = np.std(values, ddof=1)
      assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
      assert row[f"{metric}_std"] == pytest.approx(std, abs=1e-12)
      assert row[f"{metric}_count"] == 3  # the failed run is not counted
      assert row[f"{metric}_se"] == pytest.approx(std / np.sqrt(3), abs=1e-12)
  t4 = table[table["method"] == "soft_kl T=4"].iloc[0]
  assert (t4["f1_mean"], t4["f1_std"], t4["agreement_std"]) == pytest.approx((0.6, 0.1, 0.0))
  baseline = table[table["stage"] == "baseline"].iloc[0]
  assert baseline["f1_count"] == 1 and np.isnan(baseline["agreement_count"])
  # The chosen metric is summarised beside agreement; no grouping puts all finished runs together.
  everything = dashboard.summary_table(frame, [], "teacher_kl")
  assert everything["group"].tolist() == ["all runs"] and everything["teacher_kl_count"].iloc[0] == 6
  assert everything["teacher_kl_mean"].iloc[0] == pytest.approx(0.2)
  by_seed = dashboard.summary_table(frame, ["seed"], "agreement")
  assert by_seed["agreement_count"].tolist() == [2, 2, 2] and "f1_mean" not in by_seed


def test_metric_by_method_plots_mean_and_std_per_method_best_first():
  frame = methods_frame()
  fig = figures.metric_by_method(frame, "f1")
  assert [t.name for t in fig.data] == ["distill"]  # the baseline has no method
  points = dict(zip(fig.data[0].y, zip(fig.data[0].x, fig.data[0].error_x.array, fig.data[0].customdata)))
  for method, f1s in METHOD_F1.items():
    assert points[method] == pytest.approx((np.mean(f1s), np.std(f1s, ddof=1), 3))
  # Plotly draws the first category at the bottom: the best method is last.
  assert fig.layout.yaxis.categoryarray[-1] == "soft_kl T=1 / consistent+mixup1 / gen2"
  kl = figures.metric_by_method(frame, "teacher_kl")  # lower is better
  assert kl.layout.yaxis.categoryarray[-1] == "soft_kl T=1 / consistent+mixup1 / gen2"
  assert list(figures.metric_by_method(frame, "agreement").layout.yaxis.categoryarray)[-1] == "soft_kl T=4"
  empty = figures.metric_by_method(synthetic(), "f1")
  assert not empty.data and "with a method" in empty.layout.annotations[0].text


def _ids(component):
  """Every id in a Dash layout."""
  found = [component.id] if getattr(component, "id", None) else []
  children = getattr(component, "children", None)
  for child in children if isinstance(children, (list, tuple)) else [children]:
    if hasattr(child, "to_plotly_json"):
      found += _ids(child)
  return found


def test_filters_and_metrics_appear_only_for_columns_with_values(tmp_path):
  new = methods_frame()
  assert new["temperature"].tolist()[:4] == ["4", "4", "4", "1"] and new["learning_rate"].iloc[0] == "0.001"
  present = dashboard.present_categorical(new)
  assert {"method", "teacher_mode", "generation", "temperature", "learning_rate"} <= set(present)
  assert not {"augment", "schedule", "select", "student_classes", "ensemble_combine", "alpha", "mixup",
              "max_epochs"} & set(present)
  ids = _ids(dashboard.make_app(new).layout)
  for column in ("method", "teacher_mode", "generation", "temperature", "learning_rate"):
    assert f"filter-{column}" in ids
  assert "filter-augment" not in ids and "filter-mixup" not in ids
  assert {"range-teacher_kl", "fig-by_method", "group-by", "summary-table"} <= set(ids)
  assert "teacher_kl" in dashboard.present_metrics(new) and "last_f1" not in dashboard.present_metrics(new)

  old = tmp_path / "old.csv"  # A table from before the new columns.
  synthetic().drop(columns=["method", "temperature", "teacher_kl"]).to_csv(old, index=False)
  frame, _ = dashboard.load_sources([old])
  assert (frame["method"] == "").all() and frame["teacher_kl"].isna().all()
  old_ids = _ids(dashboard.make_app(frame).layout)
  assert "filter-arch" in old_ids and "summary-table" in old_ids
  assert not [i for i in old_ids if i in ("filter-method", "filter-generation", "filter-temperature",
                                          "filter-freeze", "range-teacher_kl", "fig-by_method")]
  assert "teacher_kl" not in dashboard.present_metrics(frame)
  assert dashboard.filter_frame(new, {"temperature": [1], "generation": ["2"]})["f1"].tolist() == [0.8, 0.8, 0.9]


def _report_data(path):
  """The JSON payload an exported report inlines."""
  html, marker = path.read_text(), '<script id="report-data" type="application/json">'
  start = html.index(marker) + len(marker)
  return json.loads(html[start:html.index("</script>", start)])


def test_exported_report_has_the_new_filters_the_methods_figure_and_the_summary(tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select

  old = _report_data(dashboard.export_report(synthetic(), tmp_path / "old.html"))
  assert "method" not in old["categorical"] and not old["methods"] and old["groupBy"] == ["stage", "arch"]
  frame = methods_frame()
  path = dashboard.export_report(frame, tmp_path / "methods.html")
  data = _report_data(path)
  assert {"method", "teacher_mode", "generation", "temperature"} <= set(data["categorical"])
  assert "augment" not in data["categorical"] and "teacher_kl" in data["numeric"]
  assert data["methods"] and data["groupBy"] == ["stage", "method"]
  assert 'id="group-by"' in path.read_text() and 'id="summary"' in path.read_text()
  with browser.chromium() as driver:
    driver.get(path.as_uri())
    total = len(frame)
    browser.wait_for(lambda: _count(driver) == f"{total} of {total} runs", 30, "the report to render")
    options = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "filter-method")).options]
    assert options == ["", "soft_kl T=1 / consistent+mixup1 / gen2", "soft_kl T=4"]
    assert driver.find_elements(By.ID, "filter-temperature") and not driver.find_elements(By.ID, "filter-augment")

    def summary():
      return driver.execute_script(
          "const t = document.getElementById('summary-table');"
          "return [[...t.tHead.rows[0].cells].map(c => c.innerText)]"
          ".concat([...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.innerText)))")

    head, *rows = summary()
    assert head[:7] == ["stage", "method", "f1_mean", "f1_std", "f1_count", "f1_se", "agreement_mean"]
    assert rows[2][:6] == ["distill", "soft_kl T=4", "0.6000", "0.1000", "3", f"{0.1 / np.sqrt(3):.4f}"]
    assert rows[1][6:10] == ["0.8000", "0.1000", "3", f"{0.1 / np.sqrt(3):.4f}"]
    assert sorted(_trace_names(driver, "by_method")) == ["distill"]
    Select(driver.find_element(By.ID, "filter-generation")).select_by_value("2")
    browser.wait_for(lambda: _count(driver) == f"3 of {total} runs", 10, "the generation filter")
    assert [r[1] for r in summary()[1:]] == ["soft_kl T=1 / consistent+mixup1 / gen2"]
    group_by = Select(driver.find_element(By.ID, "group-by"))
    group_by.deselect_all()
    group_by.select_by_value("seed")
    browser.wait_for(lambda: summary()[0][0] == "seed", 10, "the grouping")
    assert [r[:1] + r[3:4] for r in summary()[1:]] == [["0", "1"], ["1", "1"], ["2", "1"]]
    assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []


# ---- Sources ------------------------------------------------------------------------------------


def test_odd_sources_become_messages_not_tracebacks(tmp_path):
  old = tmp_path / "old.csv"
  pd.DataFrame({"stage": ["distill"], "arch": ["mlp"], "split_percent": [3], "f1": [0.5]}).to_csv(old, index=False)
  newer = tmp_path / "newer"
  (newer / "runs" / "x").mkdir(parents=True)
  (newer / "runs" / "x" / "result.json").write_text(json.dumps({"run_id": "x", "schema_version": 99}))
  frame, messages = dashboard.load_sources([old, newer, tmp_path / "missing"])
  assert len(frame) == 1 and frame["f1"].iloc[0] == 0.5
  assert any("old" in m and "without column(s)" in m for m in messages)
  assert any("newer" in m and "upgrade simclr_distill" in m for m in messages)
  assert any("missing" in m and "is not a workdir" in m for m in messages)
  empty, messages = dashboard.load_sources([])
  assert empty.empty and any("no results rows" in m for m in messages)
  dashboard.make_app(empty, messages)  # An empty table still makes a page.
  dashboard.export_report(empty, tmp_path / "empty.html", messages)


def test_filters_select_values_and_ranges():
  frame = synthetic()
  out = dashboard.filter_frame(frame, {"arch": ["mlp"], "split_percent": [3, 10]}, {"f1": (0.6, 0.9)})
  expected = frame[(frame["arch"] == "mlp") & frame["split_percent"].isin(["3", "10"])
                   & frame["f1"].between(0.6, 0.9)]
  assert out.index.equals(expected.index) and len(out) > 0
  assert len(dashboard.filter_frame(frame, {"arch": []})) == len(frame)


def test_ten_thousand_rows_make_figures_and_a_report(tmp_path):
  frame = synthetic(10_000)
  figs = dashboard.comparison_figures(frame, "f1")
  assert sum(len(t.x) for t in figs["by_arch"].data) == 2 * 3
  path = dashboard.export_report(frame, tmp_path / "big.html")
  assert path.stat().st_size < 15e6


# ---- In a browser -------------------------------------------------------------------------------


def _count(driver):
  from selenium.webdriver.common.by import By

  found = driver.find_elements(By.ID, "row-count")
  return found[0].text if found else ""


def _trace_names(driver, figure):
  return driver.execute_script(
      f"const g = document.querySelector('#fig-{figure} .js-plotly-plot') || "
      f"document.getElementById('fig-{figure}'); return g && g.data ? g.data.map(t => t.name) : null;")


def test_dashboard_filters_change_the_table_and_figures_in_chromium(smoke_study, tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys

  workdir, _ = smoke_study
  pub = published_dir()
  args = [f"--workdirs={workdir}"] + ([f"--published={pub}"] if pub else [])
  total = len(pd.read_parquet(workdir / results.TABLE_PARQUET)) + (336 if pub else 0)
  with browser.serving(args, ENV, REPO) as url, browser.chromium(download_dir=tmp_path) as driver:
    driver.get(url)
    browser.wait_for(lambda: _count(driver) == f"{total} of {total} runs", 60, "the first render")
    before = _trace_names(driver, "by_stage")
    source = workdir.name
    # The paired comparisons, drawn with their intervals.
    intervals = browser.wait_for(lambda: _trace_names(driver, "intervals"), 30, "the intervals")
    assert set(intervals) <= {"interval excludes 0", "interval includes 0 (not resolved)"}
    # Traces name their source when there are several (without ../shared, only this one).
    named = (lambda stage: f"{stage} [{source}]") if pub else (lambda stage: stage)
    assert named("finetune") in before and named("baseline") in before
    if pub:  # The published study beside the smoke reproduction.
      assert "distill [published]" in before and f"distill [{source}]" in before
    # Waited for, not found at once: on a loaded machine the dropdowns can still be rendering.
    browser.wait_for(lambda: driver.find_elements(By.ID, "filter-stage"), 30,
                     "the stage filter")[0].click()
    option = browser.wait_for(lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]")
                                       if o.text.strip() == "distill"], 10, "the stage options")[0]
    option.click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    distilled = 4 + (180 if pub else 0)
    browser.wait_for(lambda: _count(driver) == f"{distilled} of {total} runs", 30, "the filtered count")
    browser.wait_for(lambda: all(n.startswith("distill") for n in _trace_names(driver, "by_stage")),
                     30, "the figure to follow the filter")
    stage_cells = driver.execute_script(
        "return [...document.querySelectorAll('#table td[data-dash-column=stage]')].map(td => td.innerText.trim())")
    assert stage_cells and set(stage_cells) == {"distill"}
    # The summary follows the filter: its groups are distilled ones and hold every finished run.
    frame, _ = dashboard.load_sources([workdir], [pub] if pub else [])
    finished = figures.finished(frame[frame["stage"] == "distill"])
    summary = lambda column: driver.execute_script(  # noqa: E731
        f"return [...document.querySelectorAll('#summary-table td[data-dash-column={column}]')]"
        ".map(td => td.innerText.trim())")
    browser.wait_for(lambda: set(summary("stage")) == {"distill"}, 30, "the summary to follow the filter")
    assert sum(int(c) for c in summary("f1_count")) == finished["f1"].notna().sum()
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    driver.find_element(By.ID, "download-button").click()
    csv = browser.wait_for(lambda: list(tmp_path.glob("results_filtered*.csv")), 30, "the download")[0]
    browser.wait_for(lambda: len(pd.read_csv(csv)) == distilled, 10, "the whole CSV")
    assert set(pd.read_csv(csv)["stage"]) == {"distill"}
  assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_exported_report_works_from_disk_without_console_errors(smoke_study, tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select

  from tests.test_stages import stage

  workdir, _ = smoke_study
  pub = published_dir()
  report = ARTIFACTS / "report.html"
  ARTIFACTS.mkdir(exist_ok=True)
  proc = stage("stages.dashboard", f"--workdirs={workdir}", f"--export={report}",
               *([f"--published={pub}"] if pub else []))
  assert f"report: {report}" in proc.stdout
  total = len(pd.read_parquet(workdir / results.TABLE_PARQUET)) + (336 if pub else 0)
  with browser.chromium() as driver:
    driver.get(report.as_uri())
    browser.wait_for(lambda: _count(driver) == f"{total} of {total} runs", 30, "the report to render")
    Select(driver.find_element(By.ID, "filter-stage")).select_by_value("baseline")
    baselines = 2 + (120 if pub else 0)
    browser.wait_for(lambda: _count(driver) == f"{baselines} of {total} runs", 10, "the filter")
    assert all(n.startswith("baseline") for n in _trace_names(driver, "by_stage"))
    cells = driver.execute_script("return [...document.querySelectorAll('#runs tbody tr')].map(tr => tr.cells[1].innerText)")
    assert set(cells) == {"baseline"}
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    comparisons = pd.read_csv(workdir / "comparisons.csv")
    assert driver.execute_script("return document.getElementById('fig-intervals').data.length") >= 1
    shown = driver.execute_script(
        "return document.querySelectorAll('table.intervals tbody tr').length")
    assert shown == len(comparisons) > 0
    driver.save_screenshot(str(ARTIFACTS / "report.png"))


def test_dashboard_stage_refuses_a_bad_port():
  from tests.test_stages import stage

  proc = stage("stages.dashboard", "--workdirs=nowhere", "--port=70000", check=False)
  assert proc.returncode == 2 and "--port=70000 is not a TCP port" in proc.stderr


def test_paired_comparisons_load_per_workdir_and_follow_the_filters(smoke_study):
  workdir, _ = smoke_study
  comparisons, messages = dashboard.load_comparisons([workdir, workdir / "nothing.csv"])
  assert messages == [] and len(comparisons) and set(comparisons["source"]) == {workdir.name}
  saved = pd.read_csv(workdir / "comparisons.csv")
  assert len(comparisons) == len(saved)
  only_100 = dashboard.filter_comparisons(comparisons, {"split_percent": ["100"]})
  assert len(only_100) and set(only_100["split_percent"]) == {100}
  figure = figures.comparison_intervals(only_100)
  assert sum(len(trace.x) for trace in figure.data) == len(only_100)
  assert "bootstrap intervals" in figure.layout.title.text
  table = dashboard.comparisons_table(only_100)
  assert set(table["excludes_zero"]) <= {"yes", "no"} and table["interval"].str.startswith("[").all()
