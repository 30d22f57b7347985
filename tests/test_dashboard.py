"""The results dashboard: sources, filters, figures, the live app in headless Chromium, the
static report, and the published study beside a reproduction."""

import itertools
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


# ---- The published study: overlaid only where its keys match -----------------------------------


def test_the_published_study_shares_the_axes_only_where_its_keys_match(reference_dir):
  pub = published.load_published([reference_dir / "results"])
  digits = synthetic(40).assign(encoder="digits_adam", model="digits_adam")
  frame = dashboard.normalise(pd.concat([digits, pub], ignore_index=True))
  shared, own, note = published.overlay(frame)
  # A digits reproduction shares no key with the study: not overlaid, drawn on its own, and why.
  assert (shared["source"] != "published").all() and len(own) == 336
  assert "is not drawn on these axes" in note and "BEN, CA_adam, CA_sgd" in note and "digits_adam" in note
  figs, shown_note, table = dashboard.page_figures(frame, "f1")
  assert shown_note == note and table.empty
  assert not [t.name for t in figs["by_arch"].data if "published" in t.name]
  assert sorted(t.name for t in figs["pub-by_arch"].data) == sorted(pub[pub["stage"] != "finetune"]["arch"].unique())
  assert "no (stage, encoder" in figs["published"].layout.annotations[0].text
  # The study's teachers carry their students' teacher id, so its own teacher figure is drawn.
  teacher = figs["pub-teacher"]
  assert sum(len(t.x) for t in teacher.data if t.mode == "markers") == 180

  # A reproduction of one published group (BEN teachers' students, basic, 10%, ResNet50).
  key = (pub["stage"] == "distill") & (pub["model"] == "BEN") & (pub["labeling"] == "basic") & (
      pub["split_percent"] == 10) & (pub["arch"] == "ResNet50")
  mine = pub[key].assign(source="mine", f1=pub[key]["f1"] + 0.05, run_id="mine-0")
  both = dashboard.normalise(pd.concat([digits, mine, pub], ignore_index=True))
  shared, own, note = published.overlay(both)
  assert list(shared[shared["source"] == "published"].index) == list(both.index[-336:][key.to_numpy()])
  assert note.startswith("1 of the published study's 276") and "their 1 rows are drawn dashed" in note
  figs, _, table = dashboard.page_figures(both, "f1")
  assert len(table) == 1 and table["difference"].iloc[0] == pytest.approx(0.05)
  overlaid = {t.name: t for t in figs["by_arch"].data}
  assert set(overlaid) == {"cnn [here]", "mlp [here]", "ResNet50 [mine]", "ResNet50 [published]"}
  assert list(overlaid["ResNet50 [published]"].x) == ["10%"] and overlaid["ResNet50 [published]"].line.dash == "dash"
  assert overlaid["ResNet50 [published]"].y[0] == pytest.approx(float(pub[key]["f1"].iloc[0]))
  assert list(figs["published"].data[0].x) == pytest.approx(list(table["published_mean"]))


def test_the_app_shows_the_published_study_in_its_own_view_with_the_reason():
  pub = synthetic(20).assign(source="published", encoder="BEN")
  frame = dashboard.normalise(pd.concat([synthetic(20), pub], ignore_index=True))
  ids = _ids(dashboard.make_app(frame).layout)
  assert {"published-note", "published-view", "fig-pub-by_arch", "fig-pub-teacher", "fig-published",
          "published-table"} <= set(ids)
  alone = _ids(dashboard.make_app(synthetic(20)).layout)  # No published rows: no such view.
  assert "fig-pub-by_arch" not in alone and "published-table" not in alone


# ---- Adam vs SGD --------------------------------------------------------------------------------


def optimizer_frame(student=("adam",), encoder=("adam", "sgd")):
  rows = []
  for i, (enc, opt, split) in enumerate(itertools.product(encoder, student, (3, 10))):
    for seed in range(2):
      rows.append({"run_id": f"{enc}-{opt}-{split}-{seed}", "stage": "finetune", "arch": "cnn",
                   "encoder_optimizer": enc, "student_optimizer": opt, "split_percent": split,
                   "seed": seed, "f1": 0.5 + 0.1 * i + 0.01 * seed, "status": "ok", "source": "here"})
  rows.append({"run_id": "base", "stage": "baseline", "arch": "mlp", "encoder_optimizer": "",
               "student_optimizer": student[0], "split_percent": 3, "seed": 0, "f1": 0.3, "status": "ok",
               "source": "here"})
  return dashboard.normalise(pd.DataFrame(rows))


