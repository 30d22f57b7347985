"""What the 180-run matrix costs beyond its training steps.

  python -m benchmarks.matrix_cost [--scales=small,paper] [--repeats=5]

1. Teacher forward passes per study, counted on the matrix the paper preset builds over a
   36-teacher zoo (3 encoders x 6 splits x 2 schemes): with the label cache, each teacher
   passes over the data once; teaching in the step (the study's loop) passes every run's
   teacher over its pool every epoch.
2. The fixed cost of one run, measured: building the student, `Distiller` and optimizer, and
   the first training step (tracing), against the steady-state step time; for the first run of
   an architecture in a process and for a second run of it in the same process (what
   `loop.train_runs` does for every run after the first: the runtime, the imports, the data
   and the teachers are paid once per process), plus the start-up of a fresh process (Python,
   TensorFlow, the library), and for a later run that re-initialises the kept, traced model of
   a finished run (`RunContext.reuse_models`, on by default) instead of building and tracing
   its own. Printed as equivalent training steps and as a share of a run of `--run_steps`
   steps.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import common

flags.DEFINE_integer("run_steps", 50 * 3000, "Training steps of one full run for the share of "
                     "its fixed cost (default: 50 epochs of a ~96k-patch pool at batch 32).")
FLAGS = flags.FLAGS


def teacher_passes(report: common.Report) -> None:
  from simclr_distill import matrix
  from simclr_distill import config as config_lib
  from simclr_distill.steps import zoo as zoo_step
  from simclr_distill.teachers import TeacherEntry

  zoo = [TeacherEntry(teacher_id=f"{enc}-{scheme}-{pct}", encoder=enc, labeling=scheme,
                      split_percent=pct, path=f"{enc}-{scheme}-{pct}.keras", output="logits",
                      arch="ResNet152")
         for enc in ("BEN", "CA_adam", "CA_sgd") for scheme in ("basic", "expanded")
         for pct in config_lib.STUDY_SPLIT_PERCENTS]
  config = config_lib.PRESETS["paper"]
  runs = [r for r in matrix.build_matrix(config, zoo, "bench") if r.stage == "distill"]
  cached = len(zoo_step.members({r.teacher.teacher_id: r.teacher for r in runs}.values()))
  in_step = sum(r.epochs for r in runs)
  report.figure("paper", "distillation runs in the paper matrix", len(runs), "runs")
  report.figure("paper", "teacher passes over the data, label cache (offline)", cached, "passes")
  report.figure("paper", "teacher passes, teacher in every step (study loop, 50 epochs)", in_step,
                "passes")
  report.figure("paper", "teacher forward work saved by the cache", in_step / cached, "x")


def _process_start() -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, "-c", "import simclr_distill.steps.distill"],
                 check=True, capture_output=True)
  return time.perf_counter() - start


def fixed_cost(scale: common.Scale, report: common.Report) -> None:
  import keras
  import numpy as np
  import tensorflow as tf

  from simclr_distill.training import distiller, networks

  shape = (120, 120, 10) if scale.name == "paper" else (8, 8, 1)
  count = scale.batch_size * 8
  rng = np.random.default_rng(0)
  data = tf.data.Dataset.from_tensor_slices((rng.standard_normal((count, *shape), np.float32), {
      "label": np.zeros(count, np.float32), "mask": np.zeros(count, np.float32),
      "teacher": rng.standard_normal((count, 1)).astype(np.float32)})).repeat().batch(
          scale.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  measured = []
  model = None
  for which in ("first", "second", "reused"):
    start = time.perf_counter()
    if which == "reused":  # What execute_run does with a kept model (RunContext.reuse_models).
      if not networks.reinitialise(model, common.build(scale, scale.student, shape, seed=1), 1e-4):
        raise RuntimeError("the kept model could not be re-initialised")
    else:
      model = distiller.Distiller(common.build(scale, scale.student, shape), task="binary",
                                  loss_kind="hard")
      model.compile(optimizer=keras.optimizers.Adam(1e-4),
                    steps_per_execution=scale.steps_per_execution)
    build = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=scale.steps_per_execution, verbose=0)
    first_call = time.perf_counter() - start
    steps = []
    for _ in range(common.FLAGS.repeats):
      start = time.perf_counter()
      model.fit(data, epochs=1, steps_per_epoch=scale.steps, verbose=0)
      steps.append((time.perf_counter() - start) / scale.steps)
    step = statistics.median(steps)
    trace = max(first_call - step * scale.steps_per_execution, 0.0)
    measured.append((which, build, trace, step))
    print(f"  [{scale.name}] {which} {scale.student} run in this process: build {build:.2f} s, "
          f"tracing {trace:.2f} s, step {step * 1e3:.2f} ms", flush=True)
  starts = [_process_start() for _ in range(3)]
  start_cost = statistics.median(starts)
  step = measured[-1][3]
  labels = {"first": "a run in a fresh process (start-up {start:.1f} s + build {build:.1f} s + "
                     "tracing {trace:.1f} s)",
            "second": "a later run in the same process (build {build:.1f} s + tracing "
                      "{trace:.1f} s)",
            "reused": "a later run on a kept model (build and re-initialise {build:.1f} s + "
                      "tracing {trace:.1f} s)"}
  for which, build, trace, _ in measured:
    fixed = build + trace + (start_cost if which == "first" else 0.0)
    label = "fixed cost of " + labels[which].format(start=start_cost, build=build, trace=trace)
    report.figure(scale.name, f"{label} [{scale.student}]", fixed, "s")
    report.figure(scale.name, f"  = steady-state steps of batch {scale.batch_size}", fixed / step,
                  "steps")
    report.figure(scale.name, f"  = share of a {FLAGS.run_steps}-step run",
                  100 * fixed / (fixed + FLAGS.run_steps * step), "%")
  first, second, reused = measured
  report.figure(scale.name, "several runs per process: a later run's fixed cost vs a fresh "
                "process's", (second[1] + second[2]) / (start_cost + first[1] + first[2]), "x")
  report.figure(scale.name, "kept models: a reusing run's fixed cost vs a later run's",
                (reused[1] + reused[2]) / (second[1] + second[2]), "x")


def main(argv):
  del argv
  common.quiet_tensorflow()
  report = common.Report("matrix cost: teacher passes and per-run fixed cost")
  teacher_passes(report)
  for scale in common.scales():
    fixed_cost(scale, report)
  report.print()


if __name__ == "__main__":
  app.run(main)
