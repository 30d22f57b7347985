"""Print, filter and summarise results tables.

  python -m stages.results --workdirs=results/study_demo
  python -m stages.results --workdirs=W --filter='stage == "distill" and split_percent <= 10'
  python -m stages.results --workdirs=W --group_by=stage,arch,split_percent --metrics=f1,agreement
  python -m stages.results --workdirs=results/methods_demo --group_by=stage,method
  python -m stages.results --compare            # the study's questions, with intervals

Reads workdirs (their per-run rows) or .parquet/.csv tables; writes nothing unless --output.
"""

import sys

from absl import flags

flags.DEFINE_list("workdirs", ["results/study_demo"], "Workdirs or results table files (default: what `make demo` writes).")
flags.DEFINE_string("filter", "", "A pandas query over the columns; backquote `f0.5`.")
flags.DEFINE_list("group_by", None, "Group columns: print mean/std/count of the metrics.")
flags.DEFINE_list("metrics", ["f1", "f0.5", "auc", "agreement", "teacher_kl"], "Metrics to "
                  "summarise (mean, std and count per group: over seeds when the group fixes "
                  "everything else).")
flags.DEFINE_list("columns", ["stage", "arch", "labeling", "split_percent", "teacher_id",
                              "student_optimizer", "seed", "f1", "auc", "status"],
                  "Columns to print without --group_by.")
flags.DEFINE_boolean("compare", False, "Answer the study's questions per scheme and split: "
                     "pretrained vs random-init encoders and teachers, teachers vs the classical "
                     "reference, distilled vs baseline students, Adam vs SGD, soft vs hard "
                     "targets; each a difference with its bootstrap interval over the test "
                     "examples and the runs (simclr_distill.stats).")
flags.DEFINE_string("metric", "f1", "Metric of --compare: f1, accuracy, precision, recall.")
flags.DEFINE_float("confidence", 0.95, "Coverage of --compare's intervals.")
flags.DEFINE_string("output", None, "Also write the (filtered, grouped or compared) table to this .csv.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from stages import common

  # A path --output cannot take stops the command at once, before the slow imports.
  common.run_or_explain(lambda: common.check_output(FLAGS.output, "--output", directory=False,
                                                    example="table.csv"))
  import pandas as pd

  from simclr_distill import results

  def go():
    if FLAGS.compare:
      return compare()
    table = results.query(results.load_table(FLAGS.workdirs), FLAGS.filter)
    if FLAGS.group_by:
      shown = results.summarize(table, FLAGS.group_by, FLAGS.metrics)
    else:
      missing = [c for c in FLAGS.columns if c not in table.columns]
      if missing:
        raise ValueError(f"the results of --workdirs={','.join(FLAGS.workdirs)} have no column(s) "
                         f"{', '.join(missing)}; they have: {', '.join(map(str, table.columns))}. "
                         "Give workdirs or results tables written by this package, or choose "
                         "--columns from those")
      shown = table[FLAGS.columns]
    if table.empty:
      print("no rows (check --workdirs and --filter)", file=sys.stderr)
    with pd.option_context("display.max_rows", 500, "display.width", 200):
      print(shown.round(4).to_string())
    if FLAGS.output:
      from simclr_distill import fileio
      fileio.atomic_write(FLAGS.output, shown.to_csv)

  def compare():
    import pathlib

    from simclr_distill import stats

    frames = []
    for workdir in FLAGS.workdirs:
      if not pathlib.Path(workdir).is_dir():
        raise ValueError(f"--compare reads each run's saved predictions, so --workdirs must be "
                         f"workdirs; {workdir} is not a directory")
      table = results.query(results.load_table([workdir]), FLAGS.filter)
      frame = stats.study_comparisons(table, stats.workdir_reader(workdir), metric=FLAGS.metric,
                                      confidence=FLAGS.confidence)
      print(f"== {workdir}")
      print(stats.format_comparisons(frame))
      frames.append(frame.assign(workdir=workdir))
    if FLAGS.output:
      from simclr_distill import fileio
      fileio.atomic_write(FLAGS.output, lambda tmp: pd.concat(frames).to_csv(tmp, index=False))

  common.run_or_explain(go)


def run():
  from stages import common

  common.run_app(main)


if __name__ == "__main__":
  run()
