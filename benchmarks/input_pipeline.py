"""Input pipeline: training from the TFRecord reader vs from the same tensors in memory.

  python -m benchmarks.input_pipeline [--scales=small,paper] [--repeats=5]

One offline-distillation `Distiller` (cached teacher logits, hard pseudo-labels) trains on:
  ours       the stage's own training stream, `rundata.RunDatasets.train()`: TFRecords read,
             parsed, standardised, filtered to the run's unlabelled pool, shuffled, batched,
             joined to the cached logits; read every epoch (the paper preset: 590k patches fit
             no memory), and at the small scale also cached after the first pass (the demo);
  reference  the same pool's examples and targets already in memory (numpy), shuffled and
             batched by tf.data.
The same model and traced step serve both, so only the input differs. Target: ratio >= 0.95.
"""

from __future__ import annotations

import dataclasses
import pathlib

from absl import app

from benchmarks import common

TARGET = 0.95


def run_scale(scale: common.Scale, work: pathlib.Path, report: common.Report) -> None:
  import keras
  import numpy as np
  import tensorflow as tf

  from simclr_distill import matrix, teachers
  from simclr_distill.training import context, distiller, rundata

  data = common.prepared_data(scale, work)
  entry = teachers.TeacherEntry(teacher_id="bench", labeling="basic", split_percent=10, path="-")
  run = matrix.RunSpec(
      stage="distill", arch=scale.student, labeling="basic", split_percent=10, optimizer="adam",
      learning_rate=1e-4, seed=0, protocol="holdout", task="binary", epochs=1,
      batch_size=scale.batch_size, early_stopping=False, patience=0, monitor="val_label_loss",
      head=scale.head, dropout=0.25, width=scale.width, dataset=data.fingerprint(), teacher=entry)
  all_ids = np.asarray(data.ids())
  logits = np.random.default_rng(0).standard_normal((len(all_ids), 1)).astype(np.float32)
  model = distiller.Distiller(common.build(scale, scale.student, data.image_shape), task="binary",
                              loss_kind="hard")
  model.compile(optimizer=keras.optimizers.Adam(1e-4), steps_per_execution=scale.steps_per_execution)
  # The paper preset streams the records every epoch (590k patches fit no memory); the demo
  # caches the decoded examples after the first pass. The small scale is timed both ways.
  for cache in ((True, False) if scale.name == "small" else (False,)):
    ctx = context.RunContext(workdir=work / f"runs-{scale.name}", data=data,
                             strategy=tf.distribute.get_strategy(), cache=cache,
                             steps_per_execution=scale.steps_per_execution)
    datasets = rundata.RunDatasets(run, ctx, (all_ids, logits))
    pool_ids, images, _ = common.in_memory(data, datasets.train_ids)
    row = {i: r for r, i in enumerate(all_ids.tolist())}
    in_memory = tf.data.Dataset.from_tensor_slices((images, {
        "label": np.zeros(len(pool_ids), np.float32), "mask": np.zeros(len(pool_ids), np.float32),
        "teacher": logits[[row[i] for i in pool_ids.tolist()]]})).shuffle(
            min(len(pool_ids), 10_000), seed=0).repeat().batch(
                scale.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    # With the cache, the untimed first epoch of each repetition is one whole pass (what
    # fills the cache), so the timed epoch is the cached steady state of a run.
    timed = dataclasses.replace(scale, steps=-(-len(pool_ids) // scale.batch_size)) if cache else scale
    what = "decoded examples cached after the first pass" if cache else "records read every epoch"
    print(f"[{scale.name}] {scale.student} student, {data.image_shape}, batch {scale.batch_size}, "
          f"pool of {len(pool_ids)} examples, {what}, {timed.steps} steps per repetition",
          flush=True)
    rates = common.alternate({"records": common.fit_side(model, datasets.train(), timed),
                              "in memory": common.fit_side(model, in_memory, timed)},
                             common.FLAGS.repeats)
    report.ratio(scale.name, f"training ({scale.student}, batch {scale.batch_size}) from the "
                 f"TFRecord reader ({what}) vs in memory", rates, "records", "in memory", TARGET)


if __name__ == "__main__":
  app.run(common.main("input pipeline: training images/s, records vs in memory", run_scale))
