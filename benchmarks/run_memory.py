"""Host memory and time of many runs in one process: does a long matrix stay flat?

  python -m benchmarks.run_memory [--arch=ResNet50] [--runs=20] [--image_size=32]
                                  [--reuse_models=2] [--steps=4] [--protocol=original]

Issue 17: ten Xception runs in one process grew from 3.75 to 4.97 GB peak (~+130 MB a run)
and each ran slower than the last. This benchmark trains `--runs` distillation runs of one
architecture (seeds 0..N-1, one digits teacher, offline teaching) in this process the way a
matrix does (`loop.train_runs`), and prints after each run: the resident memory (VmRSS),
the peak during that run (VmHWM, reset before each run through /proc/self/clear_refs), the
peak so far, and the run's seconds. Then the slope of memory over runs 2..N (MiB per run,
least squares) and the time of the last runs against the second's.

The teacher zoo (one small cnn teacher on the digits, `teacher.demo_*`) is trained and its
labels cached in a separate process first, so the measured process holds only what the runs
need. Runs use `--protocol=original` by default (the study's: a student is trained and scored
on the 52-example test list), so each run is `--steps` optimizer steps plus its scoring and a
paper architecture fits 20 runs in minutes on a CPU; `--protocol=holdout` trains on the
~1,700-example pool with validation and model selection (for the small architectures).

Memory "stays flat" when the peak of the whole process is within FLAT_SLACK (+FLAT_MIB) of the
peak of run 1 (what a process that trains one run needs; the rule of `benchmarks.memory`) and
the resident memory after each run has stopped climbing: its slope over the second half of the
runs (Theil-Sen, robust to one odd run) is under FLAT_MIB_PER_RUN. The slope over runs 2..N is printed too; it includes the first
runs' one-off rise (the run that re-initialises a kept model holds it and a new network, and
the allocator's pools settle).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import common

flags.DEFINE_string("arch", "ResNet50", "Student architecture (models.ARCHITECTURES).")
flags.DEFINE_integer("runs", 20, "Runs of that architecture (seeds 0..runs-1) in one process.")
flags.DEFINE_integer("image_size", 32, "Images resized to this size (each paper architecture "
                     "has a minimum: ResNets 32, Xception 71, InceptionV3 75).")
flags.DEFINE_integer("reuse_models", 2, "train.reuse_models: compiled models of finished runs "
                     "kept for the next run of the same shape (0: never).")
flags.DEFINE_integer("steps", 4, "Optimizer steps per run (train.min_steps_per_epoch, 1 epoch).")
flags.DEFINE_integer("batch_size", 16, "Per-replica batch size.")
flags.DEFINE_enum("protocol", "original", ["original", "holdout"], "Each run's protocol "
                  "(original: the 52 test digits; holdout: the ~1,700-digit pool, validated).")
flags.DEFINE_enum("head", "study", ["study", "pooled"], "Student head.")
flags.DEFINE_integer("width", None, "Width of the small architectures (cnn, mlp, resnet18).")
flags.DEFINE_string("workdir", None, "Keep the runs here (default: a temporary directory).")
flags.DEFINE_string("prepare_in", None, "Internal: only prepare the teacher and its labels in "
                    "this directory (run in a process of its own).")
FLAGS = flags.FLAGS

FLAT_MIB_PER_RUN = 2.0
FLAT_SLACK = 1.10
FLAT_MIB = 64


def _config(workdir: pathlib.Path):
  from simclr_distill import config as config_lib

  return config_lib.override(config_lib.PRESETS["smoke"], {
      "workdir": str(workdir), "baseline": False, "protocol": FLAGS.protocol,
      "data.split_percents": (10,), "data.image_size": FLAGS.image_size,
      "teacher.demo_arch": "cnn", "teacher.demo_width": 8, "teacher.demo_epochs": 1,
      "student.archs": (FLAGS.arch,), "student.head": FLAGS.head, "student.width": FLAGS.width,
      "train.optimizers": ("adam",), "train.epochs": (1,), "train.patience": 1,
      "train.min_steps_per_epoch": FLAGS.steps, "train.batch_size": FLAGS.batch_size,
      "train.steps_per_execution": 1, "train.seeds": tuple(range(FLAGS.runs)),
      "train.reuse_models": FLAGS.reuse_models})


def _slope(x, y) -> float:
  """Least-squares slope."""
  return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0]) if len(x) > 1 else 0.0


def _robust_slope(x, y) -> float:
  """Theil-Sen slope (the median of the pairwise slopes): one run that happens to end with
  less or more memory in use (RSS moves by ~25 MiB from run to run) does not tilt it."""
  pairs = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))]
  return float(np.median(pairs)) if pairs else 0.0


def _prepare(workdir: pathlib.Path) -> None:
  """The demo zoo (one cnn teacher) and its cached labels, in a process of their own."""
  from simclr_distill.steps import label

  label.run(_config(workdir))


def _measure(workdir: pathlib.Path) -> list[dict]:
  from simclr_distill import matrix, models
  from simclr_distill.steps import label, zoo
  from simclr_distill.training import context, loop

  config = _config(workdir)
  ctx = context.make_context(config)
  models.check_input_size(FLAGS.arch, ctx.data.image_shape)
  teachers = zoo.load_zoo(config, ctx)
  runs = [r for r in matrix.build_matrix(config, teachers, ctx.data.fingerprint())
          if r.stage == "distill"]
  label.prepare_teachers(config, ctx, runs)
  rows: list[dict] = []
  start = common.memory_status()
  print(f"before the runs: RSS {start['VmRSS']:.0f} MiB, peak {start['VmHWM']:.0f} MiB", flush=True)
  peak_so_far = start["VmHWM"]
  if not common.reset_peak():
    print("note: /proc/self/clear_refs is not writable: each run's peak is the process's so far")
  clock = time.perf_counter()

  def after(run, row):
    nonlocal clock, peak_so_far
    now = time.perf_counter()
    status = common.memory_status()
    peak_so_far = max(peak_so_far, status["VmHWM"])
    rows.append({"run": len(rows) + 1, "seed": run.seed, "rss_mib": status["VmRSS"],
                 # The peak since the process started where VmHWM cannot be reset.
                 "run_peak_mib": status["VmHWM"],
                 "peak_so_far_mib": peak_so_far, "seconds": now - clock,
                 "f1": float("nan") if row.get("f1") is None else row["f1"],
                 "run_id": run.run_id})
    r = rows[-1]
    print(f"  run {r['run']:3d} (seed {r['seed']:2d}): RSS {r['rss_mib']:7.0f} MiB, run peak "
          f"{r['run_peak_mib']:7.0f} MiB, peak so far {r['peak_so_far_mib']:7.0f} MiB, "
          f"{r['seconds']:6.2f} s, f1 {r['f1']:.4f}", flush=True)
    common.reset_peak()
    clock = time.perf_counter()

  loop.train_runs(runs, ctx, "bench", after=after)
  return rows


def main(argv):
  del argv
  common.quiet_tensorflow()
  if FLAGS.prepare_in:
    _prepare(pathlib.Path(FLAGS.prepare_in))
    return
  if FLAGS.runs < 3:
    raise SystemExit("--runs: at least 3 (the slope is fitted over runs 2..N)")
  work = pathlib.Path(FLAGS.workdir or tempfile.mkdtemp(prefix="bench_run_memory_"))
  try:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.run_memory", f"--prepare_in={work}",
                          *[a for a in sys.argv[1:] if not a.startswith("--prepare_in")]],
                         capture_output=True, text=True, check=False)
    if out.returncode:
      raise SystemExit(f"preparing the teacher failed:\n{out.stderr[-3000:]}")
    print(f"teacher and labels prepared in {time.perf_counter() - start:.1f} s", flush=True)
    rows = _measure(work)
  finally:
    if not FLAGS.workdir:
      shutil.rmtree(work, ignore_errors=True)
  later = rows[1:]
  n = len(rows)
  print(f"\n{'run':>4} {'seed':>5} {'RSS after (MiB)':>16} {'run peak (MiB)':>15} "
        f"{'peak so far (MiB)':>18} {'seconds':>8}")
  for r in rows:
    print(f"{r['run']:>4} {r['seed']:>5} {r['rss_mib']:>16.0f} {r['run_peak_mib']:>15.0f} "
          f"{r['peak_so_far_mib']:>18.0f} {r['seconds']:>8.2f}")
  rss_slope = _slope([r["run"] for r in later], [r["rss_mib"] for r in later])
  peak_slope = _slope([r["run"] for r in later], [r["run_peak_mib"] for r in later])
  half = rows[n // 2:]
  half_slope = _robust_slope([r["run"] for r in half], [r["rss_mib"] for r in half])
  process_peak = rows[-1]["peak_so_far_mib"]
  seconds = [r["seconds"] for r in rows]
  scale = f"{FLAGS.arch}@{FLAGS.image_size}"
  report = common.Report(f"memory over {n} runs of {FLAGS.arch} in one process "
                         f"({FLAGS.image_size}x{FLAGS.image_size}, {FLAGS.protocol}, "
                         f"{FLAGS.steps} steps, reuse_models={FLAGS.reuse_models})")
  report.figure(scale, "RSS after run 1", rows[0]["rss_mib"], "MiB")
  report.figure(scale, "RSS after run 2", rows[1]["rss_mib"], "MiB")
  report.figure(scale, f"RSS after run {n}", rows[-1]["rss_mib"], "MiB")
  report.figure(scale, "peak during run 1", rows[0]["run_peak_mib"], "MiB")
  report.figure(scale, "peak during run 2", rows[1]["run_peak_mib"], "MiB")
  report.figure(scale, f"peak during run {n}", rows[-1]["run_peak_mib"], "MiB")
  report.figure(scale, f"peak of the process over {n} runs", rows[-1]["peak_so_far_mib"], "MiB")
  report.figure(scale, f"slope of RSS after each run, runs 2..{n}", rss_slope, "MiB/run")
  report.figure(scale, f"slope of each run's peak, runs 2..{n}", peak_slope, "MiB/run")
  report.figure(scale, f"slope of RSS after each run, runs {half[0]['run']}..{n} (Theil-Sen)",
                half_slope, "MiB/run")
  report.figure(scale, f"peak of run {n} / peak of run 1", rows[-1]["run_peak_mib"] / rows[0]["run_peak_mib"], "x")
  report.figure(scale, f"peak of the process over {n} runs / peak of run 1",
                process_peak / rows[0]["run_peak_mib"], "x")
  report.figure(scale, f"seconds of run {n} / run 2", seconds[-1] / seconds[1], "x")
  k = min(3, (n - 1) // 2)
  report.figure(scale, f"median seconds of the last {k} runs / of runs 2..{k + 1}",
                float(np.median(seconds[-k:]) / np.median(seconds[1:k + 1])), "x")
  bound = rows[0]["run_peak_mib"] * FLAT_SLACK + FLAT_MIB
  flat = process_peak <= bound and half_slope < FLAT_MIB_PER_RUN
  report.notes.append(
      f"{'flat' if flat else 'GROWS'}: the process peaked at {process_peak:.0f} MiB over {n} runs "
      f"against {rows[0]['run_peak_mib']:.0f} MiB for run 1 (bound {bound:.0f}: x{FLAT_SLACK:.2f} "
      f"+ {FLAT_MIB} MiB), and memory after each run moved {half_slope:+.1f} MiB a run over runs "
      f"{half[0]['run']}..{n} (bound {FLAT_MIB_PER_RUN:g}); {rss_slope:+.1f} MiB a run over runs "
      f"2..{n}")
  report.print()
  if FLAGS.json:  # The per-run table too.
    pathlib.Path(FLAGS.json).write_text(json.dumps(
        {"title": report.title, "runs": rows, "rows": report.rows, "notes": report.notes}, indent=1))


if __name__ == "__main__":
  app.run(main)
