"""The supervised baselines: each student architecture trained on each label split alone.

  python -m stages.baseline --preset=demo --workdir=results/study_demo

Early-stopped on the split's validation list, scored on the scheme's test list, written as
`W/runs/<run_id>/` with stage=baseline rows (the same schema as the teachers and students).
`--baseline_inits=imagenet` starts from a frozen ImageNet backbone.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pandas as pd

from simclr_distill import config as config_lib, matrix, models, results
from simclr_distill.training import context, loop


def run(config: config_lib.DistillConfig, *, safe_mode: bool = True,
        require_match: bool = True) -> pd.DataFrame:
  """The supervised baselines: every student architecture (x init) trained on each labelled
  split alone, early-stopped on its validation split, scored on the test list.

  Raises:
    ValueError, FileNotFoundError: for architectures or ImageNet weights that cannot be used,
      before anything trains.
  """
  config = dataclasses.replace(config, baseline=True)
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  problems = baseline_problems(config)
  if problems:
    raise ValueError("the baselines cannot run; nothing was trained:\n  - " + "\n  - ".join(problems))
  ctx = context.make_context(config, safe_mode=safe_mode)
  for arch in config.student.archs:
    models.check_input_size(arch, ctx.data.image_shape)
  runs = matrix.select(matrix.build_matrix(config, [], ctx.data.fingerprint()), only=config.only,
                       shard_index=config.shard_index, num_shards=config.num_shards,
                       require_match=require_match)
  loop.train_runs(runs, ctx, "baseline")
  return results.consolidate(workdir)


def baseline_problems(config: config_lib.DistillConfig) -> list[str]:
  """What stops the baselines of `config` before they train: ImageNet weights missing for any
  architecture that needs them (all listed at once) and a monitor a baseline does not log."""
  problems = []
  if "imagenet" in config.student.baseline_inits:
    missing = []
    for arch in config.student.archs:
      try:
        models.imagenet_weights_path(arch, config.student.imagenet_dir)
      except FileNotFoundError:
        missing.append(f"{arch} ({models.imagenet_file(arch, config.student.imagenet_dir)})")
      except ValueError as e:
        problems.append(str(e))
    if missing:
      problems.append(
          f"no ImageNet weights for {len(missing)} architecture(s): {', '.join(missing)}; copy "
          "them there (keras.applications.<Arch>(weights='imagenet', include_top=False) "
          "downloads them on a machine with internet), point --imagenet_dir at them, or drop "
          "'imagenet' from --baseline_inits")
  if config.train.monitor in config_lib.DISTILL_MONITORS:
    problems.append(f"--monitor={config.train.monitor} is logged by distillation runs only; the "
                    "baselines have no teacher: use val_label_loss (or give the baselines their "
                    "own command)")
  return problems
