"""Plotly figures of a results table (pure functions: a DataFrame in, a `go.Figure` out).

The dashboard, the static report and the notebooks all draw with these. Aggregates are over
the rows given (filter first): a point is the mean of the runs in its group, its error bar
their standard deviation (seeds, teachers or whatever else the group spans), and its hover
text says how many runs it averages.
"""

from __future__ import annotations

import decimal
import pathlib
from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

METRICS = ("f1", "f0.5", "auc", "accuracy", "precision", "recall", "agreement", "teacher_kl",
           "last_f1", "seen_accuracy", "unseen_accuracy", "loss")
LOWER_IS_BETTER = ("teacher_kl", "loss")
# Plotly's toolbar (the modebar) sits in a graph's top right corner, over the first ~32 px:
# titles start below it, so a long title is never hidden under the buttons.
MODEBAR_HEIGHT = 32
TITLE_CHARS = 58  # a title line's length in a 460 px wide graph, at 15 px
# The template's colours, in order: trace i of every run figure has colour i (its run's).
COLORWAY = ("#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692",
            "#B6E880", "#FF97FF", "#FECB52")
TEMPLATE = "plotly_white"
_LAYOUT = dict(template=TEMPLATE, margin=dict(l=50, r=20, t=MODEBAR_HEIGHT + 40, b=80),
               height=380, legend=dict(orientation="h", x=0.01, xanchor="left", xref="container",
                                       y=0, yanchor="bottom", yref="container"))


def fixed(value: float, digits: int = 3) -> str:
  """`value` with `digits` decimals as JavaScript's toFixed writes it (an exact tie goes to the
  larger magnitude), so a legend reads the same in the app and in the static report."""
  return str(decimal.Decimal(float(value)).quantize(decimal.Decimal(1).scaleb(-digits),
                                                    rounding=decimal.ROUND_HALF_UP))


def wrap(text: str, width: int = TITLE_CHARS) -> list[str]:
  """`text` broken at spaces into lines of at most `width` characters (a longer word stays
  whole)."""
  lines: list[str] = []
  for word in str(text).split(" "):
    if lines and len(lines[-1]) + 1 + len(word) <= width:
      lines[-1] += " " + word
    else:
      lines.append(word)
  return lines or [""]


def legend_rows(names, width: int = 430) -> int:
  """How many rows a horizontal legend of `names` takes in a graph `width` px wide (about 6.5
  px a character at plotly's 12 px, and 40 px for the symbol and gap of each entry)."""
  rows, used = 1, 0.0
  for name in names:
    entry = 40 + 6.5 * len(str(name))
    if used and used + entry > width:
      rows, used = rows + 1, 0.0
    used += entry
  return rows


def layout(title: str, height: int = 300, legend=(), title_chars: int = TITLE_CHARS, **more) -> dict:
  """The house layout of a figure: its title left-aligned below the modebar (wrapped, the top
  margin grown to fit) and its legend at the bottom of the figure, under the x axis title (the
  bottom margin grown by the legend's rows, so a legend of long names never covers the axes).

  Args:
    title: the figure's title.
    height: the height of the plotting area and its axes, in px.
    legend: the names the legend shows (counted into rows), or a number of rows.
    title_chars: the longest title line (a figure as wide as the page takes twice the default).
  """
  lines = wrap(title, title_chars)
  top = MODEBAR_HEIGHT + 20 * len(lines) + 12
  rows = legend if isinstance(legend, int) else (legend_rows(legend) if len(legend) else 0)
  bottom = 50 + 20 * rows + 8
  return {**_LAYOUT, "title": dict(text="<br>".join(lines), x=0.01, xanchor="left",
                                   xref="container", y=1, yanchor="top", yref="container",
                                   pad=dict(t=MODEBAR_HEIGHT), font=dict(size=15)),
          "height": height + top + bottom, "margin": dict(l=50, r=20, t=top, b=bottom), **more}


def finished(frame: pd.DataFrame) -> pd.DataFrame:
  """Rows of finished runs (status "ok"; rows without a status count as finished)."""
  if "status" not in frame:
    return frame
  return frame[frame["status"].fillna("ok") == "ok"]


