"""The results dashboard: a Dash app over one or more results tables, and its static export.

Sources are workdirs (their row files), table files (.parquet/.csv) and the study's published
CSVs (`published.py`); each row keeps its `source`. Every categorical column with a value
(experiment axes such as the teaching method, generation or temperature included) gets a
multi-select filter and every metric a range; the figures, the seed summary (mean, std, count
and standard error per group of runs), the tables (dash-ag-grid: sorted, filtered, paged) and
the CSV download all follow the filters.

The published study shares a reproduction's axes only where their (stage, encoder, labelling,
split, arch) keys match (`published.overlay`); otherwise it is drawn in figures of its own and
the page says why. From the saved predictions of the runs selected in the runs table (else the
best, median and worst by the chosen metric) come PR and ROC curves, reliability diagrams and
confusion matrices (`figures.prediction_summary`).

`export_report` writes the same page as one self-contained HTML file whose filters run in the
browser (plotly.js, the rows and the runs' prediction summaries are inlined); `report.js`
computes each figure as the app does, and the tests hold their numbers equal.
"""

from __future__ import annotations

import functools
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
COMPARISONS = (  # (figure id, title, colour column, stages kept); "optimizer": see figures
    ("by_arch", "by architecture", "arch", None),
    ("by_optimizer", "Adam vs SGD", "optimizer", None),
    ("by_scheme", "basic vs expanded labels", "labeling", None),
    ("by_stage", "distilled vs supervised baseline (and teachers)", "stage", None),
)
RUN_FIGURES = ("pr", "roc", "calibration", "confusion", "curves")  # of the runs drawn
EXPORTED_RUNS = 1000  # runs whose saved predictions a report carries (about 10 kB each)


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
  """The figures comparing groups of runs (`COMPARISONS`, by method, students vs teachers),
  by figure id, over the rows given."""
  out = {key: figures.optimizer_by_split(frame, metric, title=f"{metric}: {title}")
         if color == "optimizer" else
         figures.metric_by_split(frame, metric, color, title=f"{metric}: {title}")
         for key, title, color, _ in COMPARISONS}
  out["by_method"] = figures.metric_by_method(frame, metric)
  out["teacher"] = figures.teacher_vs_students(frame, metric)
  return out


def page_figures(frame: pd.DataFrame, metric: str) -> tuple[dict, str, pd.DataFrame]:
  """Every figure of the rows' comparisons, as the dashboard and the report show them.

  The published study shares the axes of a reproduction only where their (stage, encoder,
  labelling, split, arch) keys match (`published.overlay`); it is also drawn in figures of
  its own (ids `pub-<key>`) and, where keys match, published against reproduced (`published`).

  Returns:
    (figures by id, the note on why the study is or is not overlaid, the published vs
    reproduced table of the groups in both).
  """
  shared, own, note = published.overlay(frame)
  out = comparison_figures(shared, metric)
  table = pd.DataFrame()
  if len(own):
    out.update({f"pub-{key}": fig for key, fig in comparison_figures(own, metric).items()})
    table = published.compare(own, shared[shared["source"] != published.SOURCE], metric)
    table = table.dropna(subset=["published_mean", "reproduced_mean"]).reset_index(drop=True)
    out["published"] = figures.published_vs_reproduced(table, metric)
  return out, note, table


