"""Plotly figures of a results table (pure functions: a DataFrame in, a `go.Figure` out).

The dashboard, the static report and the notebooks all draw with these. Aggregates are over
the rows given (filter first): a point is the mean of the runs in its group, its error bar
their standard deviation (seeds, teachers or whatever else the group spans), and its hover
text says how many runs it averages.
"""

from __future__ import annotations

import pathlib
from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

METRICS = ("f1", "f0.5", "auc", "accuracy", "precision", "recall", "agreement", "teacher_kl",
           "last_f1", "seen_accuracy", "unseen_accuracy", "loss")
LOWER_IS_BETTER = ("teacher_kl", "loss")
_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=50, b=45), height=360,
               legend=dict(orientation="h", y=-0.2))


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
  fig.update_layout(title=title, **_LAYOUT)
  fig.add_annotation(text=why, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
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
  if stats.empty:
    return _empty(title, f"no finished run has a {metric}")
  stats["split"] = pd.to_numeric(stats["split_percent"], errors="coerce").astype(int)
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
        hovertemplate=f"{color}={name}<br>split %{{x}}<br>{metric} %{{y:.3f}} "
                      "+- %{error_y.array:.3f}<br>%{customdata} runs<extra></extra>"))
  fig.update_layout(title=title, xaxis_title="labelled data (split)", yaxis_title=metric, **_LAYOUT)
  fig.update_xaxes(type="category", categoryorder="array", categoryarray=[f"{s}%" for s in splits])
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
  best = stats.groupby("method")["mean"].mean().sort_values(ascending=metric in LOWER_IS_BETTER)
  fig = go.Figure()
  for stage, group in stats.groupby("stage", sort=True):
    fig.add_trace(go.Scatter(
        x=group["mean"], y=group["method"], mode="markers", name=str(stage) or "(none)",
        error_x=dict(type="data", array=group["std"], visible=True), customdata=group["count"],
        hovertemplate=f"%{{y}}<br>{metric} %{{x:.3f}} +- %{{error_x.array:.3f}}<br>"
                      "%{customdata} runs<extra>%{fullData.name}</extra>"))
  fig.update_layout(title=title, xaxis_title=metric, **{**_LAYOUT, "height": max(360, 150 + 30 * len(best))})
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
  fig.update_layout(title=title, xaxis_title=f"teacher {metric}", yaxis_title=f"student {metric}",
                    **_LAYOUT)
  return fig


def precision_recall(predictions: Mapping[str, pd.DataFrame]) -> go.Figure:
  """Precision-recall curves of binary runs from their saved test predictions."""
  title = "precision-recall on the test list"
  fig = go.Figure()
  for name, frame in predictions.items():
    if "student_prob" not in frame:
      continue
    precision, recall = pr_curve(frame["label"].to_numpy(), frame["student_prob"].to_numpy())
    fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=name, line_shape="hv"))
  if not fig.data:
    return _empty(title, "no saved binary predictions for the selected runs")
  fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision", **_LAYOUT)
  fig.update_xaxes(range=[0, 1.02])
  fig.update_yaxes(range=[0, 1.02])
  return fig


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Precision and recall at every distinct score threshold, highest threshold first."""
  order = np.argsort(-scores, kind="stable")
  labels, scores = labels[order].astype(float), scores[order]
  last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # last index of each threshold
  tp = np.cumsum(labels)[last]
  predicted = last + 1
  positives = max(labels.sum(), 1.0)
  return np.r_[1.0, tp / predicted], np.r_[0.0, tp / positives]


def training_curves(histories: Mapping[str, pd.DataFrame], metric: str = "loss") -> go.Figure:
  """Per-epoch `metric` (and its validation twin) of runs from their history.csv logs."""
  title = f"training curves ({metric})"
  fig = go.Figure()
  for name, history in histories.items():
    for column, dash in ((metric, "solid"), (f"val_{metric}", "dot")):
      if column in history:
        fig.add_trace(go.Scatter(x=history["epoch"] + 1, y=pd.to_numeric(history[column], errors="coerce"),
                                 mode="lines", name=f"{name} {column}", line=dict(dash=dash)))
  if not fig.data:
    return _empty(title, f"no training log with {metric} for the selected runs")
  fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=metric, **_LAYOUT)
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
  fig.update_layout(title=title, xaxis_title=f"published {metric}",
                    yaxis_title=f"reproduced {metric}", **_LAYOUT)
  return fig


def run_dir(row: Mapping) -> pathlib.Path | None:
  """The run directory of a results row (from its checkpoint path), if it exists."""
  checkpoint = row.get("checkpoint")
  if not isinstance(checkpoint, str) or not checkpoint:
    return None
  path = pathlib.Path(checkpoint).parent
  return path if path.is_dir() else None


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
    fig.update_layout(title="paired comparisons: none in the selected rows", **_LAYOUT)
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
  fig.update_layout(**{**_LAYOUT, "height": max(300, 28 * len(frame) + 120),
                       "margin": dict(l=20, r=20, t=50, b=45)},
                    title=f"paired differences A - B ({metric}) with "
                          f"{float(frame['confidence'].iloc[0]):.0%} bootstrap intervals",
                    xaxis_title="A - B", yaxis=dict(autorange="reversed", automargin=True))
  return fig
