"""Data preparation: a BigEarthNet-S2 archive (or TFDS's bigearthnet/all), or Sentinel-2
scenes cut into unlabelled patches for stage 1 -> prepared records.

  python -m stages.prepare --archive_dir=BigEarthNet-v1.0 --output_dir=data/bigearthnet \\
      --basic_splits=balanced_splits --expanded_splits=balanced_splits_expanded
  python -m stages.prepare --source=tfds --tfds_data_dir=~/tensorflow_datasets --output_dir=D
  python -m stages.prepare --source=scenes --scene_dir=california_scenes --output_dir=data/california

Writes D/records/part-*.tfrecord (10 bands at 120x120, uint16), D/ids.txt, D/rejects.csv
(patch or scene, reason) and D/dataset.json (shapes, band statistics; BigEarthNet: split sizes
and positive rates; scenes: patches kept and dropped, by scene and reason), and for BigEarthNet
D/splits/{basic,expanded}/{train_P,val_P,test}. Scenes are GeoTIFF/JPEG 2000 files of the
study's 10 bands, or folders of one file per band (an L2A .SAFE product as it is), cut on a
grid (--patch_size, --stride) and read a few patch rows at a time, never whole. Interrupted
runs resume at the first unfinished shard; rerunning a finished one rewrites only the lists and
the manifest. Its settings (`simclr_distill.study_config.PrepareConfig`) are those of the
study's step 0: `--print_config` lists them, `--set` reaches any.
"""

from absl import flags

from stages import common

common.define_prepare_flags()
flags.mark_flag_as_required("output_dir")
common.define_launcher_flags()
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_logging()

  def go():
    cfg = common.prepare_from_flags()
    common.check_output(cfg.output_dir, "--output_dir")  # Before TensorFlow loads.
    common.launch_if_asked("prepare", cfg.output_dir, "", shardable=False)
    from simclr_distill.steps import prepare

    data = prepare.run(cfg)
    print("\n".join(prepare.summary(data, cfg.output_dir)))

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
