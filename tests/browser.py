"""Headless Chromium for the dashboard tests (Debian's `chromium` and `chromium-driver`)."""

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def chromium(download_dir=None):
  """A headless Chromium WebDriver; skips (saying why) where Chromium is not installed."""
  if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; "
                "`make test` does this where it can)")
  from selenium import webdriver

  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                   "--window-size=1600,2000"):
    options.add_argument(argument)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  if download_dir:
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir)})
  driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
  try:
    yield driver
  finally:
    driver.quit()


@contextlib.contextmanager
def serving(args, env, cwd, timeout=90):
  """Runs `python -m stages.dashboard ARGS` until its page answers; yields its URL."""
  port = free_port()
  proc = subprocess.Popen([sys.executable, "-m", "stages.dashboard", f"--port={port}", *args],
                          cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.time() + timeout
    while True:
      try:
        urllib.request.urlopen(url, timeout=2)
        break
      except OSError:
        if proc.poll() is not None or time.time() > deadline:
          proc.kill()
          raise AssertionError(f"the dashboard did not start:\n{proc.stdout.read()}")
        time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=30)


@contextlib.contextmanager
def serving_app(app):
  """Serves a Dash app from this process (a thread) until the block ends; yields its URL."""
  import threading

  from werkzeug.serving import make_server

  server = make_server("127.0.0.1", free_port(), app.server, threaded=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_port}/"
  finally:
    server.shutdown()
    thread.join(timeout=30)


# Every plotly figure of a page by its element id ("fig-<key>"): title, annotations and traces
# (name, type and data arrays as plain lists), as plotly.js holds them after drawing.
PLOTTED_JS = """
const list = v => (v === null || v === undefined) ? null
  : (ArrayBuffer.isView(v) || Array.isArray(v)) ? Array.from(v, list) : v;
const out = {};
for (const g of document.querySelectorAll('.js-plotly-plot')) {
  const box = g.closest('[id^="fig-"]');
  if (!box || !g._fullLayout) continue;
  const layout = g._fullLayout;
  out[box.id] = {
    title: layout.title && layout.title.text,
    annotations: (layout.annotations || []).map(a => a.text),
    traces: g._fullData.map(t => ({name: t.name, type: t.type, x: list(t.x), y: list(t.y),
      z: list(t.z), text: list(t.text), customdata: list(t.customdata),
      error_y: t.error_y && t.error_y.visible ? list(t.error_y.array) : null,
      error_x: t.error_x && t.error_x.visible ? list(t.error_x.array) : null})),
  };
}
return out;
"""


def plotted(driver) -> dict:
  """The figures a page has drawn (`PLOTTED_JS`)."""
  return driver.execute_script(PLOTTED_JS)


# For each drawn figure, the boxes of its title, modebar, legend, plotting area and axis titles
# (page pixels), to check that none covers another.
BOXES_JS = """
const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
  return r.width && r.height ? [r.left, r.top, r.right, r.bottom] : null; };
const out = {};
for (const g of document.querySelectorAll('.js-plotly-plot')) {
  const holder = g.closest('[id^="fig-"]');
  if (!holder) continue;
  out[holder.id] = {title: box(g.querySelector('.gtitle')), modebar: box(g.querySelector('.modebar')),
    legend: box(g.querySelector('.legend')), plot: box(g.querySelector('.nsewdrag')),
    xtitle: box(g.querySelector('.xtitle')), xticks: box(g.querySelector('.xaxislayer-above'))};
}
return out;
"""


def overlaps(a, b, slack=1.0) -> bool:
  """Whether two boxes [left, top, right, bottom] overlap by more than `slack` px."""
  if a is None or b is None:
    return False
  return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


def save_elements(driver, shots, directory) -> list:
  """Screenshots of page elements: {file name: element id}; returns the paths written."""
  from selenium.webdriver.common.by import By

  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, element_id in shots.items():
    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView()", element)
    time.sleep(0.3)  # a scroll can trigger a plotly relayout
    element.screenshot(str(directory / name))
    paths.append(directory / name)
  return paths


def wait_for(predicate, timeout=30, what="condition"):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(0.25)
  raise AssertionError(f"timed out waiting for {what}")
