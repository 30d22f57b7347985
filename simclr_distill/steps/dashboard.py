"""The dashboard stage: the results dashboard served by Dash, or its static HTML export.

  python -m stages.dashboard --workdirs=results/study_demo           # http://127.0.0.1:8050
  python -m stages.dashboard --workdirs=results/study_demo --export=report.html

The figures and the app live in `simclr_distill.dashboard`; this step loads the sources and
their comparisons and serves or exports them.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from simclr_distill import dashboard


def run(workdirs: Sequence[str], *, published: Sequence[str] = (), host: str = "127.0.0.1",
        port: int = 8050, export: str | None = None,
        title: str = "simclr_distill results") -> pathlib.Path | None:
  """Serves the dashboard until interrupted, or with `export` writes the report and returns
  its path. Notes about the sources (what could not be read or compared) are printed first.

  Raises:
    ValueError: for an address that cannot be served, or sources that cannot be read.
  """
  if not export:
    dashboard.check_address(host, port)
  frame, messages = dashboard.load_sources(workdirs, published)
  comparisons, more = dashboard.load_comparisons(workdirs)
  messages = [*messages, *more]
  for message in messages:
    print(f"note: {message}")
  if export:
    path = dashboard.export_report(frame, export, messages, title=title, comparisons=comparisons)
    print(f"report: {path} ({len(frame)} rows)")
    return path
  print(f"dashboard: http://{host}:{port} ({len(frame)} rows); Ctrl-C stops it", flush=True)
  dashboard.make_app(frame, messages, title=title, comparisons=comparisons).run(
      host=host, port=port, debug=False)
  return None
