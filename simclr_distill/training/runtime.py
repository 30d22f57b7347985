"""Where and how a run computes: tf.distribute strategies, which process writes, the dtype
policy, optimizers and learning-rate schedules. Every stage's training goes through these.
"""

from __future__ import annotations

import contextlib
import logging
import os

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def strategy_of(config) -> tf.distribute.Strategy:
  """The strategy a `DistillConfig` asks for (its strategy, TPU and collective timeout)."""
  return build_strategy(config.strategy, config.tpu,
                        collective_timeout=config.collective_timeout or None)


def build_strategy(name: str, tpu: str | None = None, *,
                   collective_timeout: float | None = None,
                   environ=os.environ) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy called `name`.

  "auto" picks TPU when `tpu` is given, else the default strategy: one device (the first
  GPU, if any). It never mirrors one run over several GPUs: on a cluster each task gets its
  own GPU and trains its own runs, which beats splitting a small run's batches; ask for
  "mirrored" to spread one run over every visible GPU (without GPUs, over the logical CPU
  devices: useful for tests). "multi_worker" is MultiWorkerMirroredStrategy over several
  processes (every worker runs the same command; worker 0 writes the files, see
  `is_writer`): the cluster comes from TF_CONFIG when it is set, else from SLURM when the
  command runs as the tasks of one `srun` (`cluster_resolver`).

  Args:
    name: "auto", "default", "mirrored", "multi_worker" or "tpu".
    tpu: the TPU's name or address, for "tpu" and "auto".
    collective_timeout: "multi_worker" only: seconds after which a collective (a gradient
      all-reduce) that still waits for a peer fails, so a lost worker ends the others with an
      error instead of a hang. It must exceed the longest gap between two steps of any worker
      (tracing, evaluation, checkpoint writes); None waits forever.
  """
  if name == "auto":
    name = "tpu" if tpu else "default"
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
      log.info("--strategy=auto trains on one of the %d visible GPUs; --strategy=mirrored "
               "spreads each run over all of them", len(gpus))
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = None if tf.config.list_logical_devices("GPU") else [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=cluster_resolver(environ), communication_options=options)
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; known: auto, default, mirrored, multi_worker, tpu")


def cluster_resolver(environ=os.environ):
  """The multi-worker cluster: None (TensorFlow reads TF_CONFIG) when TF_CONFIG is set or the
  process is not in a SLURM job; in a SLURM job step of several tasks (`srun`), one worker per
  task: hosts from SLURM_STEP_NODELIST, tasks per host from SLURM_STEP_TASKS_PER_NODE, this
  worker from SLURM_PROCID, ports from 15000 + 8 x (job id mod 5000) (two jobs sharing a node
  do not collide). GPUs are left as SLURM bound them (`--gpus-per-task`).
  (`tf.distribute.cluster_resolver.SlurmClusterResolver` assigns GPUs itself and resolves no
  worker at all on CPU nodes, so the same cluster is built here from the same variables.)

  Raises:
    ValueError: in a SLURM job that is not a step of several tasks.
  """
  if environ.get("TF_CONFIG") or "SLURM_JOB_ID" not in environ:
    return None
  from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm

  tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
  if tasks < 2 or "SLURM_PROCID" not in environ:
    raise ValueError(
        "--strategy=multi_worker in a SLURM job needs several tasks of one step: launch the "
        "command with `srun` in a job of --ntasks=N (one worker per task), or set TF_CONFIG")
  hosts = slurm.expand_hostlist(environ["SLURM_STEP_NODELIST"])
  per_host = slurm.expand_tasks_per_node(environ["SLURM_STEP_TASKS_PER_NODE"])
  base = 15000 + 8 * (int(environ["SLURM_JOB_ID"]) % 5000)
  workers = [f"{host}:{base + i}" for host, n in zip(hosts, per_host) for i in range(n)]
  return tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec({"worker": workers}), task_type="worker",
      task_id=int(environ["SLURM_PROCID"]), rpc_layer="grpc")


def is_writer(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes a run's files (checkpoints, history, model, predictions,
  results row): True for a single process (any one-worker strategy) and for the chief of a
  MultiWorkerMirroredStrategy cluster (worker 0, or the "chief" task if TF_CONFIG has one);
  False for its other workers, which must still take part in every collective (training
  steps, evaluation, `predict`) but write nothing that the chief or a later run reads."""
  return bool(strategy.extended.should_checkpoint)


def steps_per_execution(configured: int, steps_per_epoch: int) -> int:
  """The steps per compiled call a run can use: the largest divisor of `steps_per_epoch` not
  above `configured`. Keras runs whole executions: with 4 steps per call, an epoch of 1 step
  trains 4 and one of 5 trains 8 (measured on Keras 3.15), so a run would train more steps
  than it declares, runs on small splits the most, and a resumed run would skip the wrong
  number of batches."""
  return max(d for d in range(1, max(1, min(configured, steps_per_epoch)) + 1)
             if steps_per_epoch % d == 0)


def learning_rate_schedule(learning_rate: float, schedule: str = "constant", *,
                           total_steps: int = 0, warmup_steps: int = 0):
  """A constant rate, or a cosine decay to 0 over `total_steps` after `warmup_steps` of linear
  warm-up from 0 (a function of the optimizer's step, so a resumed run continues it)."""
  if schedule == "constant":
    return learning_rate
  if schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate, decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
  raise ValueError(f"unknown schedule {schedule!r}; known: constant, cosine")


def build_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                    total_steps: int = 0, warmup_steps: int = 0) -> keras.optimizers.Optimizer:
  """Adam, or SGD with momentum 0.9, on `learning_rate_schedule`."""
  rate = learning_rate_schedule(learning_rate, schedule, total_steps=total_steps,
                                warmup_steps=warmup_steps)
  if name == "adam":
    return keras.optimizers.Adam(rate)
  if name == "sgd":
    return keras.optimizers.SGD(rate, momentum=0.9)
  raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")


@contextlib.contextmanager
def dtype_policy(name: str):
  """Builds the networks made inside under the Keras dtype policy `name` ("float32",
  "mixed_bfloat16", "mixed_float16"), restoring the previous global policy on exit (layers keep
  the policy they were built with). A model compiled inside under "mixed_float16" gets Keras'
  dynamic loss scaling (`LossScaleOptimizer`)."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)
