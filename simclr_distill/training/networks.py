"""The network a run trains and the compiled model around it.

`build_network` makes a stage-2 teacher on its pretrained encoder, a student, a baseline (from
scratch or on a frozen ImageNet backbone) or a copy of a teacher's own network. `build_run_model`
wraps it in a compiled `Distiller` in the run's initial state, reusing the traced model of an
earlier run of the same shape when the context keeps one (`warm_key`, `reinitialise`).
"""

from __future__ import annotations

import gc
import logging

import keras
import tensorflow as tf

from simclr_distill import matrix, models, teacher_net
from simclr_distill import teachers as teachers_lib
from simclr_distill.matrix import RunSpec
from simclr_distill.study_config import RANDOM_INIT
from simclr_distill.training import runtime
from simclr_distill.training.context import RunContext
from simclr_distill.training.distiller import Distiller

log = logging.getLogger(__name__)


def build_network(run: RunSpec, ctx: RunContext, num_outputs: int) -> keras.Model:
  """The model a run trains: a stage-2 teacher on its pretrained encoder, a student, or a
  baseline (from scratch, or on a frozen ImageNet backbone)."""
  if run.arch == matrix.SAME_ARCH:
    return _own_network(run, ctx, num_outputs)
  if run.stage == "finetune" and run.encoder:
    encoder = ctx.encoders.get(run.encoder)
    if run.encoder != RANDOM_INIT and (encoder is None or not encoder.checkpoint):
      raise ValueError(f"run {run.run_id}: no checkpoint for encoder {run.encoder!r}; known: "
                       f"{', '.join(ctx.encoders) or 'none'}")
    return teacher_net.build_teacher(
        encoder.checkpoint if encoder else None, arch=run.arch, input_shape=ctx.data.image_shape,
        width=run.width, num_outputs=num_outputs, dropout=run.dropout, freeze=run.freeze,
        safe_mode=ctx.safe_mode, seed=run.seed)
  model = models.build_model(run.arch, ctx.data.image_shape, num_outputs, head=run.head,
                             dropout=run.dropout, width=run.width)
  if run.init == "imagenet":
    models.load_imagenet_backbone(model, run.arch,
                                  models.imagenet_weights_path(run.arch, ctx.imagenet_dir))
  return model


def _own_network(run: RunSpec, ctx: RunContext, num_outputs: int) -> keras.Model:
  """Self-distillation: the teacher's network, re-initialised (`keras.models.clone_model`
  builds every layer anew from its config)."""
  teacher = teachers_lib.load_teacher(run.teacher, ctx.zoo_dir, image_shape=ctx.data.image_shape,
                                      num_outputs=num_outputs, safe_mode=ctx.safe_mode,
                                      fold_batchnorm=False)  # The network itself is copied.
  if isinstance(teacher, teachers_lib.EnsembleTeacher):
    raise ValueError(f"run {run.run_id}: arch 'same' copies one teacher's network; "
                     f"{run.teacher.teacher_id} is an ensemble")
  if teacher.output != "logits":
    raise ValueError(f"run {run.run_id}: arch 'same' needs a teacher that outputs logits; "
                     f"{run.teacher.teacher_id} outputs {teacher.output}")
  keras.utils.set_random_seed(run.seed)  # Loading drew from the random state: reset it.
  try:
    return keras.models.clone_model(teacher.model)
  except Exception as e:  # A SavedModel wrapper, or a custom layer without a config.
    raise ValueError(f"run {run.run_id}: cannot copy the network of teacher "
                     f"{run.teacher.teacher_id} ({type(e).__name__}: {e}); use a named student "
                     "architecture") from e