def test_adam_vs_sgd_draws_every_optimizer_and_says_when_there_is_one():
  frame = optimizer_frame()  # the encoders' optimizers differ, the students' do not
  fig = figures.optimizer_by_split(frame, "f1")
  lines = {t.name: (list(t.x), list(t.y)) for t in fig.data}
  assert set(lines) == {"encoder adam", "encoder sgd"}  # the baseline has no encoder
  expected = frame[frame["stage"] == "finetune"].assign(split=lambda f: f["split_percent"] + "%").groupby(
      ["encoder_optimizer", "split"])["f1"].mean()
  for optimizer in ("adam", "sgd"):
    assert lines[f"encoder {optimizer}"][1] == pytest.approx(
        [expected[(optimizer, "3%")], expected[(optimizer, "10%")]])
  assert fig.layout.title.text == "f1: Adam vs SGD (encoder optimizer)" and not fig.layout.annotations

  both = optimizer_frame(student=("adam", "sgd"))  # both differ: four lines, and the baseline's
  names = sorted(t.name for t in figures.optimizer_by_split(both, "f1").data)
  assert names == ["encoder (none) / student adam", "encoder adam / student adam",
                   "encoder adam / student sgd", "encoder sgd / student adam",
                   "encoder sgd / student sgd"]
  students = optimizer_frame(student=("adam", "sgd"), encoder=("adam",))
  assert {t.name for t in figures.optimizer_by_split(students, "f1").data} == {"student adam", "student sgd"}

  one = optimizer_frame(encoder=("adam",))  # only Adam anywhere: drawn, and said in the figure
  fig = figures.optimizer_by_split(one, "f1")
  assert fig.data and "one optimizer only" in fig.layout.title.text
  assert fig.layout.annotations[0].text.startswith("only adam in these rows")
  # The note sits above the plotting area (paper y 1, anchored at its bottom), not over the lines.
  assert fig.layout.annotations[0].y == 1 and fig.layout.annotations[0].yanchor == "bottom"
  none = figures.optimizer_by_split(one.assign(encoder_optimizer="", student_optimizer=""), "f1")
  assert not none.data and "no row names its optimizer" in none.layout.annotations[0].text


# ---- Saved predictions: PR, ROC, calibration, confusion ------------------------------------------


def test_prediction_summary_matches_scikit_learn():
  from sklearn.calibration import calibration_curve
  from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

  rng = np.random.default_rng(5)
  labels = rng.integers(0, 2, 500)
  probs = np.clip(labels * 0.3 + rng.uniform(size=500) * 0.7, 0, 1)
  summary = figures.prediction_summary(pd.DataFrame({"label": labels, "student_prob": probs}))
  fpr, tpr, _ = roc_curve(labels, probs)
  np.testing.assert_allclose(summary["roc"][0], figures._thin(fpr)[0])
  np.testing.assert_allclose(summary["roc"][1], figures._thin(tpr)[0])
  assert summary["auc"] == pytest.approx(roc_auc_score(labels, probs))
  assert summary["ap"] == pytest.approx(average_precision_score(labels, probs))
  observed, predicted = calibration_curve(labels, probs, n_bins=10)
  np.testing.assert_allclose(summary["calibration"][0], predicted)
  np.testing.assert_allclose(summary["calibration"][1], observed)
  assert sum(summary["calibration"][2]) == 500
  weights = np.asarray(summary["calibration"][2]) / 500
  assert summary["ece"] == pytest.approx(np.sum(weights * np.abs(observed - predicted)))
  assert summary["confusion"] == confusion_matrix(labels, probs > 0.5).tolist()
  assert len(summary["pr"][0]) <= figures.CURVE_POINTS and summary["pr"][0][0] == 0.0
  json.dumps(summary)  # the report carries it as is

  # Multiclass: confusion of the argmax, micro-averaged ROC, top-class calibration.
  logits = rng.normal(size=(300, 3)) + np.eye(3)[rng.integers(0, 3, 300)] * 2
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  labels = rng.integers(0, 3, 300)
  frame = pd.DataFrame({"label": labels, "student_pred": probs.argmax(1),
                        **{f"student_prob_{k}": probs[:, k] for k in range(3)}})
  summary = figures.prediction_summary(frame)
  assert summary["task"] == "multiclass" and summary["classes"] == ["0", "1", "2"]
  assert summary["confusion"] == confusion_matrix(labels, probs.argmax(1)).tolist()
  onehot = np.eye(3)[labels]
  assert summary["auc"] == pytest.approx(roc_auc_score(onehot.ravel(), probs.ravel()))
  observed, predicted = calibration_curve(probs.argmax(1) == labels, probs.max(1), n_bins=10)
  np.testing.assert_allclose(summary["calibration"][1], observed)


