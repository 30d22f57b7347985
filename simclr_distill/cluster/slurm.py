"""The SLURM launcher: a study (or one stage) submitted as a chain of array jobs.

  python -m stages.study --preset=paper --launcher=slurm --slurm_partition=gpu --wait

`plan_study` turns a study into jobs, one per step, each an array of tasks running the same
command with `--steps=<step>` (`stages.study`'s own steps, so every task builds exactly the
config the user gave):

  prepare  -> pretrain (one task per encoder) -> finetune -> label -> distill -> report
           -> baseline ------------------------------------------------------> report

Each job waits for the ones it reads (`--dependency=afterok`) and is cancelled when one of them
fails (`--kill-on-invalid-dep=yes`). Finetune, label, distill and baseline tasks are work-queue
workers (`--work_queue`): each claims one run or teacher pass at a time, so a slow ResNet152
run never leaves the other tasks idle; stage 1's tasks take one encoder each (their shard from
SLURM_ARRAY_TASK_ID). `write_scripts` writes one sbatch script per job and `submit.sh`, which
submits them in order with their dependencies, into `<workdir>/slurm/<stamp>/`: what runs is
exactly what a user reads there, and can edit and submit again by hand.

Every task is requeue-safe. SLURM's warning before the time limit (`--signal=B:USR1@N`) is
passed to the stage, which checkpoints its training run and exits with status 75
(`simclr_distill.preemption`); a task that exits so, or whose process was killed (a signal:
status > 128, e.g. `kill -9` or the OOM killer), requeues itself (`scontrol requeue`) up to
`max_requeues` times and resumes from its step checkpoint; a node failure or preemption is
requeued by SLURM itself (`--requeue`). Finished runs are never retrained, so results stay
exactly once. Each task writes its final exit status into `status/`, which `wait` reads (no
accounting database is needed).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import pathlib
import shlex
import subprocess
import time
from typing import Callable, Iterable, Mapping, Sequence

from simclr_distill import fileio, preemption

log = logging.getLogger(__name__)

# A study's jobs, in submission order, the study steps each runs and the jobs it waits for.
STUDY_JOBS = ("prepare", "pretrain", "finetune", "label", "distill", "baseline", "report")
STEPS = {"prepare": ("prepare",), "pretrain": ("pretrain",), "finetune": ("finetune",),
         "label": ("label",), "distill": ("distill",), "baseline": ("baseline",),
         "report": ("reference", "compare")}
AFTER = {"prepare": (), "pretrain": ("prepare",), "finetune": ("pretrain",),
         "label": ("finetune",), "distill": ("label",), "baseline": ("prepare",),
         "report": ("distill", "baseline")}
# Jobs whose tasks are work-queue workers (the others take a static shard, or are one task).
QUEUE = ("finetune", "label", "distill", "baseline")
SLURM_DIR = "slurm"


@dataclasses.dataclass(frozen=True)
class Resources:
  """What each task of one job asks SLURM for.

  Attributes:
    tasks: the array's size: how many tasks (workers) the job runs at most (fewer when it has
      less work: one per encoder, teacher or run).
    throttle: at most this many tasks at once (`--array=0-N%throttle`; 0: no limit).
    partition, account: `--partition`, `--account` ("" leaves them to SLURM's defaults).
    time: `--time` of each task (a task warned before it checkpoints and requeues itself).
    cpus: `--cpus-per-task`.
    mem: `--mem` (per node, i.e. per task here), e.g. "16G".
    gpus: `--gpus-per-task` (0: none asked).
    gres: `--gres`, e.g. "gpu:a100:1" (for sites that allocate GPUs by gres).
    extra: further sbatch options, each as on the command line, e.g. "--qos=long".
  """

  tasks: int = 1
  throttle: int = 0
  partition: str = ""
  account: str = ""
  time: str = "1:00:00"
  cpus: int = 1
  mem: str = "4G"
  gpus: int = 0
  gres: str = ""
  extra: tuple[str, ...] = ()

  def __post_init__(self):
    if self.tasks < 1 or self.throttle < 0 or self.cpus < 1 or self.gpus < 0:
      raise ValueError(f"SLURM resources {self}: tasks and cpus must be >= 1, throttle and "
                       "gpus >= 0")

  def directives(self) -> list[str]:
    """The `#SBATCH` options these resources give (the array is added by the job)."""
    out = [f"--cpus-per-task={self.cpus}", f"--mem={self.mem}", f"--time={self.time}"]
    out += [f"--partition={self.partition}"] if self.partition else []
    out += [f"--account={self.account}"] if self.account else []
    out += [f"--gpus-per-task={self.gpus}"] if self.gpus else []
    out += [f"--gres={self.gres}"] if self.gres else []
    return out + list(self.extra)


# Defaults by kind of run. A CPU study (the digits demo, smoke): small tasks. The paper's:
# one GPU per task for every training job, stage 1 long, the report on CPU.
CPU_RESOURCES = {name: Resources(tasks=2, cpus=1, mem="4G", time="1:00:00") for name in STUDY_JOBS}
GPU_RESOURCES = {
    "prepare": Resources(tasks=1, cpus=16, mem="64G", time="12:00:00"),
    "pretrain": Resources(tasks=3, cpus=8, mem="64G", time="48:00:00", gpus=1),
    "finetune": Resources(tasks=12, cpus=8, mem="32G", time="12:00:00", gpus=1),
    "label": Resources(tasks=12, cpus=8, mem="32G", time="4:00:00", gpus=1),
    "distill": Resources(tasks=30, cpus=8, mem="32G", time="24:00:00", gpus=1),
    "baseline": Resources(tasks=20, cpus=8, mem="32G", time="24:00:00", gpus=1),
    "report": Resources(tasks=1, cpus=8, mem="64G", time="4:00:00"),
}


def default_resources(preset: str) -> dict[str, Resources]:
  """The per-job defaults for a preset: GPU tasks for the paper's presets, CPU otherwise."""
  return dict(GPU_RESOURCES if preset.startswith("paper") else CPU_RESOURCES)


@dataclasses.dataclass(frozen=True)
class SlurmConfig:
  """How a chain is submitted.

  Attributes:
    resources: per job name (see `STUDY_JOBS`).
    max_requeues: a task requeues itself after a warning signal or a kill at most this many
      times (SLURM_RESTART_COUNT), then fails (an OOM-killed task does not loop forever).
    signal_seconds: SLURM warns each task this many seconds before its time limit
      (`--signal=B:USR1@N`); it checkpoints and requeues (0: no warning).
    python: the interpreter the tasks run (default: this one, e.g. the project's venv).
    setup: shell lines each task runs first (e.g. "module load cuda/12.2").
  """

  resources: Mapping[str, Resources] = dataclasses.field(
      default_factory=lambda: dict(CPU_RESOURCES))
  max_requeues: int = 3
  signal_seconds: int = 120
  python: str = ""
  setup: tuple[str, ...] = ()

  def __post_init__(self):
    unknown = set(self.resources) - set(STUDY_JOBS)
    if unknown:
      raise ValueError(f"unknown SLURM job(s) {', '.join(sorted(unknown))}; known: "
                       f"{', '.join(STUDY_JOBS)}")
    if self.max_requeues < 0 or self.signal_seconds < 0:
      raise ValueError("--slurm_max_requeues and --slurm_signal_seconds must be >= 0")


def per_job(text: str | Sequence[str] | None, convert: Callable[[str], object] = str
            ) -> dict[str, object]:
  """Parses a per-job setting: "VALUE" for every job, "JOB=VALUE" for one, or both, comma
  separated (a list of items for a repeated flag), e.g. "12:00:00,pretrain=48:00:00".
  Returns {job or "*": value}.

  Raises:
    ValueError: for a value `convert` refuses, naming the item.
  """
  items = ([text] if isinstance(text, str) else list(text or ()))
  out: dict[str, object] = {}
  for group in items:
    for item in ([group] if group.startswith("-") else group.split(",")):
      job, sep, value = item.partition("=")
      target, raw = (job, value) if sep and job in STUDY_JOBS else ("*", item)
      try:
        out[target] = convert(raw)
      except ValueError:
        raise ValueError(f"{item!r}: {raw!r} is not a valid value") from None
  return out


def apply(resources: Mapping[str, Resources], field: str, values: Mapping[str, object]
          ) -> dict[str, Resources]:
  """`resources` with `field` set from a `per_job` result ("*" first, then per job)."""
  out = dict(resources)
  for target in ["*"] + [k for k in values if k != "*"]:
    if target not in values:
      continue
    value = values[target]
    for name in (STUDY_JOBS if target == "*" else (target,)):
      current = out.get(name, Resources())
      new = current.extra + (value,) if field == "extra" else value
      out[name] = dataclasses.replace(current, **{field: new})
  return out


@dataclasses.dataclass(frozen=True)
class Job:
  """One array job: `tasks` tasks running `command` (argv), after the jobs named in `after`."""

  name: str
  command: tuple[str, ...]
  tasks: int
  resources: Resources
  after: tuple[str, ...] = ()
  note: str = ""  # What the job does, for the script's header.


def plan_study(command: Sequence[str], counts: Mapping[str, int], config: SlurmConfig,
               *, python: str, queue: bool = True) -> list[Job]:
  """The jobs of a study.

  Args:
    command: the study's arguments as given (no launcher flags), e.g. ["--preset=paper",
      "--workdir=W"]; each task runs `python -m stages.study <command> --steps=<its steps>`.
    counts: how much work each job has ("pretrain": encoders, "finetune": teacher runs,
      "label": teachers, "distill": student runs, "baseline": baseline runs); a job with none
      is left out and the jobs after it wait for the ones before it.
    queue: the QUEUE jobs' tasks are work-queue workers; False gives each a static shard (from
      SLURM_ARRAY_TASK_ID), for filesystems whose locks do not work across nodes.
  """
  present = [n for n in STUDY_JOBS if n in ("prepare", "report") or counts.get(n, 0) > 0]

  def after(name: str) -> tuple[str, ...]:
    out: list[str] = []
    for dep in AFTER[name]:
      out += [dep] if dep in present else list(after(dep))
    return tuple(dict.fromkeys(out))

  jobs = []
  for name in present:
    res = config.resources.get(name, Resources())
    tasks = min(res.tasks, counts.get(name, 1)) if name not in ("prepare", "report") else 1
    argv = [python, "-m", "stages.study", *command, f"--steps={','.join(STEPS[name])}"]
    note = _NOTES[name]
    if name in QUEUE and queue:
      argv.append("--work_queue")
    elif name in QUEUE:
      note = note.replace("work-queue workers, one run at a time", "one shard each")
    jobs.append(Job(name, tuple(argv), max(1, tasks), res, after(name), note))
  return jobs


_NOTES = {
    "prepare": "prepare the data (and check every input of the study)",
    "pretrain": "stage 1: pretrain the encoders, one per task (shard from SLURM_ARRAY_TASK_ID)",
    "finetune": "stage 2: fine-tune the teachers (work-queue workers, one run at a time)",
    "label": "stage 3: label the data with each teacher once (work-queue workers, one run at a time)",
    "distill": "stage 3: distil the students (work-queue workers, one run at a time)",
    "baseline": "the supervised baselines (work-queue workers, one run at a time)",
    "report": "the classical reference, then the results table and the study's comparisons",
}


def plan_stage(stage: str, command: Sequence[str], config: SlurmConfig, *, python: str,
               queue: bool, tasks: int | None = None) -> list[Job]:
  """One job running `python -m stages.<stage> <command>` in each task: work-queue workers
  when `queue`, else shards from SLURM_ARRAY_TASK_ID; its resources are those of `stage`'s
  job, its size `tasks` (default: the resources')."""
  res = config.resources.get(stage, Resources())
  argv = [python, "-m", f"stages.{stage}", *command] + (["--work_queue"] if queue else [])
  tasks = tasks or res.tasks
  return [Job(stage, tuple(argv), tasks, res, (),
              f"stages.{stage} on {tasks} task(s)" + (" (work-queue workers)" if queue else ""))]


def render_script(job: Job, *, cwd: str | os.PathLike, out_dir: pathlib.Path,
                  config: SlurmConfig) -> str:
  """The sbatch script of `job` (see the module docstring for what it does on a signal)."""
  res = job.resources
  array = f"0-{job.tasks - 1}" + (f"%{res.throttle}" if res.throttle else "")
  directives = [f"--job-name=sd-{job.name}", f"--array={array}", f"--chdir={cwd}",
                f"--output={out_dir / 'logs'}/{job.name}-%A_%a.out", "--open-mode=append",
                "--ntasks=1", *res.directives(), "--requeue"]
  if config.signal_seconds:
    directives.append(f"--signal=B:USR1@{config.signal_seconds}")
  command = " ".join(shlex.quote(str(a)) for a in job.command)
  setup = "\n".join(config.setup)
  status = out_dir / "status"
  return f"""#!/bin/bash
# simclr_distill: {job.name}: {job.note}.
# {job.tasks} task(s); submitted by submit.sh beside this file, after: {', '.join(job.after) or 'nothing'}.
# Edit freely and resubmit (bash submit.sh): every task skips the work already finished.
{chr(10).join('#SBATCH ' + d for d in directives)}
set -u
{setup}
export PYTHONUNBUFFERED=1
task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
shard=$((SLURM_ARRAY_TASK_ID - ${{SLURM_ARRAY_TASK_MIN:-0}}))
echo "[$(date -Is)] {job.name} task $task (shard $shard of {job.tasks}) on $(hostname), attempt $((${{SLURM_RESTART_COUNT:-0}} + 1))"
{command} &
child=$!
# SLURM's warning before the time limit reaches this shell (--signal=B:USR1@N): pass it on;
# the stage checkpoints its training run and exits with status {preemption.EXIT_CODE}.
trap 'echo "[$(date -Is)] USR1: the time limit is near; the stage checkpoints"; kill -USR1 "$child"' USR1
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ "$status" -eq {preemption.EXIT_CODE} ] || [ "$status" -gt 128 ]; then
  # Checkpointed on a warning, or killed (a signal: kill -9, the OOM killer): requeue this task;
  # it resumes at its last step checkpoint.
  if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {config.max_requeues} ]; then
    echo "[$(date -Is)] exit status $status: requeueing $task (resumes at its last checkpoint)"
    if scontrol requeue "$task"; then sleep 600; exit "$status"; fi
  else
    echo "[$(date -Is)] exit status $status after {config.max_requeues} requeue(s): giving up"
  fi
fi
status_file={shlex.quote(str(status))}/{job.name}-$shard
mkdir -p "$(dirname "$status_file")"
echo "$status" > "$status_file.tmp" && mv "$status_file.tmp" "$status_file"
echo "[$(date -Is)] {job.name} task $task ended with exit status $status"
exit "$status"
"""


def render_submit(jobs: Sequence[Job]) -> str:
  """`submit.sh`: submits the jobs in order, each after the jobs it reads, and prints one
  "<job> <job id>" line per job."""
  lines = ["#!/bin/bash",
           "# Submits the chain: each job waits for the ones it reads (afterok) and is cancelled",
           "# when one of them fails (kill-on-invalid-dep). Prints one '<job> <job id>' line each.",
           "set -euo pipefail", 'cd "$(dirname "$0")"']
  for job in jobs:
    dep = (f" --dependency=afterok:{':'.join('$' + _var(a) for a in job.after)} "
           "--kill-on-invalid-dep=yes" if job.after else "")
    lines += [f"{_var(job.name)}=$(sbatch --parsable{dep} {job.name}.sbatch | cut -d';' -f1)",
              f'echo "{job.name} ${_var(job.name)}"']
  return "\n".join(lines) + "\n"


def _var(name: str) -> str:
  return f"job_{name}"


@dataclasses.dataclass(frozen=True)
class Submission:
  """A chain written (and maybe submitted): its directory, its jobs and their SLURM ids."""

  directory: pathlib.Path
  jobs: tuple[Job, ...]
  ids: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def status_dir(self) -> pathlib.Path:
    return self.directory / "status"


def write_scripts(jobs: Sequence[Job], workdir: str | os.PathLike, config: SlurmConfig, *,
                  cwd: str | os.PathLike | None = None, stamp: str | None = None) -> Submission:
  """Writes each job's script and `submit.sh` into `<workdir>/slurm/<stamp>/`."""
  stamp = stamp or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  out_dir = (pathlib.Path(workdir) / SLURM_DIR / stamp).absolute()
  suffix = 1
  while out_dir.exists():  # Two chains written in one second each keep their own.
    suffix += 1
    out_dir = out_dir.with_name(f"{stamp}-{suffix}")
  (out_dir / "logs").mkdir(parents=True)
  for job in jobs:
    fileio.write_text(out_dir / f"{job.name}.sbatch",
                      render_script(job, cwd=cwd or os.getcwd(), out_dir=out_dir, config=config))
  fileio.write_text(out_dir / "submit.sh", render_submit(jobs))
  return Submission(out_dir, tuple(jobs))


def submit(submission: Submission, *, run=subprocess.run) -> Submission:
  """Runs `submit.sh`; returns the submission with its job ids (also in `submitted.json`).

  Raises:
    RuntimeError: when sbatch refuses a job (the jobs submitted before it are cancelled).
  """
  proc = run(["bash", str(submission.directory / "submit.sh")], capture_output=True, text=True)
  ids = dict(line.split(maxsplit=1) for line in proc.stdout.splitlines() if line.strip())
  if proc.returncode != 0:
    if ids:
      run(["scancel", *ids.values()], capture_output=True, text=True)
    raise RuntimeError(f"sbatch refused the chain in {submission.directory} (exit status "
                       f"{proc.returncode}): {proc.stderr.strip()}"
                       + (f"; cancelled the jobs already submitted ({', '.join(ids.values())})"
                          if ids else ""))
  fileio.write_json(submission.directory / "submitted.json",
                    {"jobs": {j.name: {"id": ids[j.name], "tasks": j.tasks, "after": list(j.after)}
                              for j in submission.jobs}})
  return dataclasses.replace(submission, ids=ids)


def task_states(ids: Iterable[str], *, run=subprocess.run) -> dict[str, str]:
  """{array task id: state} of the chain's tasks still pending or running (this user's
  squeue, one line per array task, filtered to the chain's jobs).

  Raises:
    RuntimeError: when squeue fails (the controller does not answer).
  """
  ids = set(ids)
  proc = run(["squeue", "-h", "-r", "-u", str(os.getuid()), "-o", "%i %T %r"],
             capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"squeue failed (exit status {proc.returncode}): {proc.stderr.strip()}")
  out = {}
  for line in proc.stdout.splitlines():
    parts = line.split(maxsplit=2)
    if len(parts) >= 2 and parts[0].split("_")[0] in ids:
      out[parts[0]] = parts[1] + (f" ({parts[2]})" if len(parts) > 2 and parts[2] != "None"
                                  else "")
  return out


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a chain ended: each task's exit status (None: it never finished, e.g. cancelled)."""

  statuses: Mapping[str, Mapping[int, int | None]]

  @property
  def ok(self) -> bool:
    return all(s == 0 for tasks in self.statuses.values() for s in tasks.values())

  def failures(self) -> list[str]:
    out = []
    for job, tasks in self.statuses.items():
      for shard, status in sorted(tasks.items()):
        if status is None:
          out.append(f"{job} task {shard}: did not finish (cancelled: a job it waits for failed, "
                     "or it was cancelled)")
        elif status:
          out.append(f"{job} task {shard}: exit status {status}")
    return out


def outcome(submission: Submission) -> Outcome:
  """Each task's final exit status, from the files the tasks write into `status/`."""
  statuses = {}
  for job in submission.jobs:
    tasks = {}
    for shard in range(job.tasks):
      path = submission.status_dir / f"{job.name}-{shard}"
      tasks[shard] = int(path.read_text().strip()) if path.is_file() else None
    statuses[job.name] = tasks
  return Outcome(statuses)


def wait(submission: Submission, *, poll_seconds: float = 10.0, report=print,
         run=subprocess.run) -> Outcome:
  """Blocks until no task of the chain is pending or running, reporting each change of the
  jobs' states; returns how the tasks ended."""
  names = {v: k for k, v in submission.ids.items()}
  last = None
  start = time.monotonic()
  while True:
    states = task_states(submission.ids.values(), run=run)
    if not states:
      break
    summary = {}
    for task, state in states.items():
      job = names.get(task.split("_")[0], task)
      summary.setdefault(job, []).append(state.split(" ")[0].lower())
    line = "; ".join(f"{job}: " + ", ".join(f"{n} {s}" for s, n in sorted(
        {s: v.count(s) for s in v}.items())) for job, v in summary.items())
    if line != last:
      report(f"[{time.monotonic() - start:5.0f} s] {line}")
      last = line
    time.sleep(poll_seconds)
  return outcome(submission)


def launch(jobs: Sequence[Job], workdir: str | os.PathLike, config: SlurmConfig, *,
           dry_run: bool = False, wait_for_end: bool = False, report=print,
           poll_seconds: float = 10.0) -> int:
  """Writes the chain's scripts, then prints them (`dry_run`) or submits them, and with
  `wait_for_end` blocks until every task has ended. Returns the command's exit status: 0, or 1
  when a task failed or never ran."""
  submission = write_scripts(jobs, workdir, config)
  if dry_run:
    for name in [*(f"{j.name}.sbatch" for j in jobs), "submit.sh"]:
      report(f"==> {submission.directory / name} <==")
      report((submission.directory / name).read_text())
    report(f"(dry run: nothing submitted; `bash {submission.directory / 'submit.sh'}` submits "
           "these scripts as they are)")
    return 0
  submission = submit(submission)
  report(describe(submission, workdir))
  if not wait_for_end:
    return 0
  result = wait(submission, poll_seconds=poll_seconds, report=report)
  if result.ok:
    report(f"every task of the chain finished ({sum(j.tasks for j in jobs)} tasks); the "
           f"study's comparisons: `python -m stages.results --compare --workdirs={workdir}`, "
           f"the report job's log: {submission.directory / 'logs'}/report-*.out")
    return 0
  report("the chain did not finish:\n  " + "\n  ".join(result.failures())
         + f"\nlogs: {submission.directory / 'logs'}; fix the cause and run the same command "
         "again: finished work is skipped")
  return 1


def describe(submission: Submission, workdir: str | os.PathLike) -> str:
  """What was submitted and how to follow it, for the command's output."""
  d = submission.directory
  lines = [f"submitted {len(submission.jobs)} job(s); scripts, logs and statuses in {d}/:"]
  for job in submission.jobs:
    lines.append(f"  {job.name:<9} job {submission.ids.get(job.name, '-'):<8} {job.tasks} task(s)"
                 + (f", after {', '.join(job.after)}" if job.after else ""))
  ids = ",".join(submission.ids.values())
  lines += [f"watch:   squeue -j {ids}", f"logs:    tail -f {d}/logs/*.out",
            f"cancel:  scancel {ids.replace(',', ' ')}",
            f"results: python -m stages.results --workdirs={workdir} (as runs finish)",
            "resume:  after a failure, fix its cause and run the same command again: finished "
            "runs, teachers and encoders are skipped"]
  return "\n".join(lines)
