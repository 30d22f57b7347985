"""The results dashboard: a Dash app over one or more results tables, and its static export.

Sources are workdirs (their row files), table files (.parquet/.csv) and the study's published
CSVs (`published.py`); each row keeps its `source`. Every categorical column with a value
(experiment axes such as the teaching method, generation or temperature included) gets a
multi-select filter and every metric a range; the figures, the seed summary (mean, std, count
and standard error per group of runs), the table and the CSV download all follow the filters.
`export_report` writes the same figures and tables as one self-contained HTML file whose
filters run in the browser (plotly.js and the rows are inlined).
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from simclr_distill import results
from simclr_distill.dashboard import figures, published

log = logging.getLogger(__name__)

CATEGORICAL = ("source", "stage", "protocol", "model", "encoder_optimizer", "student_optimizer",
               "labeling", "split_percent", "arch", "teacher_id", "seed", "loss_kind", "init",
               "freeze", "method", "teacher_mode", "generation", "augment", "schedule", "select",
               "student_classes", "ensemble_combine", "temperature", "alpha", "learning_rate",
               "mixup", "max_epochs")
# Categorical columns whose values are numbers: shown as "4", "0.001", sorted numerically (sweep
# axes such as the temperature take a few discrete values, so they filter like categories).
NUMBER_AXES = ("split_percent", "seed", "generation", "student_classes", "temperature", "alpha",
               "learning_rate", "mixup", "max_epochs")
NUMERIC = ("f1", "f0.5", "auc", "accuracy", "precision", "recall", "agreement", "teacher_kl",
           "last_f1", "seen_accuracy", "unseen_accuracy", "epochs_run", "wall_seconds")
TABLE_COLUMNS = ("source", "stage", "method", "teacher_mode", "generation", "temperature", "model",
                 "labeling", "split_percent", "arch", "student_optimizer", "seed", "teacher_id",
                 "protocol", "loss_kind", "f1", "f0.5", "auc", "accuracy", "precision", "recall",
                 "agreement", "teacher_kl", "teacher_f1", "epochs_run", "run_id")
SUMMARY_METRICS = ("agreement",)  # summarised beside the chosen metric
COMPARISONS = (  # (figure id, title, colour column, stages kept)
    ("by_arch", "by architecture", "arch", None),
    ("by_optimizer", "Adam vs SGD", "student_optimizer", None),
    ("by_scheme", "basic vs expanded labels", "labeling", None),
    ("by_stage", "distilled vs supervised baseline (and teachers)", "stage", None),
)


# ---- Loading ----------------------------------------------------------------------------------


def load_comparisons(paths: Sequence[str | pathlib.Path]) -> tuple[pd.DataFrame, list[str]]:
  """The paired comparisons of every workdir among `paths` (its `comparisons.csv`, written by
  the study, or computed from its runs' saved predictions), with a `source` column; and
  messages about workdirs whose comparisons could not be made."""
  from simclr_distill import stats

  frames, messages = [], []
  for path in map(pathlib.Path, paths):
    if not path.is_dir():
      continue  # A results table holds no predictions to resample.
    try:
      saved = path / stats.COMPARISONS_CSV
      if saved.is_file() and saved.stat().st_mtime >= max(
          (p.stat().st_mtime for p in path.glob(f"{results.RUNS}/*/{results.ROW_FILE}")), default=0):
        frame = pd.read_csv(saved)
      else:  # Older than some row (or missing): answered again from the saved predictions.
        frame = stats.study_comparisons(results.read_rows([path]), stats.workdir_reader(path))
    except (FileNotFoundError, ValueError, OSError) as e:
      messages.append(f"no paired comparisons for {path}: {e}")
      continue
    frames.append(frame.assign(source=path.name))
  frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
      columns=[*stats.COLUMNS, "source"])
  return frame, messages


def filter_comparisons(comparisons: pd.DataFrame, selections: dict | None) -> pd.DataFrame:
  """The comparisons of the selected sources, labelling schemes and splits."""
  out = comparisons
  for column in ("source", "labeling", "split_percent"):
    chosen = (selections or {}).get(column)
    if chosen and column in out:
      out = out[out[column].astype(object).map(_number_text).isin([str(c) for c in chosen])]
  return out


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
  """The comparisons as the dashboard's table shows them (rounded, interval as text)."""
  if comparisons.empty:
    return pd.DataFrame(columns=["labeling", "split_percent", "question", "a", "b", "metric",
                                 "mean_a", "mean_b", "difference", "interval", "excludes_zero",
                                 "examples", "runs", "pairing"])
  shown = comparisons.copy()
  shown["interval"] = [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(shown["low"], shown["high"])]
  shown["runs"] = [f"{a}:{b}" for a, b in zip(shown["runs_a"], shown["runs_b"])]
  shown["excludes_zero"] = shown["excludes_zero"].astype(str).str.lower().map(
      {"true": "yes", "false": "no"})
  columns = [c for c in ("source", "labeling", "split_percent", "question", "a", "b", "metric",
                         "mean_a", "mean_b", "difference", "interval", "excludes_zero",
                         "examples", "runs", "pairing") if c in shown]
  return shown[columns].round(4)


def load_sources(paths: Sequence[str | pathlib.Path] = (),
                 published_paths: Sequence[str | pathlib.Path] = ()) -> tuple[pd.DataFrame, list[str]]:
  """All rows of the given sources in one frame, and messages about what was odd in them.

  Rows from a newer schema than this code, unreadable paths and missing columns become
  messages (shown above the dashboard), not exceptions.
  """
  frames, messages = [], []
  for path in map(pathlib.Path, paths):
    try:
      frame = results.load_table([path])
    except (FileNotFoundError, ValueError, OSError) as e:
      messages.append(f"skipped {path}: {e}")
      continue
    missing = [c for c in results.COLUMNS if c not in frame.columns]
    if missing:
      messages.append(f"{path}: older or foreign table without column(s) {', '.join(missing)}; "
                      "shown empty")
    version = pd.to_numeric(frame.get("schema_version", pd.Series(dtype=float)), errors="coerce")
    if (version > results.SCHEMA_VERSION).any():
      messages.append(f"{path}: {int((version > results.SCHEMA_VERSION).sum())} rows of a newer "
                      "results schema; upgrade simclr_distill to read them fully")
    frame = frame.copy()
    frame["source"] = path.name if path.is_dir() else path.stem
    frames.append(frame)
  if published_paths:
    try:
      frames.append(published.load_published(published_paths))
    except (FileNotFoundError, ValueError, OSError) as e:
      messages.append(f"published tables not loaded: {e}")
  frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
  frame = normalise(frame)
  if frame.empty:
    messages.append("no results rows: give a workdir with finished runs, a results table, or "
                    "--published")
  return frame, messages


def _number_text(value) -> str:
  """4.0 -> "4", 0.001 -> "0.001"; text that is not a number stays as it is."""
  if pd.api.types.is_scalar(value) and pd.isna(value):
    return ""
  try:
    number = float(value)
  except (TypeError, ValueError):
    return str(value)
  if not np.isfinite(number):
    return "" if np.isnan(number) else str(value)
  return str(int(number)) if number.is_integer() else f"{number:.10g}"


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
  """Every schema column present (missing ones empty), categorical columns as text."""
  frame = frame.reindex(columns=list(dict.fromkeys([*results.COLUMNS, "source", *frame.columns])))
  for column in CATEGORICAL:
    values = frame[column]
    if column in NUMBER_AXES:
      values = values.astype(object).map(_number_text)
    frame[column] = values.astype("string").fillna("")
  for column in NUMERIC + ("teacher_f1",):
    frame[column] = pd.to_numeric(frame[column], errors="coerce")
  return frame


def filter_frame(frame: pd.DataFrame, selections: dict | None = None,
                 ranges: dict | None = None) -> pd.DataFrame:
  """Rows whose categorical values are among the selected ones (an empty selection keeps all)
  and whose numeric values lie in the ranges (rows without a value are kept)."""
  keep = pd.Series(True, index=frame.index)
  for column, chosen in (selections or {}).items():
    if chosen:
      keep &= frame[column].isin([str(c) for c in chosen])
  for column, bounds in (ranges or {}).items():
    if bounds is None:
      continue
    low, high = bounds
    values = frame[column]
    keep &= values.isna() | values.between(low, high)
  return frame[keep]


def numeric_bounds(frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
  """(min, max) of each numeric filter column that has values."""
  bounds = {}
  for column in NUMERIC:
    values = frame[column].dropna()
    if len(values):
      bounds[column] = (float(np.floor(values.min() * 100) / 100), float(np.ceil(values.max() * 100) / 100))
  return bounds


def present_categorical(frame: pd.DataFrame) -> list[str]:
  """The categorical columns with at least one non-empty value (the filters worth showing)."""
  return [c for c in CATEGORICAL if c in frame and (frame[c].fillna("") != "").any()]


def present_metrics(frame: pd.DataFrame) -> list[str]:
  """The metrics (of `figures.METRICS`) with at least one value; ["f1"] when none has."""
  return [m for m in figures.METRICS if m in frame and frame[m].notna().any()] or ["f1"]


def default_group_by(frame: pd.DataFrame) -> list[str]:
  """The summary's default grouping: stage and method (or arch), then every other column that
  must not be pooled and differs between rows (`results.summary_keys`)."""
  present = present_categorical(frame)
  keys = [c for c in ("stage", "method" if "method" in present else "arch") if c in present]
  return [c for c in results.summary_keys(frame, keys) if c in present]


def summary_table(frame: pd.DataFrame, group_by: Sequence[str], metric: str = "f1") -> pd.DataFrame:
  """Mean, std, count and standard error over runs (seeds) of `metric` and of agreement per group.

  Columns: the group keys, then `<metric>_mean`, `<metric>_std`, `<metric>_count`, `<metric>_se`
  for each summarised metric. No keys puts every finished run in one group.
  """
  keys = list(group_by) or ["group"]
  frame = frame if group_by else frame.assign(group="all runs")
  table = None
  for m in dict.fromkeys([metric, *SUMMARY_METRICS]):
    if m not in frame:
      continue
    stats = figures.group_stats(frame, keys, m).rename(
        columns={s: f"{m}_{s}" for s in ("mean", "std", "count", "se")})
    table = stats if table is None else table.merge(stats, on=keys, how="outer")
  if table is None:
    return pd.DataFrame(columns=keys)
  return table.sort_values(keys, kind="stable").reset_index(drop=True)


def component_id(prefix: str, column: str) -> str:
  """A Dash-safe element id for a column's control (Dash ids cannot hold '.')."""
  return f"{prefix}-{column.replace('.', '_')}"


def value_order(values) -> list[str]:
  """Distinct values, numbers first in numeric order, then text."""
  def key(v):
    try:
      return (0, float(v), "")
    except ValueError:
      return (1, 0.0, v)
  return sorted(set(values), key=key)


# ---- Figures ------------------------------------------------------------------------------------


def comparison_figures(frame: pd.DataFrame, metric: str) -> dict:
  out = {key: figures.metric_by_split(frame, metric, color, title=f"{metric}: {title}")
         for key, title, color, _ in COMPARISONS}
  out["by_method"] = figures.metric_by_method(frame, metric)
  out["teacher"] = figures.teacher_vs_students(frame, metric)
  return out


def run_figures(frame: pd.DataFrame, metric: str, selected: Sequence[str] = ()) -> dict:
  """PR curves and training curves of the selected runs (default: the best five by metric)."""
  rows = frame[frame["run_id"].isin(selected)] if selected else frame.sort_values(
      metric, ascending=metric in figures.LOWER_IS_BETTER, na_position="last")
  rows = rows[rows["checkpoint"].fillna("") != ""]
  return {"pr": figures.precision_recall(figures.load_run_files(rows, "predictions.parquet", 5)),
          "curves": figures.training_curves(figures.load_run_files(rows, "history.csv", 5),
                                            "label_loss")}


# ---- The Dash app -----------------------------------------------------------------------------


def check_address(host: str, port: int) -> None:
  """Checks that the dashboard can listen on host:port, before anything is loaded or built
  (the server would print only "Name or service not known" and exit 1).

  Raises:
    ValueError: for a port out of range, a host name that does not resolve, or an address
      this machine cannot listen on (not one of its own, or the port taken), naming it and
      what to do.
  """
  import errno
  import socket

  if not 0 < port < 65536:
    raise ValueError(f"--port={port} is not a TCP port (1-65535)")
  try:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
  except socket.gaierror as e:
    raise ValueError(f"--host={host} does not resolve ({e.strerror}); give a name or address "
                     "of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                     "interface)") from None
  with socket.socket(family, kind, proto) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # As the server's socket.
    try:
      probe.bind(address)
    except OSError as e:
      remedy = ("stop the program using it or give another --port" if e.errno == errno.EADDRINUSE
                else "give an address of this machine with --host, e.g. 127.0.0.1")
      raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}; {remedy}") from None


def make_app(frame: pd.DataFrame, messages: Sequence[str] = (), title: str = "simclr_distill results",
             comparisons: pd.DataFrame | None = None):
  """The dashboard as a `dash.Dash` app (call `.run(host=..., port=...)`); `comparisons`
  (`load_comparisons`) adds the paired differences with their intervals, following the
  source, labelling and split filters."""
  import dash
  from dash import Input, Output, State, dash_table, dcc, html

  app = dash.Dash(__name__, title=title)
  bounds = numeric_bounds(frame)
  metrics = present_metrics(frame)
  published_rows = frame[frame["source"] == published.SOURCE]
  reproduced_rows = frame[frame["source"] != published.SOURCE]

  def dropdown(column):
    values = value_order(frame[column].unique()) if column in NUMBER_AXES else sorted(frame[column].unique())
    return html.Div([html.Label(column, htmlFor=component_id("filter", column)),
                     dcc.Dropdown(id=component_id("filter", column), options=[{"label": v or "(none)", "value": v} for v in values],
                                  multi=True, placeholder="all")],
                    className="filter", style={"marginBottom": "6px"})

  def slider(column):
    low, high = bounds[column]
    step = 1 if column in ("epochs_run", "wall_seconds") else 0.01
    return html.Div([html.Label(column), dcc.RangeSlider(
        id=component_id("range", column), min=low, max=high, step=step if high > low else None, value=[low, high],
        marks=None, tooltip={"placement": "bottom", "always_visible": False})],
        style={"marginBottom": "6px"})

  categorical = present_categorical(frame)
  numeric = [c for c in NUMERIC if c in bounds]
  # The methods figure only once some row names its teaching method.
  figure_keys = [c[0] for c in COMPARISONS] + (["by_method"] if "method" in categorical else []) + ["teacher"]
  graphs = [dcc.Graph(id=f"fig-{key}", style={"minWidth": 0}) for key in (*figure_keys, "pr", "curves")]
  comparison_block = []
  if len(published_rows) and len(reproduced_rows):
    comparison_block = [html.H3("Published vs reproduced"), dcc.Graph(id="fig-published"),
                        dash_table.DataTable(id="published-table", page_size=10, sort_action="native",
                                             style_table={"overflowX": "auto"})]
  comparisons = comparisons if comparisons is not None else pd.DataFrame()
  intervals_block = []
  if len(comparisons):
    intervals_block = [
        html.H3("Paired comparisons: differences with intervals"),
        html.Div("Each row compares two groups of runs on the same test examples; the interval "
                 "resamples the examples and the runs (seeds). Grey: the interval includes 0, "
                 "so the data cannot tell the two apart."),
        dcc.Graph(id="fig-intervals"),
        dash_table.DataTable(id="intervals-table", page_size=15, sort_action="native",
                             filter_action="native", style_table={"overflowX": "auto"},
                             style_cell={"fontSize": 12})]
  app.layout = html.Div([
      html.H2(title),
      html.Div([html.Div(m, className="message", style={"color": "#a15c00"}) for m in messages],
               id="messages"),
      html.Div([
          html.Div([html.Label("metric"), dcc.Dropdown(id="metric", options=metrics, value=metrics[0],
                                                         clearable=False),
                    html.Hr(), *[dropdown(c) for c in categorical], html.Hr(),
                    *[slider(c) for c in numeric]],
                   style={"width": "22%", "minWidth": "220px", "padding": "8px", "overflowY": "auto",
                          "maxHeight": "95vh"}),
          html.Div([
              html.Div(id="row-count", style={"fontWeight": "bold"}),
              html.Button("Download filtered rows (CSV)", id="download-button"),
              dcc.Download(id="download"),
              html.Div(graphs, style={"display": "grid",
                                     "gridTemplateColumns": "repeat(auto-fit, minmax(460px, 1fr))"}),
              *intervals_block,
              *comparison_block,
              html.H3("Summary"),
              html.Div([html.Label("group by", htmlFor="group-by"),
                        dcc.Dropdown(id="group-by", options=categorical, value=default_group_by(frame),
                                     multi=True, placeholder="all runs in one group")],
                       style={"maxWidth": "600px", "marginBottom": "6px"}),
              dash_table.DataTable(id="summary-table", page_size=20, sort_action="native",
                                   style_table={"overflowX": "auto"}, style_cell={"fontSize": 12}),
              html.H3("Runs"),
              dash_table.DataTable(
                  id="table", columns=[{"name": c, "id": c} for c in TABLE_COLUMNS],
                  page_size=20, sort_action="native", filter_action="native",
                  row_selectable="multi", style_table={"overflowX": "auto"},
                  style_cell={"fontSize": 12, "maxWidth": 220, "overflow": "hidden",
                              "textOverflow": "ellipsis"}),
          ], style={"flex": 1, "padding": "8px", "minWidth": 0}),
      ], style={"display": "flex"}),
  ], style={"fontFamily": "sans-serif"})

  filter_inputs = [Input(component_id("filter", c), "value") for c in categorical]
  range_inputs = [Input(component_id("range", c), "value") for c in numeric]

  def filtered(args):
    selections = dict(zip(categorical, args[:len(categorical)]))
    ranges = dict(zip(numeric, args[len(categorical):]))
    # A range at its full extent does not filter (rows without that value stay).
    ranges = {c: r for c, r in ranges.items() if r and tuple(r) != bounds[c]}
    return filter_frame(frame, selections, ranges)

  outputs = [Output("table", "data"), Output("row-count", "children")] + [
      Output(f"fig-{key}", "figure") for key in figure_keys]

  @app.callback(*outputs, Input("metric", "value"), *filter_inputs, *range_inputs)
  def update(metric, *args):
    rows = filtered(args)
    figs = comparison_figures(rows, metric)
    table = rows[list(TABLE_COLUMNS)].copy()
    table["id"] = table["run_id"]
    data = json.loads(table.to_json(orient="records", double_precision=4))
    return (data, f"{len(rows)} of {len(frame)} runs", *[figs[key] for key in figure_keys])

  @app.callback(Output("summary-table", "data"), Output("summary-table", "columns"),
                Input("metric", "value"), Input("group-by", "value"), *filter_inputs, *range_inputs)
  def update_summary(metric, group_by, *args):
    table = summary_table(filtered(args), group_by or [], metric)
    data = json.loads(table.to_json(orient="records", double_precision=4))
    return data, [{"name": c, "id": c} for c in table.columns]

  @app.callback(Output("fig-pr", "figure"), Output("fig-curves", "figure"), Input("metric", "value"),
                Input("table", "selected_row_ids"), *filter_inputs, *range_inputs)
  def update_runs(metric, selected, *args):
    figs = run_figures(filtered(args), metric, selected or ())
    return figs["pr"], figs["curves"]

  if intervals_block:
    @app.callback(Output("fig-intervals", "figure"), Output("intervals-table", "data"),
                  Output("intervals-table", "columns"), *filter_inputs)
    def update_intervals(*selected):
      rows = filter_comparisons(comparisons, dict(zip(categorical, selected)))
      table = comparisons_table(rows)
      return (figures.comparison_intervals(rows), table.to_dict("records"),
              [{"name": c, "id": c} for c in table.columns])

  if comparison_block:
    @app.callback(Output("fig-published", "figure"), Output("published-table", "data"),
                  Output("published-table", "columns"), Input("metric", "value"), *filter_inputs,
                  *range_inputs)
    def update_published(metric, *args):
      rows = filtered(args)
      table = published.compare(rows[rows["source"] == published.SOURCE],
                                rows[rows["source"] != published.SOURCE], metric)
      shown = table.round(4)
      return (figures.published_vs_reproduced(table, metric), shown.to_dict("records"),
              [{"name": c, "id": c} for c in shown.columns])

  @app.callback(Output("download", "data"), Input("download-button", "n_clicks"), *[
      State(component_id("filter", c), "value") for c in categorical], *[State(component_id("range", c), "value") for c in numeric],
      prevent_initial_call=True)
  def download(n_clicks, *args):
    return dcc.send_data_frame(filtered(args).to_csv, "results_filtered.csv", index=False)

  return app


# ---- The static report --------------------------------------------------------------------------


_REPORT_JS = pathlib.Path(__file__).with_name("report.js")


def export_report(frame: pd.DataFrame, path: str | pathlib.Path, messages: Sequence[str] = (),
                  title: str = "simclr_distill results",
                  comparisons: pd.DataFrame | None = None) -> pathlib.Path:
  """Writes one self-contained HTML file: filters, figures and table computed in the browser,
  and the paired comparisons with their intervals (`load_comparisons`; all of them, as
  computed).

  The rows (filter and table columns only) and plotly.js are inlined, so the file opens from
  disk with no server or network.
  """
  import plotly.io
  import plotly.offline

  from simclr_distill import fileio

  columns = list(dict.fromkeys([*CATEGORICAL, *TABLE_COLUMNS, *NUMERIC, "status"]))
  rows = json.loads(frame[columns].to_json(orient="records", double_precision=4))
  runs = {}  # PR curves and training curves of the runs with files (bounded, for size).
  ranked = frame.sort_values("f1", ascending=False, na_position="last")
  for run_id, prediction in figures.load_run_files(ranked, "predictions.parquet", 50).items():
    if "student_prob" in prediction:
      precision, recall = figures.pr_curve(prediction["label"].to_numpy(), prediction["student_prob"].to_numpy())
      runs.setdefault(run_id, {})["pr"] = [np.round(recall, 4).tolist(), np.round(precision, 4).tolist()]
  for run_id, history in figures.load_run_files(ranked, "history.csv", 50).items():
    curve = {c: pd.to_numeric(history[c], errors="coerce").round(4).tolist()
             for c in ("label_loss", "val_label_loss") if c in history}
    runs.setdefault(run_id, {})["curves"] = curve
  categorical = present_categorical(frame)
  payload = {"rows": rows, "categorical": categorical,
             "numeric": [c for c in NUMERIC if frame[c].notna().any()], "table": list(TABLE_COLUMNS),
             "comparisons": [[key, label, color] for key, label, color, _ in COMPARISONS],
             "metrics": present_metrics(frame), "methods": "method" in categorical,
             "groupBy": default_group_by(frame), "summaryMetrics": list(SUMMARY_METRICS),
             "lowerIsBetter": list(figures.LOWER_IS_BETTER), "runs": runs, "messages": list(messages), "title": title}
  data = json.dumps(payload).replace("</", "<\\/")
  intervals = ""
  if comparisons is not None and len(comparisons):
    table = comparisons_table(comparisons)
    intervals = ("<h3>Paired comparisons: differences with intervals</h3><p>Each row compares "
                 "two groups of runs on the same test examples; the interval resamples the "
                 "examples and the runs (seeds). Grey: the interval includes 0.</p>"
                 + plotly.io.to_html(figures.comparison_intervals(comparisons), full_html=False,
                                     include_plotlyjs=False, div_id="fig-intervals")
                 + table.to_html(index=False, classes="intervals", border=0, escape=True))
  html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 0; }} #side {{ width: 260px; padding: 8px; overflow-y: auto; max-height: 100vh; }}
#main {{ flex: 1; padding: 8px; min-width: 0; }} .wrap {{ display: flex; }} select {{ width: 100%; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); }} .grid > div {{ min-width: 0; }} table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 2px 4px; }} th {{ cursor: pointer; background: #f4f4f4; }}
.message {{ color: #a15c00; }} label {{ display: block; margin-top: 6px; font-size: 13px; }}
</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head><body>
<div class="wrap"><div id="side"></div><div id="main"><h2 id="title"></h2><div id="messages"></div>
<div id="row-count" style="font-weight:bold"></div><div class="grid" id="figures"></div>
<div id="intervals">{intervals}</div>
<div id="comparison"></div><h3>Summary</h3><label for="group-by">group by (none selected = all runs in one group)</label>
<select id="group-by" multiple style="max-width: 600px"></select><div id="summary"></div>
<h3>Runs</h3><div id="table"></div></div></div>
<script id="report-data" type="application/json">{data}</script>
<script>{_REPORT_JS.read_text()}</script>
</body></html>
"""
  fileio.write_text(path, html)
  return pathlib.Path(path)