def write_run(root, run_id, labels, probs, history=True):
  """A run directory with saved predictions (and a training log); returns its checkpoint path."""
  directory = root / "runs" / run_id
  directory.mkdir(parents=True)
  pd.DataFrame({"id": [f"x{i}" for i in range(len(labels))], "label": labels,
                "student_prob": probs, "teacher_prob": np.nan}).to_parquet(directory / "predictions.parquet")
  if history:
    epochs = np.arange(4)
    pd.DataFrame({"epoch": epochs, "label_loss": 1 / (epochs + 1.0 + len(run_id) % 3),
                  "val_label_loss": 1.2 / (epochs + 1.0)}).to_csv(directory / "history.csv", index=False)
  return str(directory / "student.keras")


def test_run_figures_show_the_best_median_and_worst_when_the_best_are_perfect(tmp_path):
  rng = np.random.default_rng(2)
  labels = np.r_[np.zeros(20, int), np.ones(20, int)]
  rows = []
  for i in range(6):  # three perfect runs, then worse and worse ones
    noise = 0.0 if i < 3 else 0.25 * (i - 2)
    probs = np.clip(labels * 0.8 + 0.1 + rng.normal(0, noise, 40), 0, 1)
    f1 = 1.0 if i < 3 else 0.9 - 0.1 * i
    rows.append({"run_id": f"run-{i}", "stage": "distill", "arch": "mlp", "split_percent": 10,
                 "seed": i, "f1": f1, "status": "ok", "source": "here",
                 "checkpoint": write_run(tmp_path, f"run-{i}", labels, probs)})
  rows.append({**rows[0], "run_id": "no-files", "checkpoint": "", "f1": 1.0})
  frame = dashboard.normalise(pd.DataFrame(rows))
  figs = dashboard.run_figures(frame, "f1")
  names = [t.name for t in figs["pr"].data]
  assert [n.split(" (")[0] for n in names] == ["best", "median", "worst"]
  assert names[0].startswith("best (f1 1.000): distill mlp 10% s0")  # ties: in run id order
  assert names[1].startswith("median (f1 1.000): distill mlp 10% s2")  # 6 runs: the third
  assert names[2].startswith("worst (f1 0.400): distill mlp 10% s5")
  assert "2 of 3 runs perfect" in figs["pr"].layout.annotations[0].text
  assert "the best, median and worst of 6 finished runs" in figs["note"]
  auc = [t.name for t in figs["roc"].data]
  assert auc[0].endswith("(AUC 1.000)") and auc[-1] == "chance"
  assert [t.name for t in figs["calibration"].data][-1] == "calibrated"
  heat = figs["confusion"].data
  assert len(heat) == 3 and [list(r) for r in heat[0].text] == [[20, 0], [0, 20]]
  assert [list(r) for r in heat[0].z] == [[1.0, 0.0], [0.0, 1.0]] and list(heat[0].x) == ["0", "1"]
  worst = pd.read_parquet(tmp_path / "runs" / "run-5" / "predictions.parquet")
  from sklearn.metrics import confusion_matrix
  assert [list(r) for r in heat[2].text] == confusion_matrix(worst["label"], worst["student_prob"] > 0.5).tolist()
  curves = figs["curves"].data
  assert len(curves) == 6 and sum(t.showlegend for t in curves) == 3  # train + validation per run
  assert curves[0].line.color == curves[1].line.color != curves[2].line.color
  # Runs selected in the table are drawn instead, in their order.
  chosen = dashboard.run_figures(frame, "f1", ["run-4", "no-files", "run-1"])
  assert [t.name.split(": ")[1].split(" (")[0] for t in chosen["pr"].data] == [
      "distill mlp 10% s4", "distill mlp 10% s1"]
  assert chosen["note"] == "2 of the 3 runs selected in the table have saved predictions"
  nothing = dashboard.run_figures(frame[frame["run_id"] == "no-files"], "f1")
  assert not nothing["pr"].data and "no run among the filtered rows" in nothing["note"]