def group_stats(frame: pd.DataFrame, keys, metric: str) -> pd.DataFrame:
  """Mean, std (0 for one run), count and standard error (std / sqrt(count)) of `metric` per
  group, with the keys as columns."""
  data = finished(frame)[list(keys) + [metric]].copy()
  data[metric] = pd.to_numeric(data[metric], errors="coerce")
  data = data.dropna(subset=[metric])
  stats = data.groupby(list(keys), dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
  stats["std"] = stats["std"].fillna(0.0)
  stats["se"] = stats["std"] / np.sqrt(stats["count"])
  return stats


def _empty(title: str, why: str) -> go.Figure:
  fig = go.Figure()
  fig.update_layout(**layout(title))
  fig.add_annotation(text="<br>".join(wrap(why, 70)), showarrow=False, xref="paper",
                     yref="paper", x=0.5, y=0.5)
  fig.update_xaxes(visible=False)
  fig.update_yaxes(visible=False)
  return fig


def metric_by_split(frame: pd.DataFrame, metric: str = "f1", color: str = "arch",
                    title: str | None = None) -> go.Figure:
  """`metric` against label split, one line per value of `color`, mean +- std over runs."""
  title = title or f"{metric} by label split and {color}"
  if frame.empty or metric not in frame or color not in frame:
    return _empty(title, "no rows match the filters")
  sources = "source" in frame and frame["source"].nunique() > 1
  keys = [color, "split_percent"] + (["source"] if sources else [])
  stats = group_stats(frame, keys, metric)
  stats["split"] = pd.to_numeric(stats["split_percent"], errors="coerce")
  stats = stats.dropna(subset=["split"])  # A row without a split has no place on this axis.
  if stats.empty:
    return _empty(title, f"no finished run has a {metric}")
  stats["split"] = stats["split"].astype(int)
  splits = sorted(stats["split"].unique())
  fig = go.Figure()
  for name, group in stats.groupby([color, "source"] if sources else [color], dropna=False, sort=True):
    group = group.sort_values("split")
    label = str(name[0]) or "(none)"
    if sources:  # Several sources (e.g. the published study and a reproduction): one line each.
      label = f"{label} [{name[1]}]"
    fig.add_trace(go.Scatter(
        x=[f"{s}%" for s in group["split"]], y=group["mean"],
        error_y=dict(type="data", array=group["std"], visible=True), mode="lines+markers",
        name=label, customdata=group["count"],
        line=dict(dash="dash") if sources and name[1] == "published" else None,
        hovertemplate=f"{color}={label}<br>split %{{x}}<br>{metric} %{{y:.3f}} "
                      "+- %{error_y.array:.3f}<br>%{customdata} runs<extra></extra>"))
  fig.update_layout(xaxis_title="labelled data (split)", yaxis_title=metric,
                    **layout(title, legend=[t.name for t in fig.data]))
  fig.update_xaxes(type="category", categoryorder="array", categoryarray=[f"{s}%" for s in splits])
  return fig


# The optimizers a row names: the pretrained encoder's (stage 1) and the student's or
# classifier's own; "Adam vs SGD" compares whichever of them differ between the rows.
OPTIMIZERS = (("encoder_optimizer", "encoder"), ("student_optimizer", "student"))


def optimizer_column(frame: pd.DataFrame, metric: str) -> tuple[pd.Series, list[str], str]:
  """The optimizer label of each row for the Adam vs SGD view, the optimizer columns it is
  made of, and a note when only one optimizer occurs.

  The label names the optimizer columns that take two or more values among the finished rows
  with a `metric` (e.g. "encoder sgd", or "encoder adam / student sgd" when both vary); rows
  with none of those columns set are left out (""). When no column varies, every row is
  labelled with the one optimizer it used and the note says so.
  """
  rows = finished(frame)
  scored = rows[pd.to_numeric(rows[metric], errors="coerce").notna()] if metric in rows else rows.iloc[:0]
  present = [(c, who) for c, who in OPTIMIZERS if c in scored
             and (scored[c].fillna("").astype(str) != "").any()]
  varying = [(c, who) for c, who in present
             if scored[c].fillna("").astype(str).replace("", np.nan).nunique() > 1]
  shown = varying or present
  if not shown:
    return pd.Series("", index=frame.index), [], "no row names its optimizer"
  values = {c: frame[c].fillna("").astype(str) for c, _ in shown}
  parts = [f"{who} " + values[c].replace("", "(none)") for c, who in shown]
  label = parts[0]
  for part in parts[1:]:
    label = label + " / " + part
  label = label.where(~np.logical_and.reduce([values[c] == "" for c, _ in shown]), "")
  if varying:
    return label, [c for c, _ in varying], ""
  used = sorted({f"{who} {v}" for c, who in present for v in scored[c].fillna("").astype(str) if v})
  only = sorted({v for c, _ in present for v in scored[c].fillna("").astype(str) if v})
  return label, [c for c, _ in shown], (f"only {' and '.join(only)} in these rows "
                                        f"({', '.join(used)}): no other optimizer to compare")


def optimizer_by_split(frame: pd.DataFrame, metric: str = "f1",
                       title: str | None = None) -> go.Figure:
  """Adam vs SGD: `metric` against label split, one line per optimizer (the encoder's, the
  student's, or both, whichever differ between the rows: `optimizer_column`); a note in the
  figure when the rows hold only one optimizer."""
  title = title or f"{metric}: Adam vs SGD"
  if frame.empty or metric not in frame:
    return _empty(title, "no rows match the filters")
  label, columns, note = optimizer_column(frame, metric)
  if not columns:
    return _empty(title, note)
  names = " and ".join(c.split("_")[0] for c in columns)
  rows = frame.assign(optimizer=label)
  rows = rows[rows["optimizer"] != ""]
  fig = metric_by_split(rows, metric, "optimizer",
                        title=f"{title} ({names} optimizer)" if not note else f"{title}: one optimizer only")
  if note and fig.data:  # Above the plotting area, which grows down to make room.
    lines = wrap(note, 70)
    fig.add_annotation(text="<br>".join(lines), showarrow=False, xref="paper", yref="paper",
                       x=0, xanchor="left", y=1.0, yanchor="bottom", yshift=4, align="left",
                       bgcolor="rgba(255, 243, 205, 0.9)", bordercolor="#a15c00")
    fig.update_layout(margin_t=fig.layout.margin.t + 20 * len(lines) + 8,
                      height=fig.layout.height + 20 * len(lines) + 8)
  return fig


def metric_by_method(frame: pd.DataFrame, metric: str = "f1") -> go.Figure:
  """Mean +- std of `metric` per teaching method (rows without a method left out), one colour
  per stage, methods ordered best first."""
  title = f"{metric} by method"
  if frame.empty or metric not in frame or "method" not in frame:
    return _empty(title, "no rows match the filters")
  stats = group_stats(frame[frame["method"].fillna("") != ""], ["stage", "method"], metric)
  if stats.empty:
    return _empty(title, f"no finished run with a method has a {metric}")
  best = stats.groupby("method")["mean"].mean().sort_values(ascending=metric in LOWER_IS_BETTER,
                                                            kind="stable")  # ties: by name
  fig = go.Figure()
  for stage, group in stats.groupby("stage", sort=True):
    fig.add_trace(go.Scatter(
        x=group["mean"], y=group["method"], mode="markers", name=str(stage) or "(none)",
        error_x=dict(type="data", array=group["std"], visible=True), customdata=group["count"],
        hovertemplate=f"%{{y}}<br>{metric} %{{x:.3f}} +- %{{error_x.array:.3f}}<br>"
                      "%{customdata} runs<extra>%{fullData.name}</extra>"))
  fig.update_layout(xaxis_title=metric, **layout(title, height=max(240, 40 + 30 * len(best)),
                                                  legend=[t.name for t in fig.data]))
  # Best at the top: plotly draws the first category at the bottom.
  fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(best.index[::-1]),
                   automargin=True)
  return fig


