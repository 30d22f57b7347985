"""Offline distillation throughput: the stage's `Distiller` on cached teacher logits vs plain
`model.fit` of the same student with hard labels.

  python -m benchmarks.distill_offline [--scales=small,paper] [--repeats=5]

Both sides train the same student architecture (same initial weights) with Adam on the same
in-memory images, same batch and `steps_per_execution`; the input pipeline is out of the
comparison (see `benchmarks.input_pipeline`). "ours": `distiller.Distiller` with the study's hard
pseudo-labels from cached logits carried in the batch, with its training metrics (AUC,
agreement, KL, loss trackers). "reference": `student.fit` with binary cross-entropy on hard
labels and no metrics. Target: ratio >= 0.95.
"""

from __future__ import annotations

from absl import app

from benchmarks import common

TARGET = 0.95


def run_scale(scale: common.Scale, work, report: common.Report) -> None:
  del work
  import keras
  import numpy as np

  from simclr_distill.training import distiller

  images = common.synthetic_images(scale)
  shape, count = images.shape[1:], len(images)
  logits = np.random.default_rng(1).standard_normal((count, 1)).astype(np.float32)
  labels = (logits > 0).astype(np.float32)

  ours = distiller.Distiller(common.build(scale, scale.student, shape), task="binary",
                             loss_kind="hard")
  ours.compile(optimizer=keras.optimizers.Adam(1e-4), steps_per_execution=scale.steps_per_execution)
  plain = common.build(scale, scale.student, shape)
  plain.compile(optimizer=keras.optimizers.Adam(1e-4),
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
                steps_per_execution=scale.steps_per_execution)
  distill_data = common.endless(images, {"label": labels[:, 0], "mask": np.zeros(count, np.float32),
                                          "teacher": logits}, scale.batch_size)
  plain_data = common.endless(images, labels, scale.batch_size)
  # Like for like: the same loss on the same batch from the same initial weights.
  n = scale.batch_size
  common.same_loss(report, scale.name, {
      "Distiller (cached logits)": float(ours.evaluate(
          images[:n], {"label": labels[:n, 0], "mask": np.zeros(n, np.float32),
                       "teacher": logits[:n]}, verbose=0, return_dict=True)["loss"]),
      "model.fit (hard labels)": float(plain.evaluate(images[:n], labels[:n], verbose=0))})
  print(f"[{scale.name}] {scale.student} student, {shape}, batch {scale.batch_size}, "
        f"{scale.steps} steps per repetition", flush=True)
  rates = common.alternate({"Distiller (cached logits)": common.fit_side(ours, distill_data, scale),
                            "model.fit (hard labels)": common.fit_side(plain, plain_data, scale)},
                           common.FLAGS.repeats)
  report.ratio(scale.name, f"offline distillation ({scale.student}, batch {scale.batch_size}) vs "
               "plain model.fit", rates, "Distiller (cached logits)", "model.fit (hard labels)",
               TARGET)


if __name__ == "__main__":
  app.run(common.main("offline distillation: training images/s, Distiller vs model.fit", run_scale))
