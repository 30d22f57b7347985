"""Stage 3: distil teachers into students over the run matrix; write the results table.

  python -m stages.distill                              # the digits demo (see README)
  python -m stages.distill --preset=smoke --workdir=W   # the same path in under two minutes
  python -m stages.distill --preset=paper --data_dir=D --teacher_zoo=Z --workdir=W \\
      --num_shards=8 --shard_index=$TASK_ID             # the study's 180 runs, sharded

Writes W/runs/<run_id>/{student.keras, predictions.parquet, config.json, history.csv,
result.json}, W/labels/<teacher>/ (cached teacher logits) and W/results.{parquet,csv}.
Rerunning the same command skips finished work.
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
    common.launch_if_asked("distill", config.workdir, config.preset)
    from simclr_distill import results
    from simclr_distill.steps import distill

    table = distill.run(config, safe_mode=common.safe_mode())
    print(f"results: {config.workdir}/{results.TABLE_PARQUET} ({len(table)} rows)")
    if len(table):
      print(results.summarize(table, common.summary_keys(table, ["stage", "arch", "split_percent"]),
                              ["f1", "agreement"]).round(3).to_string())
      print(f"(means and standard deviations over runs; `{common.python_command()} -m "
            "stages.results --compare` gives the paired differences with intervals)")
    common.finish(table)  # Collapsed and failed runs; exit status 1 if any failed.

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