def teacher_vs_students(frame: pd.DataFrame, metric: str = "f1") -> go.Figure:
  """Each distilled student's `metric` against its teacher's (the finetune row of the same
  teacher id when present, else the teacher's F1 on the student's test list)."""
  title = f"students vs their teacher ({metric})"
  students = finished(frame)
  students = students[students.get("stage", pd.Series(dtype=str)) == "distill"]
  if students.empty:
    return _empty(title, "no distilled students among the filtered rows")
  teachers = finished(frame)
  teachers = teachers[(teachers["stage"] == "finetune") & (teachers["teacher_id"].fillna("") != "")]
  value = teachers.groupby("teacher_id")[metric].mean() if metric in teachers else pd.Series(dtype=float)
  x = students["teacher_id"].map(value)
  if metric == "f1" and "teacher_f1" in students:
    x = x.fillna(pd.to_numeric(students["teacher_f1"], errors="coerce"))
  y = pd.to_numeric(students[metric], errors="coerce")
  keep = x.notna() & y.notna()
  if not keep.any():
    return _empty(title, f"no student has a teacher {metric} (filter in the finetune rows)")
  fig = go.Figure()
  for arch, rows in students[keep].groupby("arch"):
    fig.add_trace(go.Scatter(x=x[rows.index], y=y[rows.index], mode="markers", name=str(arch),
                             text=rows["teacher_id"], hovertemplate="teacher %{text}<br>teacher "
                             f"{metric} %{{x:.3f}}<br>student {metric} %{{y:.3f}}<extra>%{{fullData.name}}</extra>"))
  low = float(min(x[keep].min(), y[keep].min()))
  fig.add_trace(go.Scatter(x=[low, 1], y=[low, 1], mode="lines", name="student = teacher",
                           line=dict(dash="dot", color="grey")))
  fig.update_layout(xaxis_title=f"teacher {metric}", yaxis_title=f"student {metric}",
                    **layout(title, legend=[t.name for t in fig.data]))
  return fig


