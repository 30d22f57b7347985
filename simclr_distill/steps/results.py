"""The results stage: print, filter, summarise and compare results tables.

  python -m stages.results --workdirs=results/study_demo
  python -m stages.results --compare --workdirs=W   # the study's questions, with intervals

Reads workdirs (their per-run rows) or .parquet/.csv tables; writes nothing unless `output`.
No TensorFlow is imported here.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Sequence

import pandas as pd

from simclr_distill import fileio, results, stats


def show(workdirs: Sequence[str], *, filter_expression: str = "", group_by: Sequence[str] = (),
         metrics: Sequence[str] = results.GROUP_METRICS, columns: Sequence[str] = (),
         output: str | None = None) -> pd.DataFrame:
  """Prints the rows of `workdirs` that pass `filter_expression`: the `columns`, or with
  `group_by` the mean, std and count of each metric per group. Returns what it printed (also
  written to `output`, a .csv, when given).

  Raises:
    ValueError: for a filter that does not evaluate, or columns the tables lack.
  """
  table = results.query(results.load_table(workdirs), filter_expression)
  if group_by:
    shown = results.summarize(table, group_by, metrics)
  else:
    missing = [c for c in columns if c not in table.columns]
    if missing:
      raise ValueError(f"the results of --workdirs={','.join(workdirs)} have no column(s) "
                       f"{', '.join(missing)}; they have: {', '.join(map(str, table.columns))}. "
                       "Give workdirs or results tables written by this package, or choose "
                       "--columns from those")
    shown = table[list(columns)]
  if table.empty:
    print("no rows (check --workdirs and --filter)", file=sys.stderr)
  with pd.option_context("display.max_rows", 500, "display.width", 200):
    print(shown.round(4).to_string())
  if output:
    fileio.atomic_write(output, shown.to_csv)
  return shown


def compare(workdirs: Sequence[str], *, filter_expression: str = "", metric: str = "f1",
            confidence: float = 0.95, output: str | None = None) -> pd.DataFrame:
  """Prints, per workdir, the study's paired comparisons (`stats.study_comparisons`) from its
  runs' saved predictions; returns them all (also written to `output` when given).

  Raises:
    ValueError: for a path that is not a workdir (the comparisons read predictions).
  """
  frames = []
  for workdir in workdirs:
    if not pathlib.Path(workdir).is_dir():
      raise ValueError(f"--compare reads each run's saved predictions, so --workdirs must be "
                       f"workdirs; {workdir} is not a directory")
    table = results.query(results.load_table([workdir]), filter_expression)
    frame = stats.study_comparisons(table, stats.workdir_reader(workdir), metric=metric,
                                    confidence=confidence)
    print(f"== {workdir}")
    print(stats.format_comparisons(frame))
    frames.append(frame.assign(workdir=workdir))
  out = pd.concat(frames) if frames else pd.DataFrame()
  if output:
    fileio.atomic_write(output, lambda tmp: out.to_csv(tmp, index=False))
  return out