# ---- Layout: titles clear of the modebar, legends clear of the axes --------------------------------


def test_titles_start_below_the_modebar_and_legends_below_the_axes(tmp_path):
  long_names = [f"best (f1 0.9{i}): distill ResNet152 digits_adam expanded 100% s{i} teacher" for i in range(5)]
  assert figures.legend_rows(long_names) == 5 and figures.legend_rows(["a", "b", "c"]) == 1
  assert figures.wrap("a b c", 3) == ["a b", "c"] and figures.wrap("", 5) == [""]
  frame = optimizer_frame(encoder=("adam",))
  all_figures = list(dashboard.comparison_figures(frame, "f1").values())
  all_figures.append(figures.metric_by_split(frame, "f1", "stage", title="x " * 60))
  for fig in all_figures:
    title = fig.layout.title
    lines = title.text.count("<br>") + 1
    assert title.yref == "container" and title.yanchor == "top" and title.pad.t >= figures.MODEBAR_HEIGHT
    assert fig.layout.margin.t >= figures.MODEBAR_HEIGHT + 20 * lines
    assert all(len(line) <= figures.TITLE_CHARS for line in title.text.split("<br>"))
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0
    assert fig.layout.margin.b >= 50 + 20 * (figures.legend_rows(names) if names else 0)
    assert fig.layout.height >= fig.layout.margin.t + fig.layout.margin.b + 240


def test_the_dashboard_imports_and_draws_without_tensorflow(tmp_path):
  """The dashboard path (package, figures, the stage's step) runs where TensorFlow and Keras
  cannot be imported."""
  import subprocess
  import sys

  script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np, pandas as pd
from simclr_distill import dashboard
from simclr_distill.dashboard import figures
from simclr_distill.steps import dashboard as step
import stages.dashboard
summary = figures.prediction_summary(pd.DataFrame({{"label": [0, 1, 1], "student_prob": [0.2, 0.7, 0.4]}}))
frame = dashboard.normalise(pd.DataFrame({{"run_id": ["a"], "stage": ["distill"], "f1": [0.5],
                                           "split_percent": [3], "source": ["x"]}}))