# ---- Saved predictions: one run's numbers, then figures over a few runs --------------------------

# White to dark blue, written out: plotly.js's own "Blues" is another scale (dark blue to grey)
# than plotly.py's, and the static report draws with plotly.js.
SHARE_COLORS = [[0.0, "#f7fbff"], [0.5, "#6baed6"], [1.0, "#08306b"]]
CALIBRATION_BINS = 10  # equal-width confidence bins, as sklearn's calibration_curve
CURVE_POINTS = 400  # longer PR and ROC curves are thinned (evenly, both ends kept)


def _thin(*arrays: np.ndarray) -> list[list[float]]:
  """The arrays (of one curve) as lists, at most `CURVE_POINTS` evenly spaced points of them."""
  n = len(arrays[0])
  keep = (np.unique(np.linspace(0, n - 1, CURVE_POINTS).round().astype(int)) if n > CURVE_POINTS
          else slice(None))
  return [np.asarray(a, dtype=float)[keep].tolist() for a in arrays]


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Precision and recall at every distinct score threshold, highest threshold first."""
  order = np.argsort(-scores, kind="stable")
  labels, scores = labels[order].astype(float), scores[order]
  last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # last index of each threshold
  tp = np.cumsum(labels)[last]
  predicted = last + 1
  positives = max(labels.sum(), 1.0)
  return np.r_[1.0, tp / predicted], np.r_[0.0, tp / positives]


def calibration_bins(labels: np.ndarray, confidence: np.ndarray,
                     bins: int = CALIBRATION_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reliability diagram: per non-empty equal-width bin of `confidence`, its mean confidence,
  the fraction of `labels` that are 1 in it, and its count (sklearn's `calibration_curve` with
  `strategy="uniform"`, plus the counts)."""
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.searchsorted(edges[1:-1], confidence)
  count = np.bincount(which, minlength=bins)
  total = np.bincount(which, weights=confidence, minlength=bins)
  positive = np.bincount(which, weights=labels.astype(float), minlength=bins)
  used = count > 0
  return total[used] / count[used], positive[used] / count[used], count[used]


