"""The whole study in one resumable command: prepare -> pretrain -> finetune -> label ->
distill -> baseline.

  python -m stages.study                        # the digits demo on CPU (see README for time)
  python -m stages.study --preset=smoke --workdir=W
  python -m stages.study --preset=methods       # hard vs soft labels, function matching,
                                                # an ensemble teacher, born-again, 3 seeds
  python -m stages.study --preset=paper --data_dir=data/bigearthnet --archive_dir=BigEarthNet-v1.0 \\
      --strategy=mirrored --workdir=W           # the study: 3 encoders, 36 teachers, 180
                                                # students, 120 baselines

Rerunning the command skips every finished step and run. --teacher_zoo skips stages 1 and 2
and distils that zoo instead. --only filters the student and baseline runs; the teachers are
chosen by --encoders, --schemes, --split_percents and --finetune_seeds. To spread one stage over machines, run the stages one by one
(stages.pretrain, stages.finetune, stages.label, stages.distill, stages.baseline) with
--num_shards.
"""

from absl import flags

from stages import common

common.define_study_flags(common.STUDY_GROUPS, presets=("demo", "methods", "paper", "smoke"))
flags.adopt_module_key_flags(common)


def main(argv):
  del argv
  common.setup_logging()

  def go():
    from simclr_distill import results
    from simclr_distill.steps import study

    cfg = common.study_from_flags()
    common.check_output(cfg.workdir, "--workdir")
    table = study.run(cfg, safe_mode=common.safe_mode())
    print(f"results: {cfg.workdir}/{results.TABLE_PARQUET} ({len(table)} rows)")
    common.finish(table, [common.closing_summary(cfg.workdir, table)])

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
