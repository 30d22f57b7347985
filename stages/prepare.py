"""Data preparation: a BigEarthNet-S2 archive (or TFDS's bigearthnet/all) -> prepared records.

  python -m stages.prepare --archive_dir=BigEarthNet-v1.0 --output_dir=data/bigearthnet \\
      --basic_splits=balanced_splits --expanded_splits=balanced_splits_expanded
  python -m stages.prepare --source=tfds --tfds_data_dir=~/tensorflow_datasets --output_dir=D

Writes D/records/part-*.tfrecord (10 bands at 120x120, uint16), D/ids.txt, D/rejects.csv
(patch, reason), D/splits/{basic,expanded}/{train_P,val_P,test} and D/dataset.json (shapes,
band statistics, split sizes and positive rates). Interrupted runs resume at the first
unfinished shard; rerunning a finished one rewrites only the lists and the manifest.
"""

import os

from absl import flags

flags.DEFINE_enum("source", "archive", ["archive", "tfds"], "Read the raw archive or TFDS's "
                  "prepared bigearthnet/all.")
flags.DEFINE_string("archive_dir", None, "The archive: one folder per patch (--source=archive).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir holding bigearthnet/all (--source=tfds).")
flags.DEFINE_string("tfds_split", "train", "TFDS split to read (bigearthnet has only 'train').")
flags.DEFINE_string("output_dir", None, "The prepared data directory to write.")
flags.DEFINE_integer("examples_per_shard", 1000, "Patches per TFRecord shard.")
flags.DEFINE_integer("workers", None, "Conversion processes (default: all cores).")
flags.DEFINE_boolean("compute_stats", False, "Compute per-band mean/std from the data in the "
                     "conversion pass instead of BigEarthNet's published ones.")
flags.DEFINE_string("basic_splits", None, "Directory of the study's basic split lists to import "
                    "(train_1 ... test); omit to generate splits with the study's procedure.")
flags.DEFINE_string("expanded_splits", None, "The same for the expanded scheme.")
flags.DEFINE_integer("split_seed", 0, "Seed of generated splits.")
flags.DEFINE_list("split_percents", ["1", "3", "10", "25", "50", "100"], "Generated split sizes.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from stages import common

  common.setup_logging()

  def go():
    common.check_output(FLAGS.output_dir, "--output_dir")  # Before TensorFlow loads.
    from simclr_distill.steps import prepare

    split_dirs = {s: d for s, d in (("basic", FLAGS.basic_splits),
                                     ("expanded", FLAGS.expanded_splits)) if d}
    data = prepare.run(
        FLAGS.output_dir, source_name=FLAGS.source, archive_dir=FLAGS.archive_dir,
        tfds_data_dir=FLAGS.tfds_data_dir, tfds_split=FLAGS.tfds_split,
        examples_per_shard=FLAGS.examples_per_shard, workers=FLAGS.workers or os.cpu_count(),
        compute_stats=FLAGS.compute_stats, split_dirs=split_dirs, split_seed=FLAGS.split_seed,
        percents=[int(p) for p in FLAGS.split_percents])
    print("\n".join(prepare.summary(data, FLAGS.output_dir)))

  common.run_or_explain(go)


def run():
  from stages import common

  common.run_app(main)


if __name__ == "__main__":
  run()
