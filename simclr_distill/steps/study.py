"""The whole study as one resumable command: prepare -> pretrain -> finetune -> label ->
distill -> baseline -> comparisons.

  python -m stages.study --preset=smoke --workdir=W

Every input that can fail is checked first (`preflight`: one message listing every problem).
Every step skips what is finished, so rerunning the command resumes the study where it
stopped, and a finished study reruns in seconds. Layout of `<workdir>`: `data/` (the digits
demo), `pretrain/<encoder>/` (stage 1), `zoo/` (stage 2's teacher zoo), `labels/` (teacher
logits), `runs/<run_id>/` (every probe, finetune, distill, reference and baseline run, each
with its results row), `results.{parquet,csv}` and `comparisons.csv` (the study's paired
comparisons with their intervals, `stats.write_comparisons`).

The log has a line per run and, after each step (and at most every 30 s within one), the
study's progress: units of work done and an estimated time left (`training.progress`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import time

import pandas as pd

from simclr_distill import augment, matrix, models, reference, results, simclr, stats
from simclr_distill import teachers as teachers_lib
from simclr_distill.data import records, source
from simclr_distill.steps import baseline, distill, finetune, prepare, pretrain, zoo
from simclr_distill.study_config import StudyConfig
from simclr_distill.training import progress, runtime

log = logging.getLogger(__name__)


def predicted_teachers(cfg: StudyConfig) -> list[teachers_lib.TeacherEntry]:
  """The zoo entries stage 2 will publish (ids, encoders, splits), before it has run."""
  d = cfg.distill.data
  return [teachers_lib.TeacherEntry(
      teacher_id=matrix.teacher_name(e.name, scheme, pct, seed, d.task), labeling=scheme,
      split_percent=pct, path="", encoder=e.name, encoder_optimizer=e.optimizer if e.pretrained else "",
      output="logits", arch=cfg.pretrain.arch, provenance={"seed": str(seed)})
      for e in cfg.selected_encoders() for scheme in d.schemes for pct in d.split_percents
      for seed in cfg.finetune.seeds]


def preflight(cfg: StudyConfig) -> records.PreparedData | None:
  """Every check of the study's inputs that can fail, before anything trains: the data (or
  the archive to prepare it from), each encoder's pretraining data and checkpoint, the
  teacher zoo, ImageNet weights of every baseline architecture that needs them, the split
  lists and input sizes, the augmentation policies, the monitors and `--only`.

  Raises:
    ValueError: listing every problem found, each with what to do.

  Returns:
    The study's data, opened, or None when it is still to be prepared from the archive.
  """
  data, problems = _data_problems(cfg)
  if cfg.distill.teacher.zoo_dir is None:
    problems += _encoder_problems(cfg, data)
  else:
    try:
      zoo.check_zoo(teachers_lib.read_zoo(cfg.distill.teacher.zoo_dir),
                    pathlib.Path(cfg.distill.teacher.zoo_dir))
    except (ValueError, FileNotFoundError) as e:
      problems.append(str(e))
  if data is not None:
    for arch in cfg.distill.student.archs:
      if arch != matrix.SAME_ARCH:
        try:
          models.check_input_size(arch, data.image_shape)
        except (ValueError, KeyError) as e:
          problems.append(e.args[0])
  policies = [cfg.distill.teacher.augment] if cfg.distill.teacher.augment != "none" else []
  if cfg.distill.teacher.zoo_dir is None:
    policies.append(cfg.pretrain.policy)
  for policy in policies:
    if policy not in augment.POLICIES:
      problems.append(f"unknown augmentation policy {policy!r}; known: "
                      f"{', '.join(augment.POLICIES.names())}")
  if cfg.baseline:
    problems += baseline.baseline_problems(cfg.baseline_config())
  if cfg.distill.only:
    problems += _only_problems(cfg)
  if problems:
    raise ValueError("the study cannot run; nothing was trained. Every problem found:\n  - "
                     + "\n  - ".join(problems))
  return data


def _data_problems(cfg: StudyConfig) -> tuple[records.PreparedData | None, list[str]]:
  """The study's data, opened (None when it is not prepared yet or cannot be), and what
  stops it."""
  d = cfg.distill.data
  if d.source == "records" and not (pathlib.Path(d.data_dir) / records.MANIFEST).is_file():
    if not cfg.prepare.archive_dir:
      return None, [f"no prepared data at {d.data_dir} (--data_dir): give --archive_dir (a "
                    "BigEarthNet-S2 archive) to prepare it there, or run stages.prepare first"]
    if not pathlib.Path(cfg.prepare.archive_dir).is_dir():
      return None, [f"--archive_dir={cfg.prepare.archive_dir} is not a directory"]
    return None, []
  try:
    return source.open_data(cfg.distill), []
  except (ValueError, FileNotFoundError) as e:
    return None, [str(e)]


def _encoder_problems(cfg: StudyConfig, data: records.PreparedData | None) -> list[str]:
  """What stops stage 1 for each selected encoder: a missing checkpoint, unprepared
  pretraining data, an architecture the data's images cannot feed."""
  problems = []
  for spec in cfg.selected_encoders():
    finished = (cfg.workdir / pretrain.PRETRAIN / spec.name / simclr.CHECKPOINT).is_file()
    if spec.checkpoint and not pathlib.Path(spec.checkpoint).exists():
      problems.append(f"encoder {spec.name}: no checkpoint at {spec.checkpoint} "
                      f"(--encoder={spec.name}:checkpoint=...)")
    elif (spec.pretrained and not spec.checkpoint and spec.data_dir and not finished
          and not (pathlib.Path(spec.data_dir) / records.MANIFEST).is_file()):
      problems.append(
          f"encoder {spec.name} pretrains on {spec.data_dir}, which is not prepared data (no "
          f"{records.MANIFEST}): cut Sentinel-2 scenes into it (`python -m stages.prepare "
          f"--source=scenes --scene_dir=SCENES --output_dir={spec.data_dir}`), or define the encoder "
          f"with another data_dir (--encoder={spec.name}:optimizer={spec.optimizer},"
          f"data_dir=...), or leave it out (--encoders)")
    elif (spec.pretrained and not spec.checkpoint and spec.data_dir and not finished
          and data is not None):
      d = cfg.distill.data
      try:
        own = records.PreparedData.open(spec.data_dir, bands=d.bands or None,
                                        image_size=d.image_size, standardize=d.standardize)
        if own.image_shape != data.image_shape:
          problems.append(f"encoder {spec.name}: its data {spec.data_dir} has images of "
                          f"{own.image_shape}, the study's {data.image_shape}; prepare both "
                          "alike (--patch_size of --source=scenes), or give --image_size")
      except (ValueError, FileNotFoundError) as e:
        problems.append(f"encoder {spec.name}: {e}")
    if data is not None:
      try:
        models.check_input_size(spec.pretrain_config(cfg.pretrain).arch, data.image_shape)
      except (ValueError, KeyError) as e:
        problems.append(f"encoder {spec.name}: {e.args[0]}")
  return problems