def figure_ids(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
  """The comparison figures a page of these rows shows: on the shared axes (the methods figure
  once some row names its method), and the published study's own (`pub-<key>`, when both the
  study and a reproduction are loaded)."""
  main = [c[0] for c in COMPARISONS] + (["by_method"] if "method" in present_categorical(frame)
                                        else []) + ["teacher"]
  sources = frame["source"] if "source" in frame else pd.Series(dtype=str)
  own = [f"pub-{c[0]}" for c in COMPARISONS] + ["pub-teacher"] if (
      (sources == published.SOURCE).any() and (sources != published.SOURCE).any()) else []
  return main, own


def describe_run(row: dict) -> str:
  """A short name of a run for legends: its stage, architecture, encoder, labelling, split and
  seed (the run id, in full, is in the hover text)."""
  parts = [row.get("stage"), row.get("arch"),
           row.get("model") if row.get("model") != row.get("arch") else None, row.get("labeling"),
           f"{row['split_percent']}%" if row.get("split_percent") not in (None, "") else None,
           f"s{row['seed']}" if row.get("seed") not in (None, "") else None]
  return " ".join(str(p) for p in parts if p not in (None, "") and not
                  (isinstance(p, float) and np.isnan(p)))


def rank_runs(frame: pd.DataFrame, metric: str, available) -> pd.DataFrame:
  """The finished rows with a `metric` among the runs `available` (those with saved
  predictions), best first; ties in run id order."""
  rows = figures.finished(frame)
  rows = rows[rows["run_id"].isin(set(available))]
  rows = rows.assign(_value=pd.to_numeric(rows[metric], errors="coerce") if metric in rows else np.nan)
  rows = rows.dropna(subset=["_value"])
  rows = rows.sort_values(["_value", "run_id"], ascending=[metric in figures.LOWER_IS_BETTER, True],
                          kind="stable")
  return rows.drop(columns="_value")


def choose_runs(frame: pd.DataFrame, metric: str, available, selected: Sequence[str] = (),
                limit: int = 5) -> list[tuple[str, dict]]:
  """The runs whose saved predictions are drawn, with their legend names: the runs selected
  in the table (up to `limit`, in table order), else the best, the median and the worst by
  `metric` among the finished runs with saved predictions, so a view is informative when the
  best runs are all perfect."""
  available = set(available)
  if selected:
    order = {run_id: i for i, run_id in enumerate(selected)}
    rows = frame[frame["run_id"].isin(order) & frame["run_id"].isin(available)]
    rows = rows.assign(_order=rows["run_id"].map(order)).sort_values("_order").drop(columns="_order")
    chosen = [("selected", row) for row in rows.head(limit).to_dict("records")]
  else:
    ranked = rank_runs(frame, metric, available).to_dict("records")
    n = len(ranked)
    picks = {0: "best", (n - 1) // 2: "median", n - 1: "worst"} if n > 2 else \
        ({0: "best", 1: "worst"} if n == 2 else {0: "only"} if n else {})
    chosen = [(role, ranked[i]) for i, role in sorted(picks.items())]
  out, seen = [], set()
  for role, row in chosen:
    value = pd.to_numeric(pd.Series([row.get(metric)]), errors="coerce").iloc[0]
    name = f"{role} ({metric} {figures.fixed(value)}): {describe_run(row)}" if np.isfinite(value) else \
        f"{role}: {describe_run(row)}"
    while name in seen:  # Two runs described alike (e.g. differing teachers) stay two entries.
      name += " ′"
    seen.add(name)
    out.append((name, row))
  return out


@functools.lru_cache(maxsize=256)
def _run_summary(path: str, modified: float) -> dict:
  return figures.prediction_summary(pd.read_parquet(path))


def run_summary(row: dict) -> dict | None:
  """The `figures.prediction_summary` of a run's saved predictions (cached while the file is
  unchanged), with its run id; None without them."""
  directory = figures.run_dir(row)
  path = directory / "predictions.parquet" if directory else None
  if path is None or not path.is_file():
    return None
  return {**_run_summary(str(path), path.stat().st_mtime), "run_id": row["run_id"]}


def run_history(row: dict, columns=("label_loss", "val_label_loss")) -> pd.DataFrame | None:
  """The per-epoch `columns` of a run's history.csv (None without it)."""
  directory = figures.run_dir(row)
  if directory is None or not (directory / "history.csv").is_file():
    return None
  history = pd.read_csv(directory / "history.csv")
  return history[["epoch", *[c for c in columns if c in history]]]


def run_figures(frame: pd.DataFrame, metric: str, selected: Sequence[str] = (),
                available=None) -> dict:
  """PR curves, ROC curves, reliability diagrams, confusion matrices and training curves of
  the runs `choose_runs` picks (the selected ones, else the best, median and worst), by id in
  `RUN_FIGURES`; with `note`, what was drawn. `available`: the run ids with saved predictions
  (`figures.runs_with_file`, computed once by the app), else found now."""
  if available is None:
    available = figures.runs_with_file(frame, "predictions.parquet")
  chosen = choose_runs(frame, metric, available, selected)
  summaries = {name: s for name, row in chosen if (s := run_summary(row)) is not None}
  histories = {name: h for name, row in chosen if (h := run_history(row)) is not None}
  if selected:
    saved = int((frame["run_id"].isin(set(selected)) & frame["run_id"].isin(set(available))).sum())
    note = (f"{saved} of the {len(selected)} runs selected in the table have saved predictions"
            + (f"; the first {len(chosen)} are drawn" if saved > len(chosen) else ""))
  elif chosen:
    roles = [name.split(" ")[0] for name, _ in chosen]
    roles = " and ".join([", ".join(roles[:-1]), roles[-1]] if len(roles) > 1 else roles)
    note = (f"the {roles} of {len(rank_runs(frame, metric, available))} finished runs "
            f"with saved predictions by {metric} (select rows in the runs table to draw those)")
  else:
    note = "no run among the filtered rows has saved predictions (predictions.parquet)"
  return {"pr": figures.precision_recall(summaries), "roc": figures.roc_curves(summaries),
          "calibration": figures.calibration(summaries),
          "confusion": figures.confusion_matrices(summaries),
          "curves": figures.training_curves(histories, "label_loss"), "note": note}


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


def _grid(grid_id: str, columns: Sequence[str] = (), page_size: int = 20, selectable: bool = False,
          rows: Sequence[dict] = ()):
  """A dash-ag-grid table: sortable, filterable, resizable columns, paged, every row of a page
  in the page (autoHeight; the browser tests read its cells); multi-row selection by source
  and run id."""
  import dash_ag_grid as dag

  options = {"pagination": True, "paginationPageSize": page_size,
             "paginationPageSizeSelector": False, "domLayout": "autoHeight",
             "suppressFieldDotNotation": True,  # "f0.5" is a column, not a path
             "suppressColumnVirtualisation": True, "animateRows": False,
             "enableCellTextSelection": True}
  if selectable:
    options["rowSelection"] = {"mode": "multiRow", "selectAll": "filtered"}
  # The first rows are given (not left to the first callback), so the columns are sized to them.
  return dag.AgGrid(id=grid_id, columnDefs=column_defs(columns), rowData=list(rows),
                    defaultColDef={"sortable": True, "filter": True, "resizable": True,
                                   "minWidth": 70},
                    dashGridOptions=options, columnSize="autoSize",
                    # Two workdirs can hold one run id (a copied workdir): with its source.
                    getRowId="params.data.source + '/' + params.data.run_id" if selectable else None,
                    style={"height": None, "width": "100%"}, className="ag-theme-alpine")


def column_defs(columns: Sequence[str]) -> list[dict]:
  """AG Grid column definitions: numbers right-aligned with a number filter."""
  numbers = set(NUMERIC) | {"teacher_f1", "difference", "mean_a", "mean_b", "examples"} | {
      c for c in columns if c.rsplit("_", 1)[-1] in ("mean", "std", "count", "se")}
  return [{"field": c, "headerName": c, **({"type": "numericColumn", "filter": "agNumberColumnFilter"}
                                          if c in numbers else {"filter": "agTextColumnFilter"})}
          for c in columns]


def records(table: pd.DataFrame, digits: int = 4) -> list[dict]:
  """A table's rows as JSON-ready dicts, numbers rounded to `digits`."""
  return json.loads(table.to_json(orient="records", double_precision=digits))


def make_app(frame: pd.DataFrame, messages: Sequence[str] = (), title: str = "simclr_distill results",
             comparisons: pd.DataFrame | None = None):
  """The dashboard as a `dash.Dash` app (call `.run(host=..., port=...)`); `comparisons`
  (`load_comparisons`) adds the paired differences with their intervals, following the
  source, labelling and split filters."""
  import dash
  from dash import Input, Output, State, dcc, html

  app = dash.Dash(__name__, title=title)
  bounds = numeric_bounds(frame)
  metrics = present_metrics(frame)
  own_view = bool(figure_ids(frame)[1])
  available = figures.runs_with_file(frame, "predictions.parquet") if len(frame) else set()

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

  def graph(key):
    return dcc.Graph(id=f"fig-{key}", style={"minWidth": 0}, config={"displaylogo": False})

  def grid(*children):
    return html.Div(list(children), style={"display": "grid",
                                          "gridTemplateColumns": "repeat(auto-fit, minmax(460px, 1fr))"})

  note_style = {"background": "#fff3cd", "border": "1px solid #e0c36c", "padding": "6px 10px",
                "margin": "6px 0", "maxWidth": "1100px"}
  categorical = present_categorical(frame)
  numeric = [c for c in NUMERIC if c in bounds]
  figure_keys, own_keys = figure_ids(frame)
  first_summary = summary_table(frame, default_group_by(frame), metrics[0]) if len(frame) else pd.DataFrame()
  published_block = []
  if own_view:
    published_block = [html.Div([
        html.H3("Published study: its own figures", id="published-view"),
        html.Div("The study's published tables (BigEarthNet-S2), on axes of their own.",
                 style={"marginBottom": "4px"}),
        grid(*[graph(key) for key in own_keys]),
        html.H3("Published vs reproduced (groups in both)"),
        graph("published"), _grid("published-table", page_size=10)], id="published-section")]
  comparisons = comparisons if comparisons is not None else pd.DataFrame()
  intervals_block = []
  if len(comparisons):
    intervals_block = [
        html.H3("Paired comparisons: differences with intervals"),
        html.Div("Each row compares two groups of runs on the same test examples; the interval "
                 "resamples the examples and the runs (seeds). Grey: the interval includes 0, "
                 "so the data cannot tell the two apart."),
        graph("intervals"), _grid("intervals-table", page_size=15)]
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
              html.Div(id="published-note", style=note_style if own_view else {"display": "none"}),
              html.Div(grid(*[graph(key) for key in figure_keys]), id="figures"),
              *intervals_block,
              *published_block,
              html.H3("Summary"),
              html.Div([html.Label("group by", htmlFor="group-by"),
                        dcc.Dropdown(id="group-by", options=categorical, value=default_group_by(frame),
                                     multi=True, placeholder="all runs in one group")],
                       style={"maxWidth": "600px", "marginBottom": "6px"}),
              _grid("summary-table", first_summary.columns, rows=records(first_summary)),
              html.H3("Runs"),
              html.Div("Select rows (the boxes) to draw their predictions below."),
              _grid("table", TABLE_COLUMNS, selectable=True,
                    rows=records(frame.reindex(columns=list(TABLE_COLUMNS)))),
              html.Div([html.H3("Predictions of the drawn runs", id="runs-view"),
                        html.Div(id="runs-note", style={"marginBottom": "4px"}),
                        grid(*[graph(key) for key in RUN_FIGURES])], id="runs-section"),
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

  outputs = [Output("table", "rowData"), Output("row-count", "children"),
             Output("published-note", "children")] + [
      Output(f"fig-{key}", "figure") for key in figure_keys + own_keys]
  if own_view:
    outputs += [Output("fig-published", "figure"), Output("published-table", "rowData"),
                Output("published-table", "columnDefs")]

  @app.callback(*outputs, Input("metric", "value"), *filter_inputs, *range_inputs)
  def update(metric, *args):
    rows = filtered(args)
    figs, note, table = page_figures(rows, metric)
    out = [records(rows[list(TABLE_COLUMNS)]), f"{len(rows)} of {len(frame)} runs", note,
           *[figs[key] for key in figure_keys + own_keys]]
    if own_view:
      shown = table.round(4)
      out += [figs["published"], records(shown), column_defs(shown.columns)]
    return tuple(out)

  @app.callback(Output("summary-table", "rowData"), Output("summary-table", "columnDefs"),
                Input("metric", "value"), Input("group-by", "value"), *filter_inputs, *range_inputs)
  def update_summary(metric, group_by, *args):
    table = summary_table(filtered(args), group_by or [], metric)
    return records(table), column_defs(table.columns)

  @app.callback(*[Output(f"fig-{key}", "figure") for key in RUN_FIGURES],
                Output("runs-note", "children"), Input("metric", "value"),
                Input("table", "selectedRows"), *filter_inputs, *range_inputs)
  def update_runs(metric, selected, *args):
    chosen = [row["run_id"] for row in selected or ()]
    figs = run_figures(filtered(args), metric, chosen, available)
    return (*[figs[key] for key in RUN_FIGURES], figs["note"])

  if intervals_block:
    @app.callback(Output("fig-intervals", "figure"), Output("intervals-table", "rowData"),
                  Output("intervals-table", "columnDefs"), *filter_inputs)
    def update_intervals(*selected):
      rows = filter_comparisons(comparisons, dict(zip(categorical, selected)))
      table = comparisons_table(rows)
      return figures.comparison_intervals(rows), records(table), column_defs(table.columns)

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
  from html import escape

  import plotly.io
  import plotly.offline

  from simclr_distill import fileio

  columns = list(dict.fromkeys([*CATEGORICAL, *TABLE_COLUMNS, *NUMERIC, "status", "encoder"]))
  # Values exact (as the app computes with them); missing and empty ones left out (undefined
  # in the browser, which report.js reads as the app reads NaN and ""), to keep the file small.
  shown = frame.reindex(columns=columns).astype(object)
  rows = [{k: v for k, v in row.items() if v is not None and v != ""}
          for row in shown.where(shown.notna(), None).to_dict("records")]
  # The saved predictions (as `figures.prediction_summary`) and training curves of the runs
  # that have them, as the app draws them; the best by the first metric first, up to a bound.
  metric = present_metrics(frame)[0]
  available = figures.runs_with_file(frame, "predictions.parquet") if len(frame) else set()
  ranked = rank_runs(frame, metric, available) if available else frame.iloc[:0]
  carried = frame[frame["run_id"].isin(available)]
  carried = pd.concat([ranked, carried[~carried["run_id"].isin(ranked["run_id"])]]).head(EXPORTED_RUNS)
  if len(available) > EXPORTED_RUNS:
    messages = [*messages, f"this report holds the saved predictions of {EXPORTED_RUNS} of "
                f"{len(available)} runs (the best by {metric}); the dashboard reads them all"]
  runs = {}
  for row in carried.to_dict("records"):
    summary = run_summary(row)
    if summary is None:
      continue
    history = run_history(row)
    if history is not None:
      summary["curves"] = {c: [None if pd.isna(v) else float(v) for v in
                               pd.to_numeric(history[c], errors="coerce")] for c in history}
    runs[row["run_id"]] = summary
  categorical = present_categorical(frame)
  main_ids, own_ids = figure_ids(frame)
  payload = {"rows": rows, "categorical": categorical,
             "numeric": [c for c in NUMERIC if frame[c].notna().any()], "table": list(TABLE_COLUMNS),
             "comparisons": [[key, label, color] for key, label, color, _ in COMPARISONS],
             "figures": main_ids, "ownFigures": own_ids, "runFigures": list(RUN_FIGURES),
             "methods": "by_method" in main_ids,
             "metrics": present_metrics(frame), "groupBy": default_group_by(frame),
             "summaryMetrics": list(SUMMARY_METRICS), "lowerIsBetter": list(figures.LOWER_IS_BETTER),
             "publishedSource": published.SOURCE, "keys": list(published.KEYS),
             "optimizers": [list(o) for o in figures.OPTIMIZERS],
             "style": {"modebar": figures.MODEBAR_HEIGHT, "titleChars": figures.TITLE_CHARS,
                       "template": plotly.io.templates[figures.TEMPLATE].to_plotly_json(),
                       "colorway": list(figures.COLORWAY), "shareColors": figures.SHARE_COLORS,
                       "calibrationBins": figures.CALIBRATION_BINS},
             "runs": runs, "messages": list(messages), "title": title}
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
  own = ""
  if own_ids:
    own = ('<div id="published-section"><h3 id="published-view">Published study: its own '
           'figures</h3><div>The study\'s published tables (BigEarthNet-S2), on axes of their '
           'own.</div><div class="grid" id="own-figures"></div><h3>Published vs reproduced '
           '(groups in both)</h3><div id="fig-published"></div><div id="comparison"></div></div>')
  html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 0; }} #side {{ width: 260px; padding: 8px; overflow-y: auto; max-height: 100vh; }}
