"""Online distillation throughput: the stage's `Distiller` with the teacher in the training
step vs `keras.distillation.Distiller`, and vs the study's own loop.

  python -m benchmarks.distill_online [--scales=small,paper] [--repeats=5]

All sides train the same student architecture (same initial weights) with Adam on the same
in-memory images and batch, under the same frozen teacher network:
  ours     `distiller.Distiller(student, teacher=...)` with the study's hard pseudo-labels, the
           teacher saved as a checkpoint and loaded as the stages load it (`load_teacher`,
           BatchNormalization folded into the convolutions: `simclr_distill.inference`); one
           traced step runs the teacher (inference mode), the loss and the update;
  keras    `keras.distillation.Distiller(teacher, student, HardPseudoLabels())` on the same
           teacher network (as built, BatchNormalization layers in place) with
           `student_loss_weight=0`, same `steps_per_execution` (target: ratio >= 1.0).
           `HardPseudoLabels` is the study's loss written as a `keras.distillation`
           `DistillationLoss`: keras' own `LogitsDistillation` takes a softmax over the last
           axis, constant for one logit, and given the string "kl_divergence" (its default)
           it skips even that and the T^2 factor, so it computes another loss;
  study    the study's loop: per batch, `teacher.predict` to numpy, round the probability at
           0.5, `student.train_on_batch` (target: ratio >= 1.5).
"""

from __future__ import annotations

import statistics

from absl import app

from benchmarks import common

TARGET_KERAS = 1.0
TARGET_STUDY = 1.5


def hard_pseudo_label_loss():
  """The study's objective (binary cross-entropy of the student's logit against the teacher's
  rounded probability) as a `keras.distillation.DistillationLoss`."""
  import keras

  class HardPseudoLabels(keras.distillation.DistillationLoss):
    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
      targets = keras.ops.cast(teacher_outputs > 0, "float32")
      return keras.ops.mean(keras.losses.binary_crossentropy(
          targets, keras.ops.cast(student_outputs, "float32"), from_logits=True))

  return HardPseudoLabels()


def run_scale(scale: common.Scale, work, report: common.Report) -> None:
  import keras
  import numpy as np
  import tensorflow as tf

  from simclr_distill.training import distiller

  images = common.synthetic_images(scale)
  shape, count = images.shape[1:], len(images)
  labels = np.random.default_rng(1).integers(0, 2, (count, 1)).astype(np.float32)
  teacher_model = common.build(scale, scale.teacher, shape, seed=1)
  teacher_model.trainable = False
  teacher = common.stage_teacher(teacher_model, work, f"bench-{scale.name}-{scale.teacher}",
                                 images[:16])

  ours = distiller.Distiller(common.build(scale, scale.student, shape), task="binary",
                             loss_kind="hard", teacher=teacher)
  ours.compile(optimizer=keras.optimizers.Adam(1e-4), steps_per_execution=scale.steps_per_execution)
  theirs = keras.distillation.Distiller(
      teacher=teacher_model, student=common.build(scale, scale.student, shape),
      distillation_losses=hard_pseudo_label_loss(), student_loss_weight=0.0)
  theirs.compile(optimizer=keras.optimizers.Adam(1e-4),
                 loss=keras.losses.BinaryCrossentropy(from_logits=True),
                 steps_per_execution=scale.steps_per_execution)
  study_student = common.build(scale, scale.student, shape)
  study_student.compile(optimizer=keras.optimizers.Adam(1e-4),
                        loss=keras.losses.BinaryCrossentropy(from_logits=True))

  def study_loop() -> int:
    for step in range(scale.steps):
      start = (step * scale.batch_size) % (count - scale.batch_size + 1)
      x = images[start:start + scale.batch_size]
      probabilities = 1.0 / (1.0 + np.exp(-teacher_model.predict(x, verbose=0)))
      study_student.train_on_batch(x, np.round(probabilities))
    return scale.steps * scale.batch_size

  plain = common.build(scale, scale.student, shape)
  plain.compile(optimizer=keras.optimizers.Adam(1e-4),
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
                steps_per_execution=scale.steps_per_execution)
  batches = [tf.constant(images[i:i + scale.batch_size])
             for i in range(0, count - scale.batch_size + 1, scale.batch_size)]

  checkpoint_forward = tf.function(lambda x: teacher_model(x, training=False))

  def forward(fn):
    def run() -> int:
      for step in range(scale.steps):
        fn(batches[step % len(batches)]).numpy()
      return scale.steps * scale.batch_size
    return run

  masked = {"label": labels[:, 0], "mask": np.zeros(count, np.float32)}
  # Like for like: from the same initial weights, every side's loss on the same batch.
  x = images[:scale.batch_size]
  pseudo = np.round(1.0 / (1.0 + np.exp(-teacher_model.predict(x, verbose=0))))
  common.same_loss(report, scale.name, {
      "ours": float(ours.evaluate(x, {k: v[:scale.batch_size] for k, v in masked.items()},
                                  verbose=0, return_dict=True)["loss"]),
      "keras.distillation": float(theirs.evaluate(x, labels[:scale.batch_size], verbose=0,
                                                  return_dict=True)["loss"]),
      "study loop": float(study_student.evaluate(x, pseudo, verbose=0))})
  print(f"[{scale.name}] {scale.teacher} teacher -> {scale.student} student, {shape}, batch "
        f"{scale.batch_size}, {scale.steps} steps per repetition", flush=True)
  rates = common.alternate({
      "ours": common.fit_side(ours, common.endless(images, masked, scale.batch_size), scale),
      "keras.distillation": common.fit_side(theirs, common.endless(images, labels, scale.batch_size), scale),
      "study loop": study_loop,
      # The two halves of the work alone: their sum is the compute floor of a step.
      "teacher forward alone": forward(checkpoint_forward),
      "folded teacher forward alone": forward(teacher.compiled_logits),
      "student step alone": common.fit_side(plain, common.endless(images, labels, scale.batch_size), scale)}, common.FLAGS.repeats)
  what = f"online distillation ({scale.teacher} -> {scale.student}, batch {scale.batch_size})"
  report.ratio(scale.name, f"{what} vs keras.distillation.Distiller", rates, "ours",
               "keras.distillation", TARGET_KERAS)
  report.ratio(scale.name, f"{what} vs the study's loop", rates, "ours", "study loop",
               TARGET_STUDY)
  median = {k: statistics.median(v) for k, v in rates.wall.items()}
  floor = 1.0 / (1.0 / median["teacher forward alone"] + 1.0 / median["student step alone"])
  report.figure(scale.name, "compute floor: teacher forward + student step, each timed alone",
                floor, "images/s")
  folded_floor = 1.0 / (1.0 / median["folded teacher forward alone"]
                        + 1.0 / median["student step alone"])
  report.figure(scale.name, "compute floor with the folded teacher", folded_floor, "images/s")
  report.figure(scale.name, "ours vs the compute floor with the folded teacher",
                median["ours"] / folded_floor, "x")
  report.figure(scale.name, "teacher forward pass, folded copy vs checkpoint as saved",
                median["folded teacher forward alone"] / median["teacher forward alone"], "x")
  report.figure(scale.name, "share of the study loop's time spent beyond the compute floor",
                100 * (1 - median["study loop"] / floor), "%")
  report.figure(scale.name, "the most any loop doing the same arithmetic can gain over the "
                "study's (floor / study loop)", floor / median["study loop"], "x")


if __name__ == "__main__":
  app.run(common.main("online distillation: training images/s", run_scale))