def _only_problems(cfg: StudyConfig) -> list[str]:
  """Whether `--only` selects something among the students and baselines the study will
  train (their matrices built from the teachers stage 2 will publish)."""
  students, baselines = _matrices(cfg, predicted_teachers(cfg))
  runs = students + baselines
  try:
    matrix.check_only(cfg.distill.only, runs)
  except ValueError as e:
    return [str(e)]
  return []


# The study's steps, in the order one process runs them. `--steps` runs some of them (the SLURM
# launcher submits each as its own job); a step reads what the steps before it wrote.
STEPS = ("prepare", "pretrain", "finetune", "reference", "label", "distill", "baseline", "compare")
# Steps whose work a shard (--num_shards) or a work-queue worker (--work_queue) can share.
SHARDABLE = ("pretrain", "finetune", "label", "distill", "baseline")


def check_steps(steps) -> tuple[str, ...]:
  """`steps` in the study's order, or ValueError naming an unknown one."""
  unknown = [s for s in steps if s not in STEPS]
  if unknown or not steps:
    raise ValueError(f"unknown step(s) {', '.join(unknown) or '(none given)'} (--steps); the "
                     f"study's steps: {', '.join(STEPS)}")
  return tuple(s for s in STEPS if s in steps)


def distill_config(cfg: StudyConfig):
  """Stage 3's config within the study: its zoo is stage 2's (`<workdir>/zoo`) unless an
  external one is given, its encoders `distill_encoders` when set, and no baselines (a step of
  their own)."""
  d = dataclasses.replace(cfg.distill, baseline=False)
  teacher = d.teacher
  if teacher.zoo_dir is None:
    teacher = dataclasses.replace(teacher, zoo_dir=str(cfg.workdir / finetune.ZOO))
  if cfg.distill_encoders:
    teacher = dataclasses.replace(teacher, encoders=cfg.distill_encoders)
  return dataclasses.replace(d, teacher=teacher)


