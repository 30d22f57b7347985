"""Print, filter and summarise results tables.

  python -m stages.results --workdirs=results/study_demo
  python -m stages.results --workdirs=W --filter='stage == "distill" and split_percent <= 10'
  python -m stages.results --workdirs=W --group_by=stage,arch,split_percent --metrics=f1,agreement
  python -m stages.results --workdirs=results/methods_demo --group_by=stage,method
  python -m stages.results --compare            # the study's questions, with intervals

Reads workdirs (their per-run rows) or .parquet/.csv tables; writes nothing unless --output.
"""

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
                                                    example="table.csv"), resumable=False)
  from simclr_distill.steps import results

  def go():
    if FLAGS.compare:
      results.compare(FLAGS.workdirs, filter_expression=FLAGS.filter, metric=FLAGS.metric,
                      confidence=FLAGS.confidence, output=FLAGS.output)
    else:
      results.show(FLAGS.workdirs, filter_expression=FLAGS.filter, group_by=FLAGS.group_by or (),
                   metrics=FLAGS.metrics, columns=FLAGS.columns, output=FLAGS.output)

  common.run_or_explain(go, resumable=False)


def run():
  from stages import common

  common.run_app(main)


if __name__ == "__main__":
  run()
