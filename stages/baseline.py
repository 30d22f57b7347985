"""The supervised baseline: each student architecture trained on each label split alone.

  python -m stages.baseline --preset=demo --workdir=results/study_demo
  python -m stages.baseline --preset=paper --data_dir=D --workdir=W --num_shards=8 \\
      --shard_index=$TASK_ID                   # the study's 120: 5 archs x 6 splits x 2 schemes
                                               # x {scratch, imagenet}

Early-stopped on the split's validation list, scored on the scheme's test list, written as
W/runs/<run_id>/ with stage=baseline rows in W/results.{parquet,csv} (the same schema as the
teachers and students). --baseline_inits=imagenet starts from a frozen ImageNet backbone
(weights read from --imagenet_dir; the first convolution is adapted to the band count).
"""

from absl import flags

from stages import common

common.define_study_flags(("data", "students", "schedule", "baseline", "scale"),
                          presets=("demo", "paper", "smoke"))
common.define_launcher_flags()
flags.adopt_module_key_flags(common)


def main(argv):
  del argv
  common.setup_logging()

  def go():
    from simclr_distill import results
    from simclr_distill.steps import baseline

    cfg = common.study_from_flags()
    common.check_output(cfg.workdir, "--workdir")
    common.launch_if_asked("baseline", cfg.workdir, cfg.distill.preset)
    table = baseline.run(cfg.baseline_config(), safe_mode=common.safe_mode())
    rows = table[table["stage"] == "baseline"]
    print(f"results: {cfg.workdir}/{results.TABLE_PARQUET} ({len(rows)} baseline rows)")
    if len(rows):
      print(results.summarize(rows, common.summary_keys(rows, ["init", "arch", "split_percent"]),
                              ["f1"]).round(3).to_string())
    common.finish(rows)  # Collapsed and failed runs; exit status 1 if any failed.

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