def warm_key(run: RunSpec, ctx: RunContext, num_outputs: int, steps: int, *,
             offline: bool) -> tuple | None:
  """What a compiled model's traced steps depend on, for runs that may reuse another run's
  model (`RunContext.keep_warm`); None for runs that never do: online teachers (the teacher
  is in the model), networks copied from a teacher or built on a pretrained encoder, and
  float16 loss scaling (its scale is optimizer state that is not reset)."""
  if (ctx.reuse_models < 1 or (run.stage == "distill" and not offline) or
      run.arch == matrix.SAME_ARCH or run.encoder or ctx.precision == "mixed_float16" or
      run.optimizer not in ("adam", "sgd")):
    return None
  schedule = (run.schedule, run.epochs * steps, run.warmup_epochs * steps) if (
      run.schedule != "constant") else (run.schedule,)
  return (run.stage == "distill", run.arch, run.head, run.dropout, run.width, run.init, run.task,
          num_outputs, tuple(ctx.data.image_shape), run.loss.kind, run.loss.temperature,
          run.loss.alpha, run.optimizer, schedule, ctx.precision, ctx.jit_compile,
          runtime.steps_per_execution(ctx.steps_per_execution, steps), ctx.replicas)


def reinitialise(model: Distiller, fresh: keras.Model, learning_rate: float) -> bool:
  """Gives a kept model the state of a newly built one: every student variable (weights,
  normalisation statistics, dropout seed states) from `fresh`, the optimizer's moments and
  step count zeroed and its learning rate set. Returns False (nothing changed) when the
  networks' variables do not match one to one."""
  target, source = model.student.variables, fresh.variables
  if len(target) != len(source) or any(a.shape != b.shape for a, b in zip(target, source)):
    return False
  for a, b in zip(target, source):
    a.assign(b)
  optimizer = model.optimizer
  rate = getattr(optimizer, "_learning_rate", None)
  for variable in optimizer.variables:
    if variable is rate:
      variable.assign(learning_rate)
    else:
      variable.assign(tf.zeros(variable.shape, variable.dtype))
  return True


def build_run_model(run: RunSpec, ctx: RunContext, steps: int, *, offline: bool):
  """The compiled model a run trains, in the run's initial state: (distiller, student, online
  teacher or None, warm key).

  The student's initial weights (and its dropout seeds) are drawn right after the global
  random state is reset to the run's seed, AFTER any online teacher is loaded: loading a
  `.keras` or `.h5` file builds layers and so draws from that state, and the student of an
  online run would otherwise start elsewhere than the same seed's offline student. A run's
  initial weights therefore depend only on its seed and settings, never on its teacher's file
  format, its teaching mode or what the process loaded before.
  """
  distilling = run.stage == "distill"
  num_outputs = ctx.num_outputs(run.task)
  teacher = None
  with ctx.strategy.scope():
    if distilling and not offline:  # The teacher keeps the precision it was saved with.
      teacher = teachers_lib.load_teacher(run.teacher, ctx.zoo_dir, image_shape=ctx.data.image_shape,
                                          num_outputs=num_outputs, safe_mode=ctx.safe_mode,
                                          fold_batchnorm=ctx.fold_batchnorm)
    with runtime.dtype_policy(ctx.precision):
      keras.utils.set_random_seed(run.seed)
      student = build_network(run, ctx, num_outputs)
      key = warm_key(run, ctx, num_outputs, steps, offline=offline)
      distiller = ctx.take_warm(key)
      if distiller is not None and reinitialise(distiller, student, run.learning_rate):
        # The same network, optimizer and traced steps as a finished run, in this run's
        # initial state: tracing (a minute for a ResNet on CPU) is paid once per shape.
        student = distiller.student
        log.debug("%s reuses the traced model of an earlier run", run.run_id)
      else:
        distiller = Distiller(student, task=run.task, loss_kind=run.loss.kind,
                              temperature=run.loss.temperature, alpha=run.loss.alpha,
                              teacher=teacher, distill=distilling)
        distiller.compile(optimizer=runtime.build_optimizer(
            run.optimizer, run.learning_rate, schedule=run.schedule,
            total_steps=run.epochs * steps, warmup_steps=run.warmup_epochs * steps),
            steps_per_execution=runtime.steps_per_execution(ctx.steps_per_execution, steps),
            jit_compile=ctx.jit_compile)
  # Freed before training: what earlier runs and stages dropped (models not kept or no longer
  # kept, loaded teachers, an earlier stage's models) and the network just built to re-initialise
  # a kept model. Keras models sit in reference cycles, which only Python's full collection
  # frees, and with TensorFlow loaded that runs once every several runs: memory climbed by a
  # network a run until it did.
  gc.collect()
  return distiller, student, teacher, key