def run(cfg: StudyConfig, *, safe_mode: bool = True, steps=STEPS) -> pd.DataFrame:
  """Runs (or resumes) the study's `steps` (default: all); returns the results table.

  With `distill.teacher.zoo_dir` set, stages 1 and 2 are skipped and that zoo is distilled
  (an external zoo and stage 2's are interchangeable). A shard (`--num_shards`) or work-queue
  worker (`--work_queue`) runs its share of the SHARDABLE steps; every step is resumable, and
  every run and teacher pass is claimed, so workers never train or label one twice.
  """
  steps = check_steps(steps)
  sharing = cfg.distill.num_shards > 1 or cfg.distill.work_queue
  if sharing and set(steps) - set(SHARDABLE):
    raise ValueError(
        f"--num_shards/--work_queue share the work of the steps {', '.join(SHARDABLE)}; the "
        f"steps {', '.join(sorted(set(steps) - set(SHARDABLE)))} run in one process: give "
        "--steps (e.g. --steps=distill), or let --launcher=slurm submit each step as its own "
        "array job")
  data = preflight(cfg)
  cfg.workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  if data is None:  # Not prepared yet: from the archive.
    if "prepare" not in steps:
      raise ValueError(f"no prepared data at {cfg.distill.data.data_dir}: run the prepare step "
                       "first (--steps=prepare, or the whole study)")
    data = prepare.prepare_study_data(cfg)
  with progress.tracking(_study_progress(cfg, steps)) as tracker:
    if tracker is not None:
      log.info("%s", tracker.describe())
    _run_steps(cfg, data, steps, safe_mode,
               tracker.step if tracker is not None else lambda _: contextlib.nullcontext())
  table = results.consolidate(cfg.workdir)
  if "compare" in steps:
    try:
      stats.write_comparisons(cfg.workdir, table)
    except (ValueError, FileNotFoundError) as e:  # Every run is safe on disk; say what is missing.
      log.warning("the study's comparisons were not written: %s", e)
  log.info("%s finished in %.0f s: %d results rows in %s",
           "study" if steps == STEPS else "steps " + ",".join(steps), time.perf_counter() - start,
           len(table), cfg.workdir / results.TABLE_PARQUET)
  return table


