"""Stage 2: fine-tune pretrained encoders into the teacher zoo that stage 3 reads.

  python -m stages.finetune --preset=demo --workdir=results/study_demo
  python -m stages.finetune --preset=paper --data_dir=D --workdir=W --encoders=BEN \\
      --freeze=encoder --num_shards=4 --shard_index=$TASK_ID

Each encoder (W/pretrain/<name>/simclr.keras from stages.pretrain, or --encoder=NAME:checkpoint=F)
gets the study's head on its 512-unit projection layer, then trains on every labelling scheme
and label split (Adam 5e-5, early stopping on validation AUC, best weights restored). Writes
W/runs/<run_id>/ with a results row (stage=finetune) per teacher, and the zoo: --zoo_dir
(default W/zoo) with <teacher_id>.keras and manifest.csv (with provenance), ready for
`stages.distill --teacher_zoo`. Reruns skip finished teachers.
"""

from absl import flags

from stages import common

common.define_study_flags(("data", "encoders", "scale", "finetune", "study"),
                          presets=("demo", "paper", "smoke"))
flags.DEFINE_string("zoo_dir", None, "Where to write the teacher zoo (default <workdir>/zoo).")
common.define_launcher_flags()
flags.adopt_module_key_flags(common)


def main(argv):
  del argv
  common.setup_logging()

  def go():
    from simclr_distill import results
    from simclr_distill.steps import finetune

    cfg = common.study_from_flags()
    common.check_output(cfg.workdir, "--workdir")
    common.check_output(common.FLAGS.zoo_dir, "--zoo_dir")
    common.launch_if_asked("finetune", cfg.workdir, cfg.distill.preset)
    zoo = finetune.run(cfg, zoo_dir=common.FLAGS.zoo_dir, safe_mode=common.safe_mode())
    table = results.load_table([cfg.workdir])
    print(f"teacher zoo: {zoo}/manifest.csv")
    teachers = table[table["stage"] == "finetune"]
    if len(teachers):
      print(results.summarize(teachers, common.summary_keys(
          teachers, ["encoder", "labeling", "split_percent"]), ["f1", "auc"]).round(3).to_string())
    common.finish(teachers)  # Collapsed and failed runs; exit status 1 if any failed.

  common.run_or_explain(go)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
