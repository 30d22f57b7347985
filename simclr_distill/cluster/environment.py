"""This process's shard of a stage, from the scheduler that started it.

  * A SLURM array task: shard SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of
    SLURM_ARRAY_TASK_COUNT (an array `--array=5-8` gives shards 0..3 of 4).
  * A Kubernetes Indexed Job: shard JOB_COMPLETION_INDEX; the number of shards (the Job's
    `completions`) is not in a pod's environment, so it must be given (`--num_shards`).

Flags given on the command line always win; `--work_queue` takes no shard.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Shard:
  index: int
  count: int
  source: str  # Where it came from, for the log line.


def _int(environ: Mapping[str, str], name: str) -> int:
  try:
    return int(environ[name])
  except ValueError:
    raise ValueError(f"{name}={environ[name]!r} is not an integer") from None


def environment_shard(environ: Mapping[str, str], *, num_shards: int | None = None
                      ) -> Shard | None:
  """The shard the scheduler's variables in `environ` give, or None outside an array.

  Args:
    num_shards: the number of shards given on the command line, if any (required with
      JOB_COMPLETION_INDEX; checked against SLURM_ARRAY_TASK_COUNT).

  Raises:
    ValueError: for an index outside its count, a Kubernetes index without `num_shards`, or
      a SLURM array whose size differs from `num_shards`.
  """
  if "SLURM_ARRAY_TASK_ID" in environ:
    index = _int(environ, "SLURM_ARRAY_TASK_ID") - _int(
        environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else _int(
        environ, "SLURM_ARRAY_TASK_ID")
    count = _int(environ, "SLURM_ARRAY_TASK_COUNT") if "SLURM_ARRAY_TASK_COUNT" in environ else None
    if count is None:
      if num_shards is None:
        raise ValueError("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT (SLURM "
                         "older than 19.05?): give --num_shards=<the array's size>")
      count = num_shards
    if num_shards is not None and num_shards != count:
      raise ValueError(f"--num_shards={num_shards} differs from this SLURM array's "
                       f"{count} tasks: drop --num_shards, or give --shard_index too")
    # A step task of a non-contiguous array (--array=1,4,9) has ids, not positions; the
    # positions of such arrays are not in the environment.
    if not 0 <= index < count:
      raise ValueError(f"SLURM array task {environ['SLURM_ARRAY_TASK_ID']} is not one of "
                       f"{count} consecutive tasks (use --array=0-{count - 1}, or give "
                       "--shard_index and --num_shards)")
    return Shard(index, count, f"SLURM array task {environ['SLURM_ARRAY_TASK_ID']}")
  if "JOB_COMPLETION_INDEX" in environ:
    index = _int(environ, "JOB_COMPLETION_INDEX")
    if num_shards is None:
      raise ValueError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but the number of "
                       "shards is not in the environment: give --num_shards=<the Job's "
                       "completions>")
    if not 0 <= index < num_shards:
      raise ValueError(f"JOB_COMPLETION_INDEX={index} is not below --num_shards={num_shards}")
    return Shard(index, num_shards, f"Kubernetes JOB_COMPLETION_INDEX={index}")
  return None
