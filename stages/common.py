"""What the stage entry points share: their flags, generated from `simclr_distill.settings`,
the config those flags build, and how a bad input ends (exit status 2 and a message).

Each setting's flag defaults to None ("take the preset's value"); only flags given on the
command line (or in a --flagfile) override the preset, then each --set=PATH=VALUE, all through
`config.override`, which checks every invariant again. `parse_flags` builds the config as
soon as the flags parse: a bad setting ends the command, and --print_config prints the config
and exits, before TensorFlow loads and before anything is written.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Callable

from absl import flags

from simclr_distill import config as config_lib
from simclr_distill import config_paths, settings
from simclr_distill import study_config

FLAGS = flags.FLAGS

GROUPS = settings.STAGE3_GROUPS
STUDY_GROUPS = settings.STUDY_GROUPS

# absl's definition of each kind of setting (an ENUM's also takes its choices).
_DEFINE = {settings.STR: flags.DEFINE_string, settings.INT: flags.DEFINE_integer,
           settings.FLOAT: flags.DEFINE_float, settings.BOOL: flags.DEFINE_boolean,
           settings.LIST: flags.DEFINE_list, settings.INT_LIST: flags.DEFINE_list,
           settings.FLOAT_LIST: flags.DEFINE_list, settings.MULTI: flags.DEFINE_multi_string}
_SET_EXAMPLES = {"distill": "--set=train.epochs=3 --set=data.split_percents=3,10",
                 "study": "--set=distill.train.epochs=3 --set=pretrain.temperature=0.2",
                 "prepare": "--set=examples_per_shard=500"}
_root: str | None = None  # The config this command's flags build: "distill", "study", "prepare".
_built: dict[str, Any] = {}  # That config, built once from the parsed flags (`parse_flags`).


def define_flags(groups=GROUPS, presets=None, *, flag_values=FLAGS) -> None:
  """Defines the flags of a stage-3 command, which builds a `DistillConfig` (call once, at
  import of an entry point); every setting's flag comes from `settings.SETTINGS`.

  Args:
    groups: which of GROUPS the command takes; --preset, --workdir, --set and --print_config
      are always defined.
    presets: names accepted by --preset (default: the stage-3 presets).
    flag_values: where to define them (tests pass their own).
  """
  _define("distill", groups, presets or config_lib.PRESETS, flag_values)


def define_study_flags(groups=STUDY_GROUPS, presets=None, *, flag_values=FLAGS) -> None:
  """Defines the flags of a command that builds a `StudyConfig` (stages 1 and 2, the
  baselines, the whole study), as `define_flags` does.

  Args:
    groups: which of STUDY_GROUPS the command takes.
    presets: names accepted by --preset (default: the study's presets).
    flag_values: where to define them (tests pass their own).
  """
  _define("study", groups, presets or study_config.PRESETS, flag_values)


def define_prepare_flags(*, flag_values=FLAGS) -> None:
  """Defines the flags of `stages.prepare`, which builds a `study_config.PrepareConfig` (no
  presets: its defaults are the study's)."""
  _define("prepare", settings.PREPARE_GROUPS, None, flag_values)


def _define(root: str, groups, presets, flag_values: flags.FlagValues) -> None:
  global _root
  known = sorted(set(STUDY_GROUPS) | set(settings.PREPARE_GROUPS))
  unknown = set(groups) - set(known)
  if unknown:
    raise ValueError(f"unknown flag group(s) {', '.join(sorted(unknown))}; known: "
                     f"{', '.join(known)}")
  if flag_values is FLAGS:
    _root = root
  if presets:
    _define_preset(presets, flag_values)
  _define_settings(root, groups, flag_values)


def _define_preset(presets, flag_values: flags.FlagValues) -> None:
  flags.DEFINE_enum("preset", "demo", sorted(presets),
                    "Starting configuration: demo (digits, CPU, ~minutes), smoke (<2 min), "
                    "paper (the study on BigEarthNet-S2 records), patient (function matching "
                    "on a long cosine schedule), methods (stages.study: the teaching methods "
                    "compared). Flags override it.", flag_values=flag_values)


def _define_settings(root: str, groups, flag_values: flags.FlagValues) -> None:
  for row in settings.offered(root, groups):
    if row.kind == settings.ENUM:
      flags.DEFINE_enum(row.flag, None, row.choices, row.help, flag_values=flag_values)
    else:
      _DEFINE[row.kind](row.flag, None, row.help, flag_values=flag_values)
  if {"teachers", "encoders"} & set(groups):  # Not a setting: `safe_mode()` reads it.
    flags.DEFINE_boolean("unsafe_load", False, "Load models with Keras safe_mode off (runs code "
                         "in Lambda layers). Only for checkpoints you trust.",
                         flag_values=flag_values)
  flags.DEFINE_multi_string("set", None, "Set any config field by its dotted path, after the "
                            f"other flags (repeatable), e.g. {_SET_EXAMPLES[root]}; "
                            "--print_config lists the paths", flag_values=flag_values)
  flags.DEFINE_boolean("print_config", False, "Print the resolved config (the preset, then the "
                       "flags, then --set) as PATH=VALUE lines and exit before anything runs.",
                       flag_values=flag_values)


# Flags of the launcher itself: never passed on to the commands the cluster's tasks run.
LAUNCHER_FLAGS = ("launcher", "dry_run", "wait", "steps", "slurm_queue", "slurm_tasks", "slurm_throttle",
                  "slurm_partition", "slurm_account", "slurm_time", "slurm_cpus", "slurm_mem",
                  "slurm_gpus", "slurm_gres", "slurm_extra", "slurm_max_requeues",
                  "slurm_signal_seconds", "slurm_setup", "slurm_python")
_PER_JOB = ("A value for every job, JOB=VALUE for one, or both, comma separated (jobs: "
            "prepare, pretrain, finetune, label, distill, baseline, report).")


def define_launcher_flags(*, flag_values=FLAGS) -> None:
  """--launcher and the SLURM settings (see `simclr_distill.cluster.slurm`)."""
  flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "local: run here. slurm: submit "
                    "this command to SLURM as array jobs (stages.study: the whole chain, each step "
                    "after the ones it reads) and return; --wait blocks until they end.",
                    flag_values=flag_values)
  flags.DEFINE_boolean("dry_run", False, "With --launcher=slurm: write the sbatch scripts into "
                       "<workdir>/slurm/ and print them; submit nothing.", flag_values=flag_values)
  flags.DEFINE_boolean("wait", False, "With --launcher=slurm: block until every task has ended, "
                       "reporting their states; exit 1 if any failed or never ran.",
                       flag_values=flag_values)
  for name, example, what in (
      ("tasks", "4,distill=30", "Tasks (workers) per array job, at most one per piece of work"),
      ("throttle", "distill=8", "At most this many tasks of a job at once (--array=...%N)"),
      ("partition", "gpu,report=cpu", "--partition"), ("account", "mylab", "--account"),
      ("time", "12:00:00,pretrain=48:00:00", "--time of each task (it checkpoints and requeues "
       "itself when warned before the limit)"),
      ("cpus", "8", "--cpus-per-task"), ("mem", "32G,report=64G", "--mem"),
      ("gpus", "1,report=0", "--gpus-per-task (default: 1 for the paper preset's training "
       "jobs, 0 otherwise)"),
      ("gres", "gpu:a100:1", "--gres")):
    flags.DEFINE_string(f"slurm_{name}", None, f"{what}. {_PER_JOB} E.g. {example}. Default: "
                        "by preset (paper: GPU tasks; others: small CPU tasks).",
                        flag_values=flag_values)
  flags.DEFINE_multi_string("slurm_extra", None, "Another sbatch option for every job, or "
                            "JOB=OPTION for one (repeatable), e.g. --slurm_extra=--qos=long "
                            "--slurm_extra=distill=--constraint=a100.", flag_values=flag_values)
  flags.DEFINE_integer("slurm_max_requeues", 3, "A task killed (a signal) or warned before its "
                       "time limit requeues itself at most this many times.",
                       flag_values=flag_values)
  flags.DEFINE_integer("slurm_signal_seconds", 120, "SLURM warns each task this many seconds "
                       "before its time limit (--signal=B:USR1@N): it checkpoints and requeues "
                       "(0: no warning).", flag_values=flag_values)
  flags.DEFINE_multi_string("slurm_setup", None, "A shell line each task runs first "
                            "(repeatable), e.g. 'module load cuda/12.2'.", flag_values=flag_values)
  flags.DEFINE_string("slurm_python", None, "The Python the tasks run (default: this one, "
                      f"{sys.executable}).", flag_values=flag_values)
  flags.DEFINE_boolean("slurm_queue", True, "The tasks of each job are work-queue workers "
                       "(claims: file locks, which must work across nodes: NFSv4, GPFS, Lustre "
                       "mounted with flock); --noslurm_queue gives each task a static shard.",
                       flag_values=flag_values)


def slurm_config(preset: str):
  """The launcher's `SlurmConfig`: the preset's defaults with the --slurm_* flags applied."""
  from simclr_distill.cluster import slurm

  resources = slurm.default_resources(preset)
  for field, convert in (("tasks", int), ("throttle", int), ("partition", str),
                         ("account", str), ("time", str), ("cpus", int), ("mem", str),
                         ("gpus", int), ("gres", str), ("extra", str)):
    value = FLAGS[f"slurm_{field}"].value
    if value:
      try:
        resources = slurm.apply(resources, field, slurm.per_job(value, convert))
      except ValueError as e:
        raise ValueError(f"--slurm_{field}: {e}") from None
  return slurm.SlurmConfig(resources=resources, max_requeues=FLAGS.slurm_max_requeues,
                           signal_seconds=FLAGS.slurm_signal_seconds,
                           python=FLAGS.slurm_python or sys.executable,
                           setup=tuple(FLAGS.slurm_setup or ()))


def task_command() -> list[str]:
  """This command's flags as given (each serialised as --name=value), less the launcher's:
  what each cluster task runs."""
  out = []
  for name in FLAGS:
    flag = FLAGS[name]
    if flag.present and name not in LAUNCHER_FLAGS and name not in ("flagfile", "undefok"):
      out += flag.serialize().split("\n")
  return sorted(dict.fromkeys(out), key=out.index)


def launch_study(cfg: study_config.StudyConfig) -> int:
  """`stages.study --launcher=slurm`: the study as a chain of array jobs (exit status)."""
  from simclr_distill.steps import study

  if FLAGS.steps:
    raise ValueError("--steps runs part of the study in this process; --launcher=slurm submits "
                     "every step as its own job: drop one of them")
  return study.launch_slurm(cfg, task_command(), slurm_config(cfg.distill.preset),
                            queue=FLAGS.slurm_queue, dry_run=FLAGS.dry_run, wait=FLAGS.wait)


def launch_if_asked(stage: str, workdir, preset: str, *, shardable: bool = True,
                    tasks: int | None = None) -> None:
  """With --launcher=slurm, submits this single stage as one array job and exits with the
  launcher's status; otherwise refuses --dry_run and --wait, and returns. The tasks are
  work-queue workers, or with --num_shards=N given, N shards (stage 1: shards, one encoder
  each, `tasks` of them); `shardable` False (prepare) runs one task."""
  from simclr_distill.cluster import slurm

  if FLAGS.launcher != "slurm":
    for name in ("dry_run", "wait"):
      if FLAGS[name].value:
        raise ValueError(f"--{name} goes with --launcher=slurm")
    return
  config = slurm_config(preset)
  queue = (shardable and stage != "pretrain" and not FLAGS["num_shards"].present
           and FLAGS.slurm_queue)
  if shardable and FLAGS["num_shards"].present:
    if FLAGS["shard_index"].present:
      raise ValueError("--launcher=slurm gives each task its shard (SLURM_ARRAY_TASK_ID): drop "
                       "--shard_index")
  if not shardable:
    tasks = 1
  elif FLAGS["num_shards"].present:
    tasks = FLAGS.num_shards
  jobs = slurm.plan_stage(stage, task_command(), config, python=config.python, queue=queue,
                          tasks=tasks)
  sys.exit(slurm.launch(jobs, workdir, config, dry_run=FLAGS.dry_run, wait_for_end=FLAGS.wait))


def config_from_flags(base: config_lib.DistillConfig | None = None) -> config_lib.DistillConfig:
  """The preset (or `base`) with every given flag, then each --set, applied; with
  --print_config, prints it and exits with status 0.

  Raises:
    ValueError: for a value a flag or --set cannot take, or a config breaking an invariant.
  """
  return _resolved("distill", lambda: config_lib.get_preset(FLAGS.preset), base)


def study_from_flags() -> study_config.StudyConfig:
  """The study preset with every given flag, then each --set, applied (see
  `config_from_flags`)."""
  return _resolved("study", lambda: study_config.get_preset(FLAGS.preset))


def prepare_from_flags() -> study_config.PrepareConfig:
  """`stages.prepare`'s config: the defaults with every given flag, then each --set, applied
  (see `config_from_flags`)."""
  return _resolved("prepare", study_config.PrepareConfig)


def resolve_flags(root: str, base: Any, flag_values: flags.FlagValues = FLAGS) -> Any:
  """`base` (a config of `root`: see `settings.ROOTS`) with the settings given in the parsed
  `flag_values`, then their --set assignments."""
  values = {row.flag: flag_values[row.flag].value for row in settings.offered(root)
            if row.flag in flag_values and flag_values[row.flag].present}
  assignments = (flag_values["set"].value or ()) if "set" in flag_values else ()
  cfg = settings.resolve(base, values, assignments, root=root)
  if root in ("distill", "study") and "shard_index" in flag_values:
    shard = _environment_shard(cfg if root == "distill" else cfg.distill, values)
    if shard is not None:
      values.update(shard_index=shard.index, num_shards=shard.count)
      cfg = settings.resolve(base, values, assignments, root=root)
  return cfg


def _environment_shard(distill: config_lib.DistillConfig, values: dict):
  """The shard a scheduler's array task gives (`cluster.environment`), unless --shard_index
  was given or the command is a work-queue worker."""
  from simclr_distill.cluster import environment

  if "shard_index" in values or distill.work_queue:
    return None
  shard = environment.environment_shard(os.environ, num_shards=values.get("num_shards"))
  if shard is not None:
    print(f"shard {shard.index} of {shard.count} (from {shard.source}; --shard_index and "
          "--num_shards override it)", file=sys.stderr)
  return shard


def _resolved(root: str, preset: Callable[[], Any], base: Any = None) -> Any:
  """The `root` config of the parsed flags on `base`, or on `preset()`; the latter is built
  once per command (`parse_flags` builds it first, the stage's `main` takes it)."""
  if base is not None:
    return _print_or_return(resolve_flags(root, base))
  if root not in _built:
    _built[root] = _print_or_return(resolve_flags(root, preset()))
  return _built[root]


def _print_or_return(cfg: Any) -> Any:
  if "print_config" in FLAGS and FLAGS.print_config:
    start = f"--preset={FLAGS.preset}" if "preset" in FLAGS else "the defaults"
    print(f"# {type(cfg).__name__} of {start}, then the flags, then --set "
          "(--set=PATH=VALUE takes these paths)")
    print(config_paths.format_config(cfg))
    sys.exit(0)
  return cfg


def summary_keys(table, keys: list[str]) -> list[str]:
  """The columns a stage's closing summary groups by: `keys`, then whatever else differs
  between runs (protocol, scheme, architecture, method: see `results.summary_keys`)."""
  from simclr_distill import results

  return results.summary_keys(table, keys)


def closing_summary(workdir, table) -> str:
  """The study's comparisons with their intervals (from the workdir's comparisons.csv when the
  stage wrote one); `finish` adds the collapsed and failed runs."""
  import pathlib

  import pandas as pd

  from simclr_distill import stats

  lines = []
  path = pathlib.Path(workdir) / stats.COMPARISONS_CSV
  if path.is_file():
    lines.append(stats.format_comparisons(pd.read_csv(path)))
    lines.append(f"(all comparisons: {path}; `{python_command()} -m stages.results --compare "
                 f"--workdirs={workdir}` prints them again)")
  return "\n".join(line for line in lines if line)


def python_command() -> str:
  """The running Python as a user types it here: `.venv/bin/python` from the repository root
  (a hint naming a bare `python` fails where the virtualenv is not active), else `python`."""
  try:
    relative = os.path.relpath(sys.executable)
  except ValueError:  # Another drive (Windows).
    return "python"
  return "python" if relative.startswith("..") else relative


def collapsed_summary(table) -> str:
  """A warning naming the runs whose model collapsed (one predicted class on a whole
  validation or test list), or "" when none did."""
  if "collapsed" not in table:
    return ""
  collapsed = table[table["collapsed"].fillna("").astype(str) != ""]
  if not len(collapsed):
    return ""
  return "\n".join([f"WARNING: {len(collapsed)} run(s) predict a single class on a whole "
                    "validation or test list (collapsed models: their scores say nothing about "
                    "the method; see the `collapsed` column):",
                    *(f"  {r.run_id}: {r.collapsed}" for r in collapsed.itertuples())])


def failed_summary(table) -> str:
  """The runs of the table whose status is "failed", each with its reason, or ""."""
  if "status" not in table:
    return ""
  failed = table[table["status"] == "failed"]
  if not len(failed):
    return ""
  return "\n".join([f"FAILED: {len(failed)} run(s) of this workdir failed (their rows say "
                    "status=failed; a failed run is final for its settings: change the setting "
                    "named in its reason, which gives a new run, or delete runs/<run_id> to "
                    "retry it as it was):",
                    *(f"  {r.run_id}: {r.error}" for r in failed.itertuples())])


def finish(table, lines=()) -> None:
  """Prints a training command's closing lines and the failed runs; exits with status 1 when
  the table holds failed runs (the rest of the matrix has finished), else returns."""
  for line in (*lines, collapsed_summary(table), failed_summary(table)):
    if line:
      print(line)
  if failed_summary(table):
    sys.exit(1)


def safe_mode() -> bool:
  """Keras safe mode for loading models: on unless --unsafe_load, which is logged loudly."""
  unsafe = "unsafe_load" in FLAGS and FLAGS.unsafe_load
  if unsafe:
    logging.getLogger("simclr_distill").warning(
        "--unsafe_load: Keras safe mode is OFF; a .keras file's Lambda layers can run arbitrary "
        "code on this machine. Use it only for checkpoints you trust.")
  return not unsafe


class _DropRetracingWarnings(logging.Filter):
  """Each run builds a new model, so new step functions are traced by design; TensorFlow's
  "triggered tf.function retracing" advice would only alarm a user here."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def setup_logging() -> None:
  """The package's log lines at INFO (progress per run, and within long epochs), or what
  --verbosity (-v) asks: -v=1 adds the debug lines (one per epoch with its metrics, ...).
  Call after the flags parse."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.getLogger("simclr_distill").setLevel(_package_level())
  logging.getLogger("tensorflow").addFilter(_DropRetracingWarnings())


def _package_level() -> int:
  """INFO, unless --verbosity was given: then its level (absl sets the root logger's from it,
  but the package's own level would hide its debug lines)."""
  from absl import logging as absl_logging

  if "verbosity" not in FLAGS or not FLAGS["verbosity"].present:
    return logging.INFO
  verbosity = absl_logging.get_verbosity()
  if verbosity > 1:  # absl's vlog levels, below DEBUG.
    return logging.DEBUG - (verbosity - 1)
  return absl_logging.converter.absl_to_standard(verbosity)


# What TensorFlow's native code prints while it loads, before its logging is set up (so
# TF_CPP_MIN_LOG_LEVEL does not reach it in TF 2.21): information lines ("I0000 ...
# port.cc] oneDNN custom operations are on", "cudart_stub.cc] Could not find cuda drivers",
# the CPU instructions), absl's note about them, and, on a machine with no NVIDIA device, the
# failed cuInit. Everything else it prints (errors on a GPU machine) is passed on.
_NATIVE_NOISE = re.compile(
    r"^I\d{4} |^WARNING: All log messages before absl::InitializeLog\(\) is called|"
    r"^To enable the following instructions: .* rebuild TensorFlow")
_NO_GPU_NOISE = re.compile(r"^E\d{4} .*failed call to cuInit")


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow and Keras with the native start-up chatter of every process (seven
  lines, twice, before a training stage's first line of its own) left out; what else they
  print reaches stderr as it was. Without TensorFlow installed, does nothing (the stage says
  which extra to install when it needs it)."""
  import importlib.util
  import tempfile

  if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
    return
  no_gpu = not os.path.exists("/dev/nvidiactl")
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401  (first: where it is missing, the message names it)
      import keras  # noqa: F401  (its native libraries print the same lines again)
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines():
        if not (_NATIVE_NOISE.search(line) or (no_gpu and _NO_GPU_NOISE.search(line))):
          print(line, file=sys.stderr)


def run_or_explain(main: Callable[[], None], *, resumable: bool = True) -> None:
  """Runs `main`; a warning signal (SIGUSR1, SIGTERM: see `simclr_distill.preemption`) ends
  it after a checkpoint with exit status 75; a bad input ends with its message on stderr and
  exit status 2, never a traceback: a value the command cannot use (ValueError, which TeacherError is, and KeyError),
  a file it cannot parse, or a path it cannot read or write (`explain`). Other errors (a
  failing disk, a bug) keep their traceback."""
  from simclr_distill import preemption

  if resumable:
    preemption.install()
  try:
    if resumable:  # A training stage: it loads TensorFlow anyway.
      import_tensorflow_quietly()
    main()
  except preemption.Preempted as e:
    print(f"{e}; rerun the same command to resume (a SLURM task requeues itself and resumes); "
          f"exit status {preemption.EXIT_CODE}", file=sys.stderr)
    sys.exit(preemption.EXIT_CODE)
  except (ValueError, KeyError, OSError) as e:
    if isinstance(e, OSError) and not _bad_path(e):
      raise
    print(f"error: {explain(e)}", file=sys.stderr)
    sys.exit(2)
  except ModuleNotFoundError as e:
    extra = _EXTRAS.get(e.name or "")  # The package itself is missing, not a part of it.
    if extra is None:
      raise
    print(f"error: this command needs {e.name}, which is not installed; install the "
          f"'{extra}' extra: pip install 'simclr_distill[{extra}]' (a browsing install, "
          "simclr_distill[dashboard], runs stages.results and stages.dashboard only)",
          file=sys.stderr)
    sys.exit(2)


# The install extra (pyproject.toml) that provides each optional top-level module.
_EXTRAS = {"tensorflow": "train", "keras": "train", "tensorboard": "train", "tifffile": "train", "rasterio": "train", "google_crc32c": "train",
           "threadpoolctl": "train", "tensorflow_datasets": "tfds", "dash": "dashboard",
           "dash_ag_grid": "dashboard", "plotly": "dashboard"}


# errno values that mean "this path cannot be used as given" (a user's input, not a fault).
_PATH_ERRNOS = ("EACCES", "EPERM", "EROFS", "EISDIR", "ENOTDIR", "EEXIST", "ENOENT", "ENOSPC",
                "EDQUOT", "ENAMETOOLONG", "ELOOP", "ENOTEMPTY", "EXDEV")


def _bad_path(error: OSError) -> bool:
  import errno

  return error.errno is None or error.errno in {getattr(errno, n, None) for n in _PATH_ERRNOS}


def explain(error: BaseException) -> str:
  """The one-line message `run_or_explain` prints for `error` (after "error: ")."""
  from simclr_distill.fileio import DiskFullError

  if isinstance(error, KeyError):
    return str(error.args[0]) if error.args else str(error)
  if isinstance(error, DiskFullError):
    return error.strerror
  if isinstance(error, OSError) and error.errno is not None:
    path = error.filename2 or error.filename  # A rename: the destination is what was written.
    reason = error.strerror or type(error).__name__
    if path is None:
      return f"{reason} ({type(error).__name__})"
    return (f"cannot read or write {os.fsdecode(path)}: {reason}; check that the path (and each "
            "directory above it) is a directory or a file as the command expects and that you "
            "may write there, or give another path")
  message = str(error)
  path = _csv_being_read(error)
  if path is not None and path not in message:
    return (f"{path} is not a readable CSV table ({message}); repair or replace it, or give the "
            "right file")
  return message


def _csv_being_read(error: BaseException) -> str | None:
  """The file a failing `pandas.read_csv` was reading, or None: pandas' parser errors (an
  empty file, unbalanced quotes, binary bytes) do not name it, but the call on the traceback
  holds it."""
  tb, path = error.__traceback__, None
  while tb is not None:
    frame = tb.tb_frame
    if frame.f_code.co_name == "read_csv" and frame.f_globals.get("__name__", "").startswith("pandas"):
      value = frame.f_locals.get("filepath_or_buffer")
      if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
    tb = tb.tb_next
  return path


def check_output(path, flag: str, *, directory: bool = True, example: str = "output") -> None:
  """Refuses, before any work, an output path the command could not write (see
  `fileio.check_writable`); the message names `flag`."""
  from simclr_distill import fileio

  if path:
    fileio.check_writable(path, directory=directory, flag=flag, example=example)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every bad command line ending in exit status 2 and a message
  (absl exits 1): a flag that does not parse or is unknown, a positional argument (a flag
  whose dashes were forgotten would otherwise be dropped silently, and the default preset
  start), a float flag that is not finite, and a setting the command's config refuses (the
  config is built here, see the module docstring). --help and its kin exit 0, and so does
  --print_config once it has printed.

  Returns:
    argv[:1], the program name (no positional arguments are accepted).
  """
  import math

  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    _refuse(str(e))
  except SystemExit as e:  # Only absl's help flags exit while parsing; they exit 1.
    sys.exit(0 if e.code == 1 else e.code)
  for word in rest[1:]:
    name = word.lstrip("-").partition("=")[0]
    hint = (f"flags start with --, e.g. --{word.lstrip('-')}" if name in FLAGS
            else "this command takes flags only (--name=value)")
    _refuse(f"unexpected argument {word!r}: {hint}")
  for name in list(FLAGS):
    flag = FLAGS[name]
    if flag.present and isinstance(flag.value, float) and not math.isfinite(flag.value):
      _refuse(f"--{name}={flag.value} must be a finite number")
  if _root is not None:
    # Built once here, before the stage imports TensorFlow: a bad setting or --set ends the
    # command at once, and --print_config exits here.
    run_or_explain({"distill": config_from_flags, "study": study_from_flags,
                    "prepare": prepare_from_flags}[_root], resumable=False)
  return rest[:1]


def _refuse(message: str) -> None:
  print(f"error: {message}\n(`--help` lists this command's flags)", file=sys.stderr)
  sys.exit(2)


def run_app(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` with `parse_flags`: what every stage's `run()` calls. `--help`
  prints `stages.usage`'s text (the stage's flags, grouped, with the preset's values)."""
  from absl import app

  from stages import usage

  doc = sys.modules[main.__module__].__doc__

  def parser(argv: list[str]) -> list[str]:
    if usage.wants_help(argv):  # Before parsing: `--help` works beside a flag that would not.
      usage.print_help(FLAGS, doc, _root, argv)
      sys.exit(0)
    return parse_flags(argv)

  app.run(main, flags_parser=parser)
