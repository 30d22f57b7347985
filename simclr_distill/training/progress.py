"""What a person watching a long job reads: progress within an epoch, and the study's progress
with an estimate of the time left.

One line per epoch would bury everything else in a study of hundreds of short runs, so those
lines are debug output (`executor.ProgressLogger`, shown with --verbosity=1). What the default
output shows instead:

  * `EpochProgress`: within an epoch that takes minutes (a paper-scale epoch is ~3,000 steps),
    a line at most every `INTERVAL_SECONDS` with the step, the rate and the epoch's ETA. An
    epoch shorter than that (the demo's take under a second) logs nothing.
  * one line per run (`loop.train_runs`, stage 1's `pretrained ...`), with its rate;
  * `StudyProgress` (stages.study): units of work done out of the study's, and an estimated
    time left from each step's measured time per unit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable

import keras

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0  # In-epoch progress lines at most this often.
STUDY_INTERVAL_SECONDS = 30.0  # The study's progress line at most this often within a step.


def duration(seconds: float) -> str:
  """`seconds` as a person reads it: "42 s", "3m05s", "2h10m", "3d04h"."""
  if not math.isfinite(seconds):
    return "?"
  seconds = max(0.0, seconds)
  if seconds < 90:
    return f"{seconds:.0f} s"
  minutes = int(round(seconds / 60)) if seconds >= 5400 else int(seconds // 60)
  if seconds < 5400:
    return f"{minutes}m{int(seconds % 60):02d}s"
  hours = minutes // 60
  if hours < 48:
    return f"{hours}h{minutes % 60:02d}m"
  return f"{hours // 24}d{hours % 24:02d}h"


class EpochProgress(keras.callbacks.Callback):
  """Logs, within an epoch, at most one line every `interval` seconds:
  "<label> epoch e/E: step s/S, N steps/s; epoch ETA ..., run ETA ~...".

  The rate is measured from the end of the epoch's first step (which, in a run's first
  epoch, includes tracing the step), the run's ETA counts training steps only (not
  validation). A resumed run starts mid-epoch (`start_at`, called by
  `checkpointing.resumable_fit`), and its steps are counted from there.

  Args:
    label: names the run.
    epochs, steps_per_epoch: the run's.
    interval: seconds between lines (the first comes `interval` seconds into an epoch).
    clock: seconds, monotonic (tests pass their own).
  """

  def __init__(self, label: str, epochs: int, steps_per_epoch: int, *,
               interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic):
    super().__init__()
    self.label, self.epochs, self.steps_per_epoch = label, epochs, steps_per_epoch
    self.interval, self._clock = interval, clock
    self._offset = 0  # Steps of the current epoch done before this `fit` call.
    self._epoch = 0
    self._last = 0.0  # When the last line was logged (or the epoch began).
    self._mark: tuple[float, int] | None = None  # (time, steps) at the epoch's first step end.
    self.lines = 0

  def start_at(self, position) -> None:
    """Called before a `fit` that starts `position.step` steps into an epoch."""
    self._offset = position.step

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch, self._mark, self._last = epoch, None, self._clock()

  def on_train_batch_end(self, batch, logs=None):
    now = self._clock()
    done = self._offset + batch + 1  # `batch` is the last step of a multi-step execution.
    if self._mark is None:
      self._mark = (now, done)
    if now - self._last < self.interval or done <= self._mark[1]:
      return
    self._last = now
    rate = (done - self._mark[1]) / max(now - self._mark[0], 1e-9)
    left = self.steps_per_epoch - done
    run_left = left + (self.epochs - self._epoch - 1) * self.steps_per_epoch
    log.info("%s epoch %d/%d: step %d/%d, %.3g steps/s; epoch ETA %s, run ETA ~%s", self.label,
             self._epoch + 1, self.epochs, done, self.steps_per_epoch, rate,
             duration(left / rate), duration(run_left / rate))
    self.lines += 1

  def on_epoch_end(self, epoch, logs=None):
    self._offset = 0


class Every:
  """Whether `seconds` have passed since it last said so (the first call says so when
  `first`); for lines worth logging now and then, not every time."""

  def __init__(self, seconds: float, *, first: bool = False,
               clock: Callable[[], float] = time.monotonic):
    self.seconds, self._clock = seconds, clock
    self._last = -math.inf if first else clock()

  def __call__(self) -> bool:
    now = self._clock()
    if now - self._last < self.seconds:
      return False
    self._last = now
    return True


# The study's steps whose work comes in units, and the kind of unit each counts.
UNITS = {"pretrain": "encoder", "finetune": "run", "label": "teacher", "distill": "run",
         "baseline": "run"}
_NOUNS = {"encoder": ("encoder", "encoders"), "run": ("run", "runs"),
          "teacher": ("teacher pass", "teacher passes")}
_TRAINING = ("finetune", "distill", "baseline")  # Runs of comparable cost: they time each other.


class _Step:
  def __init__(self, expected: int):
    self.expected = expected  # The study's estimate, until the step says how many it has.
    self.total: int | None = None
    self.done = 0
    self.timed, self.seconds = 0, 0.0  # Units done in this process, and their time.
    self.ended = False

  def count(self) -> int:
    if self.ended:
      return self.done
    return max(self.total if self.total is not None else self.expected, self.done)

  def rate(self) -> float | None:
    return self.seconds / self.timed if self.timed else None


class StudyProgress:
  """The study's progress: units of work (encoders pretrained, teacher and student runs
  trained, teacher passes) done out of the study's, and the time left, estimated.

  The estimate is each step's mean seconds per unit measured in this process, times its units
  left; a training step not timed yet borrows the mean of those that are (fine-tuning, distilling
  and the baselines each train one network per unit), and a step that can borrow nothing is
  named as not timed yet. Units finished by an earlier invocation count as done, untimed.

  Args:
    expected: units of each step (`UNITS`' keys) this process is expected to do; each step
      corrects its count when it starts (`planned`).
    interval: seconds between two lines within a step (a step's end logs one, unless its last
      unit has just logged it).
    clock: seconds, monotonic (tests pass their own).
  """

  def __init__(self, expected: dict[str, int], *, interval: float = STUDY_INTERVAL_SECONDS,
               clock: Callable[[], float] = time.monotonic):
    self.steps = {name: _Step(n) for name, n in expected.items() if n}
    self._clock = clock
    self._start = clock()
    self._due = Every(interval, clock=clock)
    self._current: str | None = None
    self._said: tuple[int, int] | None = None  # (done, total) in the last line logged.

  def describe(self) -> str:
    """The plan, as one line."""
    return "study: %d units of work to do: %s" % (
        sum(s.count() for s in self.steps.values()),
        ", ".join(f"{name} {s.count()} {_NOUNS[UNITS[name]][s.count() != 1]}"
                  for name, s in self.steps.items()))

  @contextlib.contextmanager
  def step(self, name: str):
    """The study's step `name` runs in this block; its units are counted, and its end logged."""
    self._current = name if name in self.steps else None
    try:
      yield
    finally:
      step = self.steps.get(name)
      if step is not None:
        step.ended = True
        if self._said != self._counts():  # Unless the step's last unit has just said it.
          self._log()
      self._current = None

  def _step(self, kind: str) -> _Step | None:
    name = self._current
    return self.steps[name] if name is not None and UNITS[name] == kind else None

  def planned(self, kind: str, total: int, finished: int = 0) -> None:
    """The current step has `total` more units of `kind`, `finished` of them done already."""
    step = self._step(kind)
    if step is not None:
      step.total = (step.total or 0) + total
      step.done += finished

  def done(self, kind: str, seconds: float | None = None) -> None:
    """One unit of `kind` of the current step is done, in `seconds` (None: it was finished
    before, untimed)."""
    step = self._step(kind)
    if step is None:
      return
    step.done += 1
    if seconds is not None:
      step.timed, step.seconds = step.timed + 1, step.seconds + seconds
    if self._due():
      self._log()

  def _counts(self) -> tuple[int, int]:
    return (sum(s.done for s in self.steps.values()), sum(s.count() for s in self.steps.values()))

  def _log(self) -> None:
    self._said = self._counts()
    log.info("%s", self.line())

  def eta(self) -> tuple[float, list[str], list[str]]:
    """(seconds left, the steps timed by borrowing, the steps not timed: not counted)."""
    training = [s.rate() for n, s in self.steps.items() if n in _TRAINING and s.rate()]
    borrowed_rate = sum(training) / len(training) if training else None
    seconds, borrowed, untimed = 0.0, [], []
    for name, step in self.steps.items():
      left = step.count() - step.done
      if left <= 0:
        continue
      rate = step.rate()
      if rate is None and name in _TRAINING and borrowed_rate is not None:
        rate = borrowed_rate
        borrowed.append(name)
      if rate is None:
        untimed.append(name)
      else:
        seconds += left * rate
    return seconds, borrowed, untimed

  def line(self) -> str:
    """The progress line: units done, elapsed, and the ETA with what it rests on."""
    done, total = self._counts()
    parts = ", ".join(f"{n} {s.done}/{s.count()}" for n, s in self.steps.items())
    text = (f"study: {done}/{total} units of work done, {duration(self._clock() - self._start)} "
            f"elapsed ({parts})")
    if done >= total:
      return text
    seconds, borrowed, untimed = self.eta()
    if seconds == 0 and untimed:
      return f"{text}; no ETA until a unit of {', '.join(untimed)} is timed"
    how = "an estimate from each step's mean time per unit so far"
    if borrowed:
      how += f"; {', '.join(borrowed)} at the other training steps'"
    more = f" + {', '.join(untimed)} (not timed yet)" if untimed else ""
    return f"{text}; ETA ~{duration(seconds)}{more} ({how})"


_study: StudyProgress | None = None  # The study this process runs (stages.study), if any.


@contextlib.contextmanager
def tracking(study: StudyProgress | None):
  """Reports the units of work done in this block to `study` (None: to nothing)."""
  global _study
  previous, _study = _study, study
  try:
    yield study
  finally:
    _study = previous


def planned(kind: str, total: int, finished: int = 0) -> None:
  """Tells the study being tracked, if any, of `total` units of `kind` (`StudyProgress.planned`)."""
  if _study is not None:
    _study.planned(kind, total, finished)


def done(kind: str, seconds: float | None = None) -> None:
  """Tells the study being tracked, if any, that a unit of `kind` is done."""
  if _study is not None:
    _study.done(kind, seconds)
