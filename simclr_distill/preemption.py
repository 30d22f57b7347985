"""Stopping on a warning: a job told that its time is nearly up (SLURM's `--signal=B:USR1@120`,
forwarded to this process), preempted (SIGTERM) or asked to stop by a person checkpoints and
exits with `EXIT_CODE`, so the requeued or rerun command resumes where it stopped.

The entry points call `install()`. A signal that arrives while a model trains is honoured at
the next step: the step checkpoint (`checkpointing.StepCheckpoint`) saves the position and
raises `Preempted`. Anywhere else (loading, labelling, scoring) it raises `Preempted` at once:
every file is written atomically and every finished step is skipped on a rerun, so stopping
there loses at most the unfinished piece, exactly as a kill would. A second signal while a
deferred one waits for its step also raises at once.
"""

from __future__ import annotations

import contextlib
import signal

# EX_TEMPFAIL of sysexits.h: "try again later". The SLURM scripts requeue a task that exits so.
EXIT_CODE = 75
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

_state = {"signal": None, "fitting": 0}


class Preempted(BaseException):
  """Raised to stop the command after a warning signal (after the step checkpoint, if a model
  was training). A BaseException, like KeyboardInterrupt: no `except Exception` may turn it
  into a failed run."""

  def __init__(self, signum: int, checkpointed: bool = False):
    self.signum, self.checkpointed = signum, checkpointed
    super().__init__(f"stopped by {signal.Signals(signum).name}"
                     + (" after checkpointing the training run" if checkpointed else ""))


def _handler(signum, frame):
  del frame
  deferred = _state["signal"] is not None
  _state["signal"] = signum
  if not _state["fitting"] or deferred:
    raise Preempted(signum)


def install(signals=SIGNALS) -> None:
  """Handles `signals` as warnings (call from the main thread of an entry point)."""
  for signum in signals:
    signal.signal(signum, _handler)


def requested() -> int | None:
  """The warning signal received, or None."""
  return _state["signal"]


def reset() -> None:
  """Forgets a received signal (tests)."""
  _state["signal"] = None


@contextlib.contextmanager
def training():
  """Marks a fit in progress: a warning waits for the next step's checkpoint."""
  _state["fitting"] += 1
  try:
    yield
  finally:
    _state["fitting"] -= 1