#main {{ flex: 1; padding: 8px; min-width: 0; }} .wrap {{ display: flex; }} select {{ width: 100%; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); }} .grid > div {{ min-width: 0; }} table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 2px 4px; }} th {{ cursor: pointer; background: #f4f4f4; }}
.message {{ color: #a15c00; }} label {{ display: block; margin-top: 6px; font-size: 13px; }}
.note {{ background: #fff3cd; border: 1px solid #e0c36c; padding: 6px 10px; margin: 6px 0; max-width: 1100px; }}
.note:empty {{ display: none; }} #runs tr.selected td {{ background: #e8f0fe; }} #table {{ overflow-x: auto; }}
</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head><body>
<div class="wrap"><div id="side"></div><div id="main"><h2 id="title"></h2><div id="messages"></div>
<div id="row-count" style="font-weight:bold"></div><div id="published-note" class="note"></div>
<div class="grid" id="figures"></div>
<div id="intervals">{intervals}</div>
{own}<h3>Summary</h3><label for="group-by">group by (none selected = all runs in one group)</label>
<select id="group-by" multiple style="max-width: 600px"></select><div id="summary"></div>
<h3>Runs</h3><div>Tick rows to draw their predictions below.</div><div id="table"></div>
<div id="runs-section"><h3 id="runs-view">Predictions of the drawn runs</h3><div id="runs-note"></div>
<div class="grid" id="run-figures"></div></div></div></div>
<script id="report-data" type="application/json">{data}</script>
<script>{_REPORT_JS.read_text()}</script>
</body></html>
"""
  fileio.write_text(path, html)
  return pathlib.Path(path)