dashboard.make_app(frame)
dashboard.export_report(frame, {str(tmp_path / "r.html")!r})
print("ok", summary["confusion"], "tensorflow" in sys.modules, "keras" in sys.modules)
"""
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["ok", "[[1,", "0],", "[1,", "1]]", "False", "False"]


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


def _grid_cells(driver, grid, column):
  """The texts of a dash-ag-grid column's cells on the grid's current page, in the order shown
  (`row-index`: AG Grid places rows by position, so their order in the DOM need not be it)."""
  return driver.execute_script(
      f"return [...document.querySelectorAll('#{grid} .ag-row')]"
      ".sort((a, b) => Number(a.getAttribute('row-index')) - Number(b.getAttribute('row-index')))"
      f".map(r => r.querySelector('.ag-cell[col-id=\"{column}\"]')).filter(c => c)"
      ".map(c => c.innerText.trim())")


SECTIONS = {"comparisons": "figures", "published": "published-section", "predictions": "runs-section"}


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
    before = browser.wait_for(lambda: _trace_names(driver, "by_stage"), 30, "the stage figure")
    # The paired comparisons, drawn with their intervals.
    intervals = browser.wait_for(lambda: _trace_names(driver, "intervals"), 30, "the intervals")
    assert set(intervals) <= {"interval excludes 0", "interval includes 0 (not resolved)"}
    # The digits reproduction shares no (stage, encoder, labelling, split, arch) with the
    # published study: the study is not on its axes but in a view of its own, and the page says why.
    assert "finetune" in before and "baseline" in before and not [n for n in before if "published" in n]
    if pub:
      note = driver.find_element(By.ID, "published-note").text
      assert "is not drawn on these axes" in note and "BEN, CA_adam, CA_sgd" in note
      own = browser.wait_for(lambda: _trace_names(driver, "pub-by_stage"), 30, "the study's own figures")
      assert sorted(own) == ["baseline", "distill", "finetune"]
    # Adam vs SGD: the smoke study pretrains with Adam only, and the figure says so.
    optimizer = browser.plotted(driver)["fig-by_optimizer"]
    assert "one optimizer only" in optimizer["title"] and optimizer["annotations"][0].startswith("only adam")
    # The predictions of the best, median and worst runs (the best are near perfect on 52 examples).
    runs = browser.wait_for(lambda: [n for n in _trace_names(driver, "roc") or [] if n != "chance"], 30, "ROC")
    assert [n.split(" ")[0] for n in runs] == ["best", "median", "worst"]
    for figure in ("pr", "calibration", "confusion"):
      assert len(_trace_names(driver, figure)) >= 3, figure
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_elements(driver, {f"dashboard-{name}.png": element for name, element in SECTIONS.items()
                                   if driver.find_elements(By.ID, element)}, ARTIFACTS)
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
    # The runs table is a dash-ag-grid: its cells follow the filter, paged 20 at a time.
    stage_cells = browser.wait_for(lambda: _grid_cells(driver, "table", "stage"), 30, "the grid")
    assert set(stage_cells) == {"distill"} and len(stage_cells) == min(distilled, 20)
    # The summary follows the filter: its groups are distilled ones and hold every finished run.
    frame, _ = dashboard.load_sources([workdir], [pub] if pub else [])
    finished = figures.finished(frame[frame["stage"] == "distill"])
    browser.wait_for(lambda: set(_grid_cells(driver, "summary-table", "stage")) == {"distill"}, 30,
                     "the summary to follow the filter")
    counts = _grid_cells(driver, "summary-table", "f1_count")
    assert len(counts) < 20 and sum(int(c) for c in counts) == finished["f1"].notna().sum()
    # Sorting by a header click: f1 descending after two clicks (ascending first).
    # Each click waits for the header's own sort state: the rows alone can look sorted before
    # the grid took a click (4 rows may already be in order), and a second click sent too
    # early lands on the wrong state.
    cell = '#table .ag-header-cell[col-id="f1"]'
    header = driver.find_element(By.CSS_SELECTOR, f"{cell} .ag-header-cell-label")

    def sorted_as(state):
      return driver.find_element(By.CSS_SELECTOR, cell).get_attribute("aria-sort") == state

    header.click()
    browser.wait_for(lambda: sorted_as("ascending"), 10, "the ascending sort")
    browser.wait_for(lambda: _grid_cells(driver, "table", "f1") == sorted(
        _grid_cells(driver, "table", "f1"), key=float), 10, "ascending f1")
    header.click()
    browser.wait_for(lambda: sorted_as("descending"), 10, "the descending sort")
    top = finished.sort_values("f1", ascending=False)["f1"].iloc[0]
    browser.wait_for(lambda: float(_grid_cells(driver, "table", "f1")[0]) == pytest.approx(top, abs=1e-4),
                     10, "descending f1")
    # Rows ticked in the grid are the runs drawn below (the best smoke run is on the first page).
    mine = finished[finished["source"] == workdir.name].sort_values("f1", ascending=False)
    row_id = f"{workdir.name}/{mine['run_id'].iloc[0]}"
    box = driver.find_element(By.CSS_SELECTOR, f'#table .ag-row[row-id="{row_id}"] input[type=checkbox]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    browser.wait_for(lambda: (_trace_names(driver, "pr") or [""])[0].startswith("selected"), 30, "the selection")
    assert len(_trace_names(driver, "pr")) == 1
    assert driver.find_element(By.ID, "runs-note").text.startswith("1 of the 1 runs selected")
    driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    driver.find_element(By.ID, "download-button").click()
    csv = browser.wait_for(lambda: list(tmp_path.glob("results_filtered*.csv")), 30, "the download")[0]
    browser.wait_for(lambda: len(pd.read_csv(csv)) == distilled, 10, "the whole CSV")
    assert set(pd.read_csv(csv)["stage"]) == {"distill"}
  assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
  assert (ARTIFACTS / "dashboard-predictions.png").stat().st_size > 10_000


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
    cells = driver.execute_script(
        "return [...document.querySelectorAll('#runs td[data-column=stage]')].map(td => td.innerText)")
    assert set(cells) == {"baseline"}
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    comparisons = pd.read_csv(workdir / "comparisons.csv")
    assert driver.execute_script("return document.getElementById('fig-intervals').data.length") >= 1
    shown = driver.execute_script(
        "return document.querySelectorAll('table.intervals tbody tr').length")
    assert shown == len(comparisons) > 0
    driver.save_screenshot(str(ARTIFACTS / "report.png"))
    Select(driver.find_element(By.ID, "filter-stage")).deselect_all()
    browser.wait_for(lambda: _count(driver) == f"{total} of {total} runs", 10, "no filter")
    if pub:
      assert "is not drawn on these axes" in driver.find_element(By.ID, "published-note").text
      assert sorted(_trace_names(driver, "pub-by_stage")) == ["baseline", "distill", "finetune"]
    assert [n.split(" ")[0] for n in _trace_names(driver, "roc")] == ["best", "median", "worst", "chance"]
    browser.save_elements(driver, {f"report-{name}.png": element for name, element in SECTIONS.items()
                                   if driver.find_elements(By.ID, element)}, ARTIFACTS)


# ---- The app and the static report draw the same numbers ---------------------------------------------


def comparison_study(root):
  """A small study with everything the figures draw: teachers with two seeds per teacher id
  (the students' teacher value is their mean), two encoder optimizers, students of two
  architectures, baselines, a failed run, perfect and imperfect saved predictions, training
  logs, and published rows of which one group matches a reproduced key."""
  rng = np.random.default_rng(11)
  labels = np.r_[np.zeros(30, int), np.ones(30, int)]
  rows = []

  def add(row, noise):
    run_id = f"{row['stage']}-{row['arch']}-{row.get('encoder', '')}-{row['split_percent']}-s{row['seed']}"
    probs = np.clip(labels * 0.8 + 0.1 + rng.normal(0, noise, len(labels)), 0, 1)
    rows.append({"run_id": run_id, "labeling": "basic", "status": "ok", "source": "study",
                 "student_optimizer": "adam", **row,
                 "checkpoint": write_run(root, run_id, labels, probs, history=noise != 0.3)})

  for enc, opt in (("enc_adam", "adam"), ("enc_sgd", "sgd")):
    for split in (3, 10):
      teacher = f"{enc}-basic-{split}"
      for seed in (0, 1):
        add({"stage": "finetune", "arch": "cnn", "model": enc, "encoder": enc, "encoder_optimizer": opt,
             "split_percent": split, "seed": seed, "teacher_id": teacher, "method": "finetune",
             "f1": rng.uniform(0.7, 0.95), "auc": rng.uniform(0.8, 0.99)}, 0.1 + 0.1 * seed)
        for arch in ("mlp", "cnn"):
          add({"stage": "distill", "arch": arch, "model": enc, "encoder": enc, "encoder_optimizer": opt,
               "split_percent": split, "seed": seed, "teacher_id": teacher, "method": "hard / offline",
               "f1": 1.0 if arch == "cnn" and split == 10 else rng.uniform(0.6, 0.9),
               "auc": rng.uniform(0.8, 0.99), "agreement": rng.uniform(0.8, 1.0),
               "teacher_f1": rng.uniform(0.7, 0.9)}, 0.0 if arch == "cnn" and split == 10 else 0.3)
  for split, seed in itertools.product((3, 10), (0, 1)):
    add({"stage": "baseline", "arch": "mlp", "split_percent": split, "seed": seed, "method": "supervised",
         "f1": rng.uniform(0.5, 0.8), "auc": rng.uniform(0.6, 0.9)}, 0.4)
  rows.append({**rows[1], "run_id": "failed", "status": "error", "f1": 0.0, "checkpoint": ""})
  for enc, f1 in (("enc_adam", 0.8), ("enc_adam", 0.84), ("BEN", 0.9), ("BEN", 0.7)):
    for split in (3, 10):
      rows.append({"run_id": f"published-{enc}-{split}-{f1}", "stage": "distill", "arch": "mlp",
                   "model": enc, "encoder": enc, "encoder_optimizer": "adam", "student_optimizer": "adam",
                   "labeling": "basic" if enc == "enc_adam" and split == 10 else "expanded",
                   "split_percent": split, "seed": 0, "f1": f1 + split / 100, "auc": 0.9,
                   "teacher_id": f"{enc}-basic-{split}", "status": "ok", "source": "published"})
  return dashboard.normalise(pd.DataFrame(rows))


def _same(a, b, where):
  """Two plotted values alike: numbers to 1e-9 (relative), text exactly, lists item by item."""
  if isinstance(a, list) and isinstance(b, list):
    assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} values"
    for i, (x, y) in enumerate(zip(a, b)):
      _same(x, y, f"{where}[{i}]")
  elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    assert b == pytest.approx(a, rel=1e-9, abs=1e-12), f"{where}: {a} vs {b}"
  else:
    assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_figures(app, report):
  """Every figure of the app is in the report with the same title, notes and traces (matched
  by name, in order within a name), and the same numbers in each."""
  assert sorted(app) == sorted(report)
  for figure, drawn in app.items():
    theirs = report[figure]
    assert drawn["title"] == theirs["title"], figure
    assert drawn["annotations"] == theirs["annotations"], figure
    assert sorted(t["name"] for t in drawn["traces"]) == sorted(t["name"] for t in theirs["traces"]), figure
    for i, trace in enumerate(drawn["traces"]):
      twin = [t for t in theirs["traces"] if t["name"] == trace["name"]][
          [t["name"] for t in drawn["traces"]][:i].count(trace["name"])]
      assert trace["type"] == twin["type"]
      for key in ("x", "y", "z", "text", "customdata", "error_y", "error_x"):
        _same(trace[key], twin[key], f"{figure} / {trace['name']} / {key}")


def _drawn(driver, ids, what):
  """The page's figures once every one of `ids` has a title and two reads a second apart agree
  (the app's callbacks answer one after another)."""
  import time

  def settled():
    first = browser.plotted(driver)
    if not all(first.get(i, {}).get("title") for i in ids):
      return None
    time.sleep(1.0)
    second = browser.plotted(driver)
    return second if second == first else None

  return browser.wait_for(settled, 60, what)


def _no_covered_titles_or_axes(driver, page):
  """No figure's title under its modebar, no legend over its plotting area or axis titles."""
  for figure, box in driver.execute_script(browser.BOXES_JS).items():
    assert box["title"] and box["modebar"], (page, figure, box)
    assert not browser.overlaps(box["title"], box["modebar"]), (page, figure, box)
    for part in ("plot", "xtitle", "xticks"):
      assert not browser.overlaps(box["legend"], box[part]), (page, figure, part, box)


def test_the_app_and_the_report_draw_the_same_numbers_in_every_figure(tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import Select

  frame = comparison_study(tmp_path)
  main, own = dashboard.figure_ids(frame)
  ids = [f"fig-{k}" for k in (*main, *own, "published", *dashboard.RUN_FIGURES)]
  report = dashboard.export_report(frame, tmp_path / "report.html")
  # The teacher of a student is the MEAN of its teacher id's finetune rows (two seeds).
  figs, note, _ = dashboard.page_figures(frame, "f1")
  finetune = frame[frame["stage"] == "finetune"]
  for trace in figs["teacher"].data[:-1]:
    for x, teacher in zip(trace.x, trace.text):
      assert x == pytest.approx(finetune[finetune["teacher_id"] == teacher]["f1"].mean())
  assert note.startswith("1 of the published study's 4")
  with browser.serving_app(dashboard.make_app(frame)) as url, browser.chromium() as driver:
    driver.get(url)
    app = _drawn(driver, ids, "the app's figures")
    assert {t["name"] for t in app["fig-by_optimizer"]["traces"]} == {
        "encoder adam [study]", "encoder sgd [study]", "encoder adam [published]"}  # the one matched group
    assert [t["name"].split(" ")[0] for t in app["fig-pr"]["traces"]] == ["best", "median", "worst"]
    app_notes = [driver.find_element(By.ID, i).text for i in ("published-note", "runs-note")]
    _no_covered_titles_or_axes(driver, "app")
    # The second metric: chosen in the app's dropdown.
    driver.find_element(By.ID, "metric").click()
    browser.wait_for(lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]")
                              if o.text.strip() == "auc"], 10, "the metric options")[0].click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    browser.wait_for(lambda: browser.plotted(driver)["fig-teacher"]["title"].endswith("(auc)"), 30, "auc")
    app_auc = _drawn(driver, ids, "the app's auc figures")
    driver.get(report.as_uri())
    mine = _drawn(driver, ids, "the report's figures")
    assert [driver.find_element(By.ID, i).text for i in ("published-note", "runs-note")] == app_notes
    _no_covered_titles_or_axes(driver, "report")
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    Select(driver.find_element(By.ID, "metric")).select_by_value("auc")
    mine_auc = _drawn(driver, ids, "the report's auc figures")
  assert_same_figures(app, mine)
  assert_same_figures(app_auc, mine_auc)
  # The figures differ between metrics (the comparison is not of two empty pages).
  assert app["fig-by_arch"]["traces"][0]["y"] != app_auc["fig-by_arch"]["traces"][0]["y"]


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
