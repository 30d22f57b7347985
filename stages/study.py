"""The whole study in one resumable command: prepare -> pretrain -> finetune -> label ->
distill -> baseline.

  python -m stages.study                        # the digits demo on CPU (see README for time)
  python -m stages.study --preset=smoke --workdir=W
  python -m stages.study --preset=methods       # hard vs soft labels, function matching,
                                                # an ensemble teacher, born-again, 3 seeds
  python -m stages.study --preset=paper --data_dir=data/bigearthnet --archive_dir=BigEarthNet-v1.0 \\
      --strategy=mirrored --workdir=W           # the study: 3 encoders, 36 teachers, 180
                                                # students, 120 baselines

  python -m stages.study --preset=paper --data_dir=data/bigearthnet --launcher=slurm \
      --slurm_partition=gpu --workdir=W --wait # the same study as a chain of SLURM array jobs

Rerunning the command skips every finished step and run. --teacher_zoo skips stages 1 and 2
and distils that zoo instead. --only filters the student and baseline runs; the teachers are
chosen by --encoders, --schemes, --split_percents and --finetune_seeds. --steps runs some of
the study's steps; with --work_queue (or --num_shards, or in a SLURM array task) several
processes share a step's runs: what each task of --launcher=slurm runs.
"""

import sys

from absl import flags

from stages import common

common.define_study_flags(common.STUDY_GROUPS, presets=("demo", "methods", "paper", "smoke"))
common.define_launcher_flags()
flags.DEFINE_list("steps", None, "Run only these steps of the study, in its order (default: "
                  "all): prepare, pretrain, finetune, reference, label, distill, baseline, "
                  "compare. With --num_shards or --work_queue, several processes share the steps "
                  "pretrain, finetune, label, distill and baseline (what each SLURM task runs).")
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_logging()

  def go():
    from simclr_distill import results
    from simclr_distill.steps import study

    cfg = common.study_from_flags()
    common.check_output(cfg.workdir, "--workdir")
    if FLAGS.launcher == "slurm":
      sys.exit(common.launch_study(cfg))
    common.launch_if_asked("study", cfg.workdir, cfg.distill.preset)  # Refuses --dry_run, --wait.
    steps = study.check_steps(FLAGS.steps or study.STEPS)
    table = study.run(cfg, safe_mode=common.safe_mode(), steps=steps)
    print(f"results: {cfg.workdir}/{results.TABLE_PARQUET} ({len(table)} rows)")
    if "compare" in steps:
      common.finish(table, [common.closing_summary(cfg.workdir, table)])

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