def prediction_summary(frame: pd.DataFrame) -> dict:
  """The numbers the run figures draw, from a run's saved test predictions (the frame of its
  `predictions.parquet`: `label` and `student_prob`, or `student_prob_<k>` for multiclass).

  Returns a dict (JSON-ready: the static report carries it as is) with `task`, `examples`,
  `classes`; `confusion` (counts, rows the true class, columns the predicted one, predicted as
  `stats.load_predictions_frame` does); `pr` ([recall, precision]) and `ap` (average
  precision); `roc` ([false positive rate, true positive rate], or None with one class only)
  and `auc`; `calibration` ([mean confidence, observed frequency, count] per bin) and `ece`
  (expected calibration error). Binary runs score the positive class's probability;
  multiclass ones are micro-averaged one-vs-rest for PR and ROC, and calibrate the top
  class's confidence against accuracy.
  """
  from sklearn import metrics as skm

  from simclr_distill import stats

  frame = stats.load_predictions_frame(frame)
  labels = frame["label"].to_numpy().astype(int)
  predicted = frame["predicted"].to_numpy().astype(int)
  columns = sorted((c for c in frame.columns if c.startswith("student_prob_")),
                   key=lambda c: int(c.rsplit("_", 1)[1]))
  if "student_prob" in frame:
    task, classes = "binary", [0, 1]
    truth, scores = labels, frame["student_prob"].to_numpy().astype(float)
    confidence, correct = scores, labels  # P(positive) against how often it is positive
  else:
    task, classes = "multiclass", list(range(len(columns)))
    probs = frame[columns].to_numpy().astype(float)
    truth = (labels[:, None] == np.arange(len(columns))[None, :]).astype(int).ravel()
    scores = probs.ravel()
    confidence, correct = probs.max(1), (predicted == labels).astype(int)
  confusion = skm.confusion_matrix(labels, predicted, labels=classes)
  precision, recall = pr_curve(truth, scores)
  out = {"task": task, "examples": int(len(frame)), "classes": [str(c) for c in classes],
         "confusion": confusion.tolist(), "pr": _thin(recall, precision),
         "ap": float(skm.average_precision_score(truth, scores)) if truth.any() else None,
         "roc": None, "auc": None}
  if 0 < truth.sum() < len(truth):
    fpr, tpr, _ = skm.roc_curve(truth, scores)
    out["roc"], out["auc"] = _thin(fpr, tpr), float(skm.roc_auc_score(truth, scores))
  mean, observed, count = calibration_bins(correct, confidence)
  out["calibration"] = [mean.tolist(), observed.tolist(), count.tolist()]
  out["ece"] = float(np.sum(count / count.sum() * np.abs(observed - mean)))
  return out


def _summaries(runs: Mapping[str, pd.DataFrame | dict]) -> dict[str, dict]:
  """Each run's `prediction_summary` (runs given as predictions frames or summaries)."""
  return {name: value if isinstance(value, dict) else prediction_summary(value)
          for name, value in runs.items()}


def _hover_id(summary: dict, name: str) -> str:
  return summary.get("run_id") or name


def precision_recall(predictions: Mapping[str, pd.DataFrame | dict]) -> go.Figure:
  """Precision-recall curves of runs from their saved test predictions (frames, or their
  `prediction_summary`), each named with its average precision; a note when a run is perfect
  (its curve runs along the top edge: precision 1 at every recall)."""
  title = "precision-recall on the test list"
  runs = _summaries(predictions)
  fig = go.Figure()
  perfect = []
  for name, run in runs.items():
    recall, precision = run["pr"]
    if run["ap"] is not None and run["ap"] >= 1 - 1e-12:
      perfect.append(name)
    fig.add_trace(go.Scatter(
        x=recall, y=precision, mode="lines", line_shape="hv", name=f"{name} (AP {fixed(run['ap'])})"
        if run["ap"] is not None else name, hovertext=_hover_id(run, name),
        hovertemplate="%{hovertext}<br>recall %{x:.3f}<br>precision %{y:.3f}<extra></extra>"))
  if not fig.data:
    return _empty(title, "no saved predictions for these runs")
  micro = any(r["task"] == "multiclass" for r in runs.values())
  fig.update_layout(xaxis_title="recall" + (" (micro-average)" if micro else ""),
                    yaxis_title="precision", **layout(title, legend=[t.name for t in fig.data]))
  fig.update_xaxes(range=[-0.02, 1.02])
  fig.update_yaxes(range=[-0.02, 1.06])
  if perfect:
    fig.add_annotation(text=f"{len(perfect)} of {len(runs)} runs perfect: precision 1 at every "
                       "recall (the line along the top)", showarrow=False, xref="paper",
                       yref="paper", x=0.02, y=0.04, xanchor="left", yanchor="bottom",
                       bgcolor="rgba(255, 255, 255, 0.85)")
  return fig