def _run_steps(cfg: StudyConfig, data, steps, safe_mode: bool, step) -> None:
  """The study's `steps` after `prepare`, each in a `step(name)` block (which counts its work)."""
  external_zoo = cfg.distill.teacher.zoo_dir is not None
  d = cfg.distill
  if not external_zoo and "pretrain" in steps:
    specs = cfg.selected_encoders()[d.shard_index::d.num_shards]
    log.info("stage 1: pretraining %s", ", ".join(e.name for e in specs if e.pretrained)
             or "nothing (no selected encoder is pretrained here)")
    with step("pretrain"):
      pretrain.pretrain_encoders(cfg, data, runtime.strategy_of(d), specs=specs)
  if not external_zoo and "finetune" in steps:
    encoders = pretrain.pretrain_encoders(cfg, data, runtime.strategy_of(d), train=False)
    log.info("stage 2: fine-tuning %d encoder(s) into %s", len(encoders), cfg.workdir / finetune.ZOO)
    # --only filters the student and baseline matrices; the teachers are chosen by --encoders,
    # --schemes, --split_percents and --finetune_seeds (an arch filter would drop them all).
    with step("finetune"):
      finetune.finetune_teachers(cfg, encoders, safe_mode=safe_mode, only="")
  if cfg.references and "reference" in steps:
    log.info("the classical reference: label spreading on each split and the students' pool")
    reference.run_references(data, cfg.workdir, schemes=d.data.schemes,
                             split_percents=d.data.split_percents, task=d.data.task,
                             config=cfg.reference, preset=d.preset, retrain_stale=d.retrain_stale)
  if "label" in steps:
    log.info("stage 3: labelling the data with the teachers")
    with step("label"):
      distill.label_teachers(distill_config(cfg), safe_mode=safe_mode)
  if "distill" in steps:
    log.info("stage 3: distillation")
    with step("distill"):
      distill.run(distill_config(cfg), safe_mode=safe_mode, require_match=False)
  if cfg.baseline and "baseline" in steps:
    log.info("supervised baselines")
    with step("baseline"):
      baseline.run(cfg.baseline_config(), safe_mode=safe_mode, require_match=False)


def _study_progress(cfg: StudyConfig, steps) -> progress.StudyProgress | None:
  """The study's progress over the units of work of `steps` this process will do (a shard's
  share of each); None for a work-queue worker, whose share is known only as it goes."""
  d = cfg.distill
  if d.work_queue:
    return None
  counts = work_counts(cfg)
  mine = cfg.selected_encoders()[d.shard_index::d.num_shards]
  counts["pretrain"] = 0 if d.teacher.zoo_dir is not None else sum(
      e.pretrained and not e.checkpoint for e in mine)
  share = {k: n if k == "pretrain" else -(-n // d.num_shards) for k, n in counts.items()}
  return progress.StudyProgress({k: n for k, n in share.items() if k in steps})


def _matrices(cfg: StudyConfig, teachers) -> tuple[list, list]:
  """The student runs over `teachers` and the baseline runs the study trains, before --only."""
  students = matrix.build_matrix(distill_config(cfg), teachers, "")
  baselines = (matrix.build_matrix(dataclasses.replace(cfg.baseline_config(), baseline=True), [], "")
               if cfg.baseline else [])
  return students, baselines


def work_counts(cfg: StudyConfig) -> dict[str, int]:
  """How much work each of the study's jobs has, before anything ran (the SLURM launcher sizes
  its arrays by it): encoders, teacher runs, teachers to label, student and baseline runs."""
  external = cfg.distill.teacher.zoo_dir is not None
  teachers = (teachers_lib.read_zoo(cfg.distill.teacher.zoo_dir) if external
              else predicted_teachers(cfg))
  students, baselines = (matrix.select(runs, only=cfg.distill.only, require_match=False)
                         for runs in _matrices(cfg, teachers))
  return {"pretrain": 0 if external else len(cfg.selected_encoders()),
          "finetune": 0 if external else len(teachers),
          "label": len({r.teacher.teacher_id for r in students if r.teacher is not None}),
          "distill": len(students), "baseline": len(baselines)}


def launch_slurm(cfg: StudyConfig, command, config, *, queue: bool = True, dry_run: bool = False,
                 wait: bool = False) -> int:
  """Submits the study to SLURM as a chain of array jobs (`cluster.slurm`), each task running
  `stages.study <command> --steps=<its step>`; returns the exit status (see `slurm.launch`).
  Every input is checked first; a dry run only warns about what would stop the chain."""
  from simclr_distill.cluster import slurm

  try:
    preflight(cfg)
  except ValueError as e:
    if not dry_run:
      raise
    log.warning("submitted as they are, these jobs would stop at once: %s", e)
  jobs = slurm.plan_study(command, work_counts(cfg), config, python=config.python, queue=queue)
  return slurm.launch(jobs, cfg.workdir, config, dry_run=dry_run, wait_for_end=wait)
