"""How long the dashboard takes to filter and redraw at 10,000 rows (and the report's size).

  python -m benchmarks.dashboard_rows [--rows=10000]

Prints the time of one filter-and-redraw (what each dashboard callback does: filter, aggregate,
build the figures and the table payload), of loading the sources, and of writing the report.
"""

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd

from simclr_distill import dashboard


def synthetic(rows: int) -> pd.DataFrame:
  rng = np.random.default_rng(0)
  frame = pd.DataFrame({
      "run_id": [f"run-{i}" for i in range(rows)], "status": "ok",
      "stage": rng.choice(["finetune", "distill", "baseline"], rows),
      "model": rng.choice(["BEN", "CA_adam", "CA_sgd"], rows),
      "arch": rng.choice(["Xception", "InceptionV3", "ResNet50", "ResNet101V2", "ResNet152"], rows),
      "labeling": rng.choice(["basic", "expanded"], rows),
      "split_percent": rng.choice([1, 3, 10, 25, 50, 100], rows),
      "student_optimizer": rng.choice(["adam", "sgd"], rows), "seed": rng.integers(0, 5, rows),
      "teacher_id": rng.choice([f"T{i}" for i in range(36)], rows),
      **{m: rng.uniform(0.4, 1.0, rows) for m in ("f1", "f0.5", "auc", "accuracy", "precision", "recall")},
  })
  return dashboard.normalise(frame)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rows", type=int, default=10_000)
  rows = parser.parse_args().rows
  frame = synthetic(rows)
  timings = []
  for _ in range(5):
    start = time.perf_counter()
    subset = dashboard.filter_frame(frame, {"labeling": ["basic"]}, {"f1": (0.5, 1.0)})
    figs = dashboard.comparison_figures(subset, "f1")
    payload = json.loads(subset[list(dashboard.TABLE_COLUMNS)].to_json(orient="records"))
    for fig in figs.values():
      fig.to_json()
    timings.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    path = dashboard.export_report(frame, f"{tmp}/report.html")
    report_seconds = time.perf_counter() - start
    size = path.stat().st_size
    browser_ms = _report_filter_ms(path)
  print(f"{rows} rows: filter + figures + table payload ({len(payload)} rows) in "
        f"{np.median(timings) * 1000:.0f} ms (median of 5)")
  print(f"report: {size / 1e6:.1f} MB written in {report_seconds:.2f} s")
  if browser_ms is not None:
    print(f"report in headless Chromium: one filter change redraws in {browser_ms:.0f} ms "
          "(median of 5)")


def _report_filter_ms(path):
  """Median time of one filter change in the exported report, in headless Chromium."""
  import shutil

  if not (shutil.which("chromium") and shutil.which("chromedriver")):
    print("(no chromium/chromedriver: the in-browser timing is skipped)")
    return None
  from selenium import webdriver

  options = webdriver.ChromeOptions()
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
    options.add_argument(argument)
  driver = webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
  try:
    driver.get(path.as_uri())
    times = driver.execute_script("""
      const select = document.getElementById("filter-labeling"), times = [];
      for (let i = 0; i < 5; i++) {
        select.options[i % 2].selected = true; select.options[(i + 1) % 2].selected = false;
        const start = performance.now();
        select.dispatchEvent(new Event("change"));
        times.push(performance.now() - start);
      }
      return times;""")
    return float(np.median(times))
  finally:
    driver.quit()


if __name__ == "__main__":
  main()
