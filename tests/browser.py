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


def wait_for(predicate, timeout=30, what="condition"):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(0.25)
  raise AssertionError(f"timed out waiting for {what}")
