"""One process of the multi-worker tests: `executor.execute_run` of one run on the digits demo.

tests/test_faults_multiworker.py starts it as `python tests/multiworker_worker.py SPEC.json`,
alone or once per worker of a cluster (TF_CONFIG set). SPEC is a JSON object:

  data_dir, labels_dir, workdir: prepared digits data, the label caches of teacher "t" (for
    stage "distill"), and the run's workdir (shared by all workers).
  strategy: a `runtime.build_strategy` name; logical_cpus: CPU devices of this process.
  collective_timeout: seconds after which a collective still waiting for a peer fails.
  stage ("baseline", or "distill" offline on teacher "t", or "pretrain": stage 1), arch, epochs, batch_size (per
    replica), optimizer, learning_rate, seed, early_stopping: the run.
  hold_at_epoch, hold_worker, marker_dir: worker `hold_worker` stops at the start of epoch
    `hold_at_epoch` (counted from 0: that many epochs are finished and checkpointed), touches
    `marker_dir/held-<worker>` and waits to be killed.
  out: where this process writes a JSON report: the results row, `is_writer`, the epochs this
    process trained, and `writes`, every file operation it made under the workdir (Python
    audit events: opens for writing, renames, removals); the trained student's weights go
    to the same path with suffix ".npz".
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from simclr_distill import scoring, study_config, teachers  # noqa: E402
from simclr_distill import config as config_lib  # noqa: E402
from simclr_distill.data import records  # noqa: E402
from simclr_distill.matrix import RunSpec  # noqa: E402
from simclr_distill.steps import pretrain as pretrain_step  # noqa: E402
from simclr_distill.training import context, executor, runtime  # noqa: E402

TEACHER = teachers.TeacherEntry("t", "basic", 10, "t.keras", output="logits")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def run_spec(spec: dict, data: records.PreparedData) -> RunSpec:
  """The run of `spec`: a supervised baseline on basic/100, or offline distillation from the
  cached logits of teacher "t" on the basic/10 holdout pool (alpha 0: a plain batch mean, so
  replicas' halves add up to the global batch's loss)."""
  distilling = spec["stage"] == "distill"
  return RunSpec(
      stage=spec["stage"], arch=spec.get("arch", "mlp"), labeling="basic",
      split_percent=10 if distilling else 100, optimizer=spec.get("optimizer", "sgd"),
      learning_rate=spec.get("learning_rate", 0.05), seed=spec.get("seed", 0),
      protocol="holdout", task="binary", epochs=spec["epochs"], batch_size=spec["batch_size"],
      early_stopping=spec.get("early_stopping", False), patience=1, monitor="val_label_loss",
      head="pooled", dropout=0.0, width=spec.get("width"), dataset=data.fingerprint(),
      loss=config_lib.LossConfig(kind="soft_kl", temperature=2.0, alpha=0.0),
      teacher=TEACHER if distilling else None, teacher_mode="offline")


def task_index() -> int:
  return json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {}).get("index", 0)


def watch_writes(root: pathlib.Path, writes: list) -> None:
  """Records this process's file writes, renames and removals under `root` (directory
  creation, harmless when it exists, is left out)."""
  prefix = str(root.resolve())

  def inside(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(prefix)

  def hook(event, args):
    if event == "open" and inside(args[0]) and (args[2] or 0) & _WRITE_FLAGS:
      writes.append(f"open {args[0]} {args[1]}")
    elif event == "os.rename" and (inside(args[0]) or inside(args[1])):
      writes.append(f"rename {args[0]} -> {args[1]}")
    elif event in ("os.remove", "os.rmdir", "shutil.rmtree", "os.truncate") and inside(args[0]):
      writes.append(f"{event} {args[0]}")

  sys.addaudithook(hook)


def main(spec_path: str) -> None:
  spec = json.loads(pathlib.Path(spec_path).read_text())
  if spec.get("logical_cpus", 1) > 1:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
  strategy = runtime.build_strategy(spec["strategy"],
                                    collective_timeout=spec.get("collective_timeout"))
  data = records.PreparedData.open(spec["data_dir"])
  ctx = context.RunContext(workdir=spec["workdir"], data=data, strategy=strategy,
                           labels_dir=spec.get("labels_dir"), shuffle_buffer=4096)
  if spec["stage"] == "pretrain":
    return pretrain(spec, data, strategy)
  run = run_spec(spec, data)
  epochs_trained, scored = [], []
  hold = spec.get("hold_at_epoch")
  on_epoch_end, predict_test = executor.ProgressLogger.on_epoch_end, scoring.predict_test

  def counting_epoch_end(self, epoch, logs=None):
    epochs_trained.append(epoch)
    on_epoch_end(self, epoch, logs)

  def hold_at_epoch_begin(self, epoch, logs=None):
    if epoch == hold and task_index() == spec.get("hold_worker", 1):
      (pathlib.Path(spec["marker_dir"]) / f"held-{task_index()}").touch()
      time.sleep(3600)  # Until killed.

  def keeping_student(student, *args, **kwargs):
    scored.append(student)
    return predict_test(student, *args, **kwargs)

  executor.ProgressLogger.on_epoch_end = counting_epoch_end
  executor.ProgressLogger.on_epoch_begin = hold_at_epoch_begin
  scoring.predict_test = keeping_student
  writes: list[str] = []
  watch_writes(pathlib.Path(spec["workdir"]), writes)
  row = executor.execute_run(run, ctx)
  out = pathlib.Path(spec["out"])
  np.savez(out.with_suffix(".npz"), *(scored[-1].get_weights() if scored else []))
  out.write_text(json.dumps({"row": row, "is_writer": ctx.is_writer, "replicas": ctx.replicas,
                             "epochs_trained": epochs_trained, "writes": writes}, default=str))


def pretrain(spec: dict, data: records.PreparedData, strategy) -> None:
  """Stage 1 (`steps.pretrain.run_pretraining`, no probes) of a small SimCLR network; reports
  the writes, whether this process writes, and the epochs it trained."""
  cfg = study_config.PretrainConfig(name="mw", arch="mlp", width=16, optimizer="sgd",
                                    learning_rate=0.05, temperature=0.5,
                                    batch_size=spec["batch_size"], epochs=spec["epochs"],
                                    policy="affine")
  epochs_trained = []
  on_epoch_end = executor.ProgressLogger.on_epoch_end

  def counting_epoch_end(self, epoch, logs=None):
    epochs_trained.append(epoch)
    on_epoch_end(self, epoch, logs)

  executor.ProgressLogger.on_epoch_end = counting_epoch_end
  writes: list[str] = []
  watch_writes(pathlib.Path(spec["workdir"]), writes)
  path = pretrain_step.run_pretraining(cfg, data, spec["workdir"], strategy=strategy, probe=None)
  pathlib.Path(spec["out"]).write_text(json.dumps({
      "checkpoint": str(path), "is_writer": runtime.is_writer(strategy),
      "replicas": strategy.num_replicas_in_sync, "epochs_trained": epochs_trained,
      "writes": writes}))


if __name__ == "__main__":
  main(sys.argv[1])
