"""Teacher labelling: run each teacher once over the data and cache its logits.

  python -m stages.label --preset=paper --data_dir=D --teacher_zoo=Z --workdir=W \\
      --num_shards=4 --shard_index=0

Writes W/labels/<teacher_id>/part-*.parquet (columns id, logit_0..) and _COMPLETE.json. Takes
the same flags as stages.distill, which reads these caches (and labels anything missing).
"""

from absl import flags

from stages import common

common.define_flags()
common.define_launcher_flags()
flags.adopt_module_key_flags(common)  # --help lists the shared flags too


def main(argv):
  del argv
  common.setup_logging()

  def go():
    config = common.config_from_flags()  # Settings and paths first: before TensorFlow loads.
    common.check_output(config.workdir, "--workdir")
    common.launch_if_asked("label", config.workdir, config.preset)
    from simclr_distill.steps import label

    labels_dir = label.run(config, safe_mode=common.safe_mode())
    print(f"teacher labels: {labels_dir}")

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
