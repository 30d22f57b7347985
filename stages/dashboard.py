"""The results dashboard (Dash, on 127.0.0.1) or its static HTML export.

  python -m stages.dashboard --workdirs=results/study_demo           # http://127.0.0.1:8050
  python -m stages.dashboard --workdirs=W1,W2 --published=../shared/reference/simclr_s2/results
  python -m stages.dashboard --workdirs=results/study_demo --export=report.html

Sources are workdirs or results tables (.parquet/.csv) and, with --published, the study's own
CSVs (distill_results.csv, finetune_results.csv, supervised_results.csv): on the reproduction's
axes where their (stage, encoder, labelling, split, arch) keys match, in figures of their own
otherwise. Filters cover every categorical column and the metrics' ranges; the figures, the
tables and the CSV download follow them. Each workdir's paired comparisons (its comparisons.csv,
or computed from its runs' saved predictions) are drawn with their intervals, and the saved
predictions of the selected (else the best, median and worst) runs as PR, ROC, calibration and
confusion views. --export writes one self-contained HTML file (filters work without a server)
and exits.
"""

from absl import flags

flags.DEFINE_list("workdirs", ["results/study_demo"], "Workdirs or results tables (.parquet/.csv).")
flags.DEFINE_list("published", [], "The study's result CSVs, or a directory holding them.")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (127.0.0.1: this machine only).")
flags.DEFINE_integer("port", 8050, "Port to serve on.")
flags.DEFINE_string("export", None, "Write a self-contained HTML report to this path and exit.")
flags.DEFINE_string("title", "simclr_distill results", "Page title.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from stages import common

  common.setup_logging()

  def go():
    common.check_output(FLAGS.export, "--export", directory=False, example="report.html")
    from simclr_distill.steps import dashboard

    dashboard.run(FLAGS.workdirs, published=FLAGS.published, host=FLAGS.host, port=FLAGS.port,
                  export=FLAGS.export, title=FLAGS.title)

  common.run_or_explain(go, resumable=False)


def run():
  from stages import common

  common.run_app(main)


if __name__ == "__main__":
  run()
