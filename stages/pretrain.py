"""Stage 1: SimCLR pretraining of an encoder (NT-Xent over the global batch).

  python -m stages.pretrain --preset=demo --workdir=results/study_demo  # digits, CPU
  python -m stages.pretrain --preset=paper --data_dir=data/bigearthnet --workdir=W --name=BEN

Writes W/pretrain/<name>/simclr.keras (image -> 128-d projection; layer "projection_512" is
where fine-tuning attaches), history.csv and config.json, then probes the frozen encoder and a
random-init one on the validation lists (W/runs/pretrain-*/, rows of stage "pretrain"). Reruns skip a finished encoder and
resume a killed one at its last checkpoint (--checkpoint_steps, --checkpoint_minutes).
"""

from absl import flags

from simclr_distill import config as config_lib

flags.DEFINE_enum("preset", "demo", ["demo", "paper", "smoke"], "Starting configuration "
                  "(simclr_distill.pretrain.PRESETS).")
flags.DEFINE_string("workdir", "results/study_demo", "Output directory (the demo study's).")
flags.DEFINE_string("data_dir", None, "Prepared data (stages.prepare); omit for the digits demo.")
flags.DEFINE_string("name", None, "Encoder name (the zoo's encoder column), e.g. BEN, CA_adam.")
flags.DEFINE_string("arch", None, "Encoder architecture (see simclr_distill.models).")
flags.DEFINE_integer("width", None, "Width of a small encoder (mlp, cnn, resnet18).")
flags.DEFINE_enum("optimizer", None, ["adam", "sgd"], "adam, or sgd with cosine decay.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
flags.DEFINE_float("temperature", None, "NT-Xent temperature.")
flags.DEFINE_integer("batch_size", None, "Per-replica batch size.")
flags.DEFINE_integer("epochs", None, "Epochs over the pool.")
flags.DEFINE_string("policy", None, "Augmentation policy of the views: study (two of nine), "
                    "simclr, affine (small orientation-keeping warps, contrast and noise: the "
                    "digits demo's), inception_crop, mild_crop.")
flags.DEFINE_integer("seed", None, "Seed of views, shuffling and initialisation.")
flags.DEFINE_enum("strategy", "auto", config_lib.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address (with --strategy=tpu).")
flags.DEFINE_integer("checkpoint_steps", 0, "Checkpoint the training state every N steps (0: not "
                     "by count); a killed run resumes at its last checkpoint when rerun.")
flags.DEFINE_boolean("probe", True, "Then probe the frozen encoder and a random-init one: k-NN "
                     "and logistic regression on the validation lists (results rows of stage "
                     "pretrain).")
flags.DEFINE_list("probe_split_percents", ["3", "10", "100"], "Label splits whose train lists "
                  "train the probes.")
flags.DEFINE_float("checkpoint_minutes", 10.0, "... and every M minutes (0: not by time). Every "
                   "epoch end checkpoints too.")
flags.DEFINE_boolean("retrain_stale", False, "Pretrain again an encoder whose data or test lists "
                     "changed since it finished (without it the rerun stops and says so).")
FLAGS = flags.FLAGS
_FIELDS = ("name", "arch", "width", "optimizer", "learning_rate", "temperature", "batch_size",
           "epochs", "policy", "seed")


def main(argv):
  del argv
  from stages import common

  common.setup_logging()

  def go():
    common.check_output(FLAGS.workdir, "--workdir")  # Before TensorFlow loads.
    import dataclasses
    import pathlib

    from simclr_distill import checkpointing, distill, pretrain, probe
    from simclr_distill.data import digits, records

    cfg = dataclasses.replace(pretrain.PRESETS[FLAGS.preset], **{
        f: FLAGS[f].value for f in _FIELDS if FLAGS[f].present})
    if FLAGS.data_dir:
      data = records.PreparedData.open(FLAGS.data_dir)
    else:
      data = digits.prepare_digits(pathlib.Path(FLAGS.workdir) / "data")
    checkpoint = pretrain.run_pretraining(
        cfg, data, FLAGS.workdir, strategy=distill.build_strategy(FLAGS.strategy, FLAGS.tpu),
        checkpoint=checkpointing.CheckpointPolicy(FLAGS.checkpoint_steps, FLAGS.checkpoint_minutes),
        probe=probe.ProbeConfig(split_percents=tuple(int(p) for p in FLAGS.probe_split_percents))
        if FLAGS.probe else None, preset=FLAGS.preset, retrain_stale=FLAGS.retrain_stale)
    print(f"pretrained encoder {cfg.name}: {checkpoint}")

  common.run_or_explain(go)


def run():
  from stages import common

  common.run_app(main)


if __name__ == "__main__":
  run()
