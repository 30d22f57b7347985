"""Labelling throughput: the labelling stage vs `model.predict` of the same teacher.

  python -m benchmarks.labelling [--scales=small,paper] [--repeats=5]

"ours": `labelling.label_with_teacher` over the prepared records, from reading and decoding the
TFRecords to the Parquet parts of logits on disk (the cache is deleted before each repetition),
with the teacher saved to a checkpoint and loaded as the stages load it (`load_teacher`:
BatchNormalization folded into the convolutions).
"reference": `model.predict` of the same teacher network over the same examples already decoded
in memory (numpy), same batch size. Target: ratio >= 0.95.
"""

from __future__ import annotations

import pathlib
import shutil

from absl import app

from benchmarks import common

TARGET = 0.95


def run_scale(scale: common.Scale, work: pathlib.Path, report: common.Report) -> None:
  import keras
  import numpy as np

  from simclr_distill import labelling, models

  data = common.prepared_data(scale, work)
  ids, images, _ = common.in_memory(data)
  count = len(images)
  keras.utils.set_random_seed(0)
  model = models.build_model(scale.teacher, data.image_shape, 1, head=scale.head, width=scale.width)
  teacher = common.stage_teacher(model, work, f"bench-{scale.name}-{scale.teacher}", images[:16])
  checkpoint = work / f"{teacher.entry.teacher_id}.keras"
  labels_dir = work / f"labels-{scale.name}"
  batch = scale.batch_size * 4  # Labelling has no backward pass: a larger batch fits.

  def label():
    shutil.rmtree(labels_dir, ignore_errors=True)
    labelling.label_with_teacher(teacher, checkpoint, data, labels_dir, batch_size=batch)
    return count

  def predict():
    model.predict(images, batch_size=batch, verbose=0)
    return count

  # Like for like: both sides compute the same logits (the stage's folded teacher up to float
  # rounding), checked on the whole data before timing.
  label()
  cached_ids, cached = labelling.load_cached_logits(labels_dir, teacher.entry.teacher_id)
  row_of = {i: r for r, i in enumerate(cached_ids.tolist())}
  cached = cached[[row_of[i] for i in ids.tolist()]]
  reference = model.predict(images, batch_size=batch, verbose=0)
  deviation = float(np.max(np.abs(cached - reference)) / max(np.max(np.abs(reference)), 1e-12))
  report.figure(scale.name, "largest deviation of the stage's logits from model.predict's "
                "(relative)", deviation, "")
  if deviation > 1e-4:
    raise SystemExit(f"[{scale.name}] the labelling stage's logits differ from model.predict's "
                     f"by {deviation:.2e}: the timing would not compare like with like")
  print(f"[{scale.name}] {scale.teacher} teacher on {count} examples of {data.image_shape}, "
        f"batch {batch}", flush=True)
  rates = common.alternate({"label_with_teacher": label, "model.predict": predict},
                           common.FLAGS.repeats)
  report.ratio(scale.name, f"labelling ({scale.teacher}, batch {batch}, logits on disk) vs "
               "model.predict (in memory)", rates, "label_with_teacher", "model.predict", TARGET)


if __name__ == "__main__":
  app.run(common.main("labelling: images/s, labelling stage vs model.predict", run_scale))
