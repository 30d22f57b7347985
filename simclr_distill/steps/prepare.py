"""Data preparation: a BigEarthNet-S2 archive (or TFDS's bigearthnet/all) -> prepared records.

  python -m stages.prepare --archive_dir=BigEarthNet-v1.0 --output_dir=data/bigearthnet \\
      --basic_splits=balanced_splits --expanded_splits=balanced_splits_expanded

Writes D/records/part-*.tfrecord (10 bands at 120x120, uint16), D/ids.txt, D/rejects.csv
(patch, reason), D/splits/{basic,expanded}/{train_P,val_P,test} and D/dataset.json (shapes,
band statistics, split sizes and positive rates). Interrupted runs resume at the first
unfinished shard; rerunning a finished one rewrites only the lists and the manifest. The
digits demo needs no preparation: `data.source.open_data` prepares it on first use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib

from simclr_distill.data import records, source
from simclr_distill.study_config import PrepareConfig, StudyConfig

log = logging.getLogger(__name__)


def run(cfg: PrepareConfig) -> records.PreparedData:
  """Prepares `cfg.output_dir` from an archive (one folder per patch) or TFDS's
  bigearthnet/all (schemes without imported split lists, `cfg.split_dirs`, get splits
  generated with the study's procedure), or from Sentinel-2 scenes (unlabelled patches).

  Raises:
    ValueError: for no output directory, or a source without its directory.
  """
  from simclr_distill.data import bigearthnet

  if not cfg.output_dir:
    raise ValueError("give --output_dir: the prepared data directory to write")
  kwargs = dict(compute_stats=cfg.compute_stats, split_dirs=dict(cfg.split_dirs),
                seed=cfg.split_seed, percents=list(cfg.split_percents))
  if cfg.source == "scenes":
    from simclr_distill.data import scenes

    if not cfg.scene_dir:
      raise ValueError("--source=scenes needs --scene_dir (multi-band scene files, or one "
                       "folder per scene with a file per band)")
    return scenes.prepare_scenes(cfg.scene_dir, cfg.output_dir, cfg.scenes,
                                 examples_per_shard=cfg.examples_per_shard,
                                 workers=cfg.workers or os.cpu_count(),
                                 compute_stats=cfg.compute_stats)
  if cfg.source == "archive":
    if not cfg.archive_dir:
      raise ValueError("--source=archive needs --archive_dir (one folder per patch)")
    return bigearthnet.prepare_archive(cfg.archive_dir, cfg.output_dir,
                                       examples_per_shard=cfg.examples_per_shard,
                                       workers=cfg.workers or os.cpu_count(), **kwargs)
  from simclr_distill.data import tfds_source

  patches = tfds_source.iter_tfds_patches(split=cfg.tfds_split, data_dir=cfg.tfds_data_dir,
                                          bands=bigearthnet.BANDS)
  return bigearthnet.prepare_from_patches(patches, cfg.output_dir, source="tfds:bigearthnet/all",
                                          examples_per_shard=cfg.examples_per_shard, **kwargs)


def summary(data: records.PreparedData, output_dir) -> list[str]:
  """What a preparation made: the patch count, rejects and each scheme's splits."""
  m = data.manifest
  if "dropped" in m:  # Scenes: unlabelled patches for stage 1.
    grid = m["grid"]
    lines = [f"prepared {m['num_examples']} unlabelled {grid['patch_size']}x{grid['patch_size']} "
             f"patches (stride {grid['stride']}) into {output_dir}: dropped "
             f"{m['dropped']['nodata']} mostly no-data and {m['dropped']['cloud']} cloudy; "
             f"{m['num_rejected']} scene(s) rejected (see rejects.csv)"]
    for scene in m["scenes"]:
      if "patches" in scene:
        lines.append(f"  {scene['name']}: {scene['size'][0]}x{scene['size'][1]}, "
                     f"{scene['layout']}, cloud mask {scene['cloud_mask'] or 'none'}: "
                     f"{scene['patches']} of {scene['positions']} patches kept")
      if "rejected" in scene:
        lines.append(f"  {scene['name']}: REJECTED: {scene['rejected']}")
    lines.append(f"  pretrain on them: --encoder=NAME:data_dir={output_dir}")
    return lines
  lines = [f"prepared {m['num_examples']} patches into {output_dir} "
           f"({m['num_rejected']} rejected, see rejects.csv)"]
  for scheme, report in m["splits"].items():
    sizes = ", ".join(f"{k}={v}" for k, v in sorted(report["sizes"].items()))
    lines.append(f"  {scheme}: positive rate {report['positive_rate']:.3%}; splits "
                 f"{report['origin']}" + (f": {sizes}" if sizes else ""))
  return lines


def prepare_study_data(cfg: StudyConfig) -> records.PreparedData:
  """The study's data: the digits demo, or BigEarthNet prepared from `cfg.prepare` when
  `--data_dir` is not prepared yet.

  Raises:
    FileNotFoundError: for records data that is neither prepared nor preparable.
  """
  d = cfg.distill.data
  if d.source == "records" and not (pathlib.Path(d.data_dir) / records.MANIFEST).is_file():
    if not cfg.prepare.archive_dir:
      raise FileNotFoundError(
          f"no prepared data at {d.data_dir}; give --archive_dir (a BigEarthNet-S2 archive) to "
          "prepare it here, or run stages.prepare first")
    log.info("preparing %s from %s", d.data_dir, cfg.prepare.archive_dir)
    run(dataclasses.replace(cfg.prepare, output_dir=d.data_dir, source="archive"))
  return source.open_data(cfg.distill)