def roc_curves(predictions: Mapping[str, pd.DataFrame | dict]) -> go.Figure:
  """ROC curves (true against false positive rate) of runs from their saved test
  predictions, each named with its area under the curve, and the chance diagonal."""
  title = "ROC on the test list"
  runs = _summaries(predictions)
  fig = go.Figure()
  for name, run in runs.items():
    if run["roc"] is None:
      continue
    fpr, tpr = run["roc"]
    fig.add_trace(go.Scatter(
        x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {fixed(run['auc'])})",
        hovertext=_hover_id(run, name),
        hovertemplate="%{hovertext}<br>false positive rate %{x:.3f}<br>true positive rate "
                      "%{y:.3f}<extra></extra>"))
  if not fig.data:
    return _empty(title, "no saved predictions with both classes for these runs")
  return _on_unit_square(fig, title, "chance", "false positive rate", "true positive rate")


def _on_unit_square(fig: go.Figure, title: str, diagonal: str, xaxis: str,
                    yaxis: str) -> go.Figure:
  """`fig` (curves of runs, in [0, 1] on both axes) with the dotted diagonal named `diagonal`,
  its axis titles and the shared layout."""
  fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=diagonal,
                           line=dict(dash="dot", color="grey")))
  fig.update_layout(xaxis_title=xaxis, yaxis_title=yaxis,
                    **layout(title, legend=[t.name for t in fig.data]))
  fig.update_xaxes(range=[-0.02, 1.02])
  fig.update_yaxes(range=[-0.02, 1.02])
  return fig


def calibration(predictions: Mapping[str, pd.DataFrame | dict]) -> go.Figure:
  """Reliability diagram of runs from their saved test predictions: per confidence bin, the
  observed frequency against the mean predicted probability (the diagonal is perfect
  calibration), each run named with its expected calibration error."""
  title = f"calibration on the test list ({CALIBRATION_BINS} bins)"
  runs = _summaries(predictions)
  fig = go.Figure()
  multiclass = False
  for name, run in runs.items():
    mean, observed, count = run["calibration"]
    multiclass |= run["task"] == "multiclass"
    fig.add_trace(go.Scatter(
        x=mean, y=observed, mode="lines+markers", name=f"{name} (ECE {fixed(run['ece'])})",
        customdata=count, hovertext=[_hover_id(run, name)] * len(mean),
        hovertemplate="%{hovertext}<br>predicted %{x:.3f}<br>observed %{y:.3f}<br>"
                      "%{customdata} examples<extra></extra>"))
  if not fig.data:
    return _empty(title, "no saved predictions for these runs")
  return _on_unit_square(
      fig, title, "calibrated",
      "top-class confidence" if multiclass else "predicted probability of class 1",
      "accuracy" if multiclass else "observed fraction of class 1")


