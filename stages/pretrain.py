"""Stage 1: SimCLR pretraining of the study's encoders (NT-Xent over the global batch).

  python -m stages.pretrain --preset=demo --workdir=results/study_demo  # digits, CPU
  python -m stages.pretrain --preset=paper --data_dir=data/bigearthnet --workdir=W --encoders=BEN
  python -m stages.pretrain --preset=paper --data_dir=data/bigearthnet --workdir=W \\
      --encoder=CA_sgd:optimizer=sgd,learning_rate=0.1,data_dir=data/california

Takes the study's settings (as `stages.study`): the preset's encoders or those of --encoder
(repeatable), narrowed by --encoders; --pretrain_* for the shared schedule; --set for any
other field (--print_config lists them). Writes W/pretrain/<name>/simclr.keras (image -> 128-d
projection; layer "projection_512" is where fine-tuning attaches), history.csv and
config.json per encoder, then probes the frozen encoder and a random-init one on the
validation lists (W/runs/pretrain-*/, rows of stage "pretrain"; --noprobe skips them). Reruns
skip a finished encoder and resume a killed one at its last checkpoint (--checkpoint_steps,
--checkpoint_minutes).
"""

from absl import flags

from stages import common

common.define_study_flags(("data", "encoders", "scale", "pretrain"),
                          presets=("demo", "paper", "smoke"))
common.define_launcher_flags()
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from stages import common

  common.setup_logging()

  def go():
    cfg = common.study_from_flags()  # Settings and paths first: before TensorFlow loads.
    common.check_output(cfg.workdir, "--workdir")
    common.launch_if_asked("pretrain", cfg.workdir, cfg.distill.preset,
                           tasks=len(cfg.selected_encoders()))
    from simclr_distill.steps import pretrain

    for encoder in pretrain.run(cfg):
      if encoder.checkpoint:
        print(f"pretrained encoder {encoder.name}: {encoder.checkpoint}")

  common.run_or_explain(go)


def run():
  from stages import common

  common.run_app(main)


if __name__ == "__main__":
  run()