def confusion_matrices(predictions: Mapping[str, pd.DataFrame | dict], limit: int = 4) -> go.Figure:
  """The confusion matrix of each of up to `limit` runs, side by side: counts in the cells,
  colour the fraction of the true class (row), so classes of different sizes compare."""
  title = "confusion matrices on the test list (colour: share of the true class)"
  runs = list(_summaries(predictions).items())[:limit]
  if not runs:
    return _empty(title, "no saved predictions for these runs")
  fig = go.Figure()
  n = len(runs)
  gap = 0.06 if n > 1 else 0.0
  for i, (name, run) in enumerate(runs):
    counts = np.asarray(run["confusion"], dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    suffix = "" if i == 0 else str(i + 1)
    classes = run["classes"]
    fig.add_trace(go.Heatmap(
        z=share.tolist(), x=classes, y=classes, text=counts.astype(int).tolist(),
        texttemplate="%{text}", zmin=0, zmax=1, colorscale=SHARE_COLORS, showscale=i == n - 1,
        colorbar=dict(title="share", len=0.8), name=name, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
        hovertemplate=f"{_hover_id(run, name)}<br>true %{{y}}, predicted %{{x}}<br>"
                      "%{text} examples (%{z:.1%} of the true class)<extra></extra>"))
    domain = [i / n + gap / 2, (i + 1) / n - gap / 2]
    fig.update_layout({f"xaxis{suffix}": dict(domain=domain, type="category", title="predicted",
                                               anchor=f"y{suffix}"),
                       f"yaxis{suffix}": dict(type="category", autorange="reversed",
                                              anchor=f"x{suffix}",
                                              title="true" if i == 0 else None)})
    fig.add_annotation(text="<br>".join(wrap(name, max(14, 60 // n))), showarrow=False,
                       xref="paper", yref="paper", x=(domain[0] + domain[1]) / 2, y=1.0,
                       yanchor="bottom", font=dict(size=11))
  style = layout(title, legend=0)
  # Room for the panels' names (11 px lines) between the title and the matrices.
  names = 14 * max(len(wrap(name, max(14, 60 // n))) for name, _ in runs) + 8
  style["margin"]["t"] += names
  style["height"] += names
  fig.update_layout(**style)
  return fig


def training_curves(histories: Mapping[str, pd.DataFrame], metric: str = "loss") -> go.Figure:
  """Per-epoch `metric` (solid) and its validation twin (dotted, same colour) of runs from
  their history.csv logs; one legend entry per run."""
  title = f"training curves ({metric}; dotted: validation)"
  fig = go.Figure()
  colors = COLORWAY
  for i, (name, history) in enumerate(histories.items()):
    color = colors[i % len(colors)]
    for column, dash in ((metric, "solid"), (f"val_{metric}", "dot")):
      if column in history:
        shown = not any(t.legendgroup == name for t in fig.data)
        fig.add_trace(go.Scatter(x=history["epoch"] + 1, y=pd.to_numeric(history[column], errors="coerce"),
                                 mode="lines", name=name, legendgroup=name, showlegend=shown,
                                 line=dict(dash=dash, color=color), hovertext=column,
                                 hovertemplate=f"{name}<br>%{{hovertext}} epoch %{{x}}: %{{y:.4f}}"
                                               "<extra></extra>"))
  if not fig.data:
    return _empty(title, f"no training log with {metric} for these runs")
  fig.update_layout(xaxis_title="epoch", yaxis_title=metric,
                    **layout(title, legend=[t.name for t in fig.data if t.showlegend]))
  return fig


def published_vs_reproduced(comparison: pd.DataFrame, metric: str = "f1") -> go.Figure:
  """Reproduced against published means per (stage, encoder, labelling, split, architecture)."""
  title = f"published vs reproduced {metric}"
  both = comparison.dropna(subset=["published_mean", "reproduced_mean"])
  if both.empty:
    return _empty(title, "no (stage, encoder, labelling, split, architecture) is in both")
  fig = go.Figure(go.Scatter(
      x=both["published_mean"], y=both["reproduced_mean"], mode="markers",
      error_y=dict(type="data", array=both["reproduced_std"].fillna(0), visible=True),
      text=both["stage"] + " " + both["encoder"] + " " + both["labeling"] + " "
      + both["split_percent"].astype(str) + "% " + both["arch"], name="groups",
      hovertemplate="%{text}<br>published %{x:.3f}<br>reproduced %{y:.3f}<extra></extra>"))
  fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="equal",
                           line=dict(dash="dot", color="grey")))
  fig.update_layout(xaxis_title=f"published {metric}", yaxis_title=f"reproduced {metric}",
                    **layout(title, legend=[t.name for t in fig.data]))
  return fig


def run_dir(row: Mapping) -> pathlib.Path | None:
  """The run directory of a results row (from its checkpoint path), if it exists."""
  checkpoint = row.get("checkpoint")
  if not isinstance(checkpoint, str) or not checkpoint:
    return None
  path = pathlib.Path(checkpoint).parent
  return path if path.is_dir() else None


def runs_with_file(frame: pd.DataFrame, name: str) -> set[str]:
  """The run ids of `frame` whose run directory holds `name` (e.g. predictions.parquet)."""
  out = set()
  for run_id, checkpoint in zip(frame["run_id"], frame["checkpoint"]) if "checkpoint" in frame else ():
    directory = run_dir({"checkpoint": checkpoint})
    if directory is not None and (directory / name).is_file():
      out.add(run_id)
  return out


def load_run_files(frame: pd.DataFrame, name: str, limit: int = 8) -> dict[str, pd.DataFrame]:
  """Reads `name` (predictions.parquet or history.csv) of up to `limit` runs of `frame`."""
  out = {}
  for row in frame.head(limit * 4).to_dict("records"):
    directory = run_dir(row)
    if directory is None or not (directory / name).is_file():
      continue
    path = directory / name
    out[row["run_id"]] = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if len(out) == limit:
      break
  return out


def comparison_intervals(comparisons: pd.DataFrame) -> go.Figure:
  """The study's paired comparisons (`stats.study_comparisons` rows) as a forest plot: each
  difference A - B with its interval, a line at zero, coloured by whether the interval
  excludes zero (a difference the test examples and seeds can resolve)."""
  fig = go.Figure()
  if comparisons.empty:
    fig.update_layout(**layout("paired comparisons: none in the selected rows"))
    return fig
  frame = comparisons.reset_index(drop=True)
  labels = [f"{r.labeling} {int(r.split_percent)}% | {r.question}: {r.a} vs {r.b}"
            + (f" [{r.source}]" if "source" in frame and isinstance(getattr(r, "source", None), str)
               and r.source else "")
            for r in frame.itertuples()]
  resolved = frame["excludes_zero"].astype(str).str.lower() == "true"
  for flag, name, color in ((True, "interval excludes 0", "#1f77b4"),
                            (False, "interval includes 0 (not resolved)", "#999999")):
    part = frame[resolved == flag]
    if part.empty:
      continue
    fig.add_trace(go.Scatter(
        x=part["difference"], y=[labels[i] for i in part.index], mode="markers", name=name,
        marker=dict(color=color, size=8),
        error_x=dict(type="data", symmetric=False, array=part["high"] - part["difference"],
                     arrayminus=part["difference"] - part["low"], color=color),
        customdata=np.stack([part["mean_a"], part["mean_b"], part["low"], part["high"],
                             part["examples"], part["runs_a"], part["runs_b"]], axis=1),
        hovertemplate=("A - B = %{x:+.3f} [%{customdata[2]:+.3f}, %{customdata[3]:+.3f}]<br>"
                       "A %{customdata[0]:.3f}, B %{customdata[1]:.3f}; %{customdata[4]} "
                       "examples, %{customdata[5]}:%{customdata[6]} runs<extra></extra>")))
  fig.add_vline(x=0, line_dash="dash", line_color="#444")
  metric = ", ".join(sorted(frame["metric"].astype(str).unique()))
  style = layout(f"paired differences A - B ({metric}) with "
                 f"{float(frame['confidence'].iloc[0]):.0%} bootstrap intervals",
                 height=max(180, 28 * len(frame)), legend=[t.name for t in fig.data],
                 title_chars=2 * TITLE_CHARS)  # as wide as the page
  style["margin"]["l"] = 20  # The labels' own width comes from automargin.
  fig.update_layout(**style, xaxis_title="A - B", yaxis=dict(autorange="reversed", automargin=True))
  return fig
