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

import logging
import os
import pathlib
from typing import Mapping, Sequence

from simclr_distill.config import STUDY_SPLIT_PERCENTS
from simclr_distill.data import records, source
from simclr_distill.study_config import StudyConfig

log = logging.getLogger(__name__)

SOURCES = ("archive", "tfds")


def run(output_dir: str | os.PathLike, *, source_name: str = "archive",
        archive_dir: str | None = None, tfds_data_dir: str | None = None,
        tfds_split: str = "train", examples_per_shard: int = 1000, workers: int | None = None,
        compute_stats: bool = False, split_dirs: Mapping[str, str] | None = None,
        split_seed: int = 0, percents: Sequence[int] = STUDY_SPLIT_PERCENTS
        ) -> records.PreparedData:
  """Prepares `output_dir` from an archive (one folder per patch) or TFDS's bigearthnet/all.

  Args:
    workers: conversion processes (None: the converter's default).
    split_dirs: scheme -> a directory of the study's split lists to import (train_1 ...
      test); schemes not given get splits generated with the study's procedure (`split_seed`,
      `percents`).

  Raises:
    ValueError: for an archive source without `archive_dir`, or an unknown source.
  """
  from simclr_distill.data import bigearthnet

  kwargs = dict(compute_stats=compute_stats, split_dirs=dict(split_dirs or {}), seed=split_seed,
                percents=list(percents))
  if source_name == "archive":
    if not archive_dir:
      raise ValueError("--source=archive needs --archive_dir (one folder per patch)")
    return bigearthnet.prepare_archive(archive_dir, output_dir,
                                       examples_per_shard=examples_per_shard,
                                       workers=workers, **kwargs)
  if source_name == "tfds":
    from simclr_distill.data import tfds_source

    patches = tfds_source.iter_tfds_patches(split=tfds_split, data_dir=tfds_data_dir,
                                            bands=bigearthnet.BANDS)
    return bigearthnet.prepare_from_patches(patches, output_dir, source="tfds:bigearthnet/all",
                                            examples_per_shard=examples_per_shard, **kwargs)
  raise ValueError(f"unknown source {source_name!r}; known: {', '.join(SOURCES)}")


def summary(data: records.PreparedData, output_dir) -> list[str]:
  """What a preparation made: the patch count, rejects and each scheme's splits."""
  m = data.manifest
  lines = [f"prepared {m['num_examples']} patches into {output_dir} "
           f"({m['num_rejected']} rejected, see rejects.csv)"]
  for scheme, report in m["splits"].items():
    sizes = ", ".join(f"{k}={v}" for k, v in sorted(report["sizes"].items()))
    lines.append(f"  {scheme}: positive rate {report['positive_rate']:.3%}; splits "
                 f"{report['origin']}" + (f": {sizes}" if sizes else ""))
  return lines


def prepare_study_data(cfg: StudyConfig) -> records.PreparedData:
  """The study's data: the digits demo, or BigEarthNet prepared from `cfg.archive_dir` when
  `--data_dir` is not prepared yet.

  Raises:
    FileNotFoundError: for records data that is neither prepared nor preparable.
  """
  d = cfg.distill.data
  if d.source == "records" and not (pathlib.Path(d.data_dir) / records.MANIFEST).is_file():
    if not cfg.archive_dir:
      raise FileNotFoundError(
          f"no prepared data at {d.data_dir}; give --archive_dir (a BigEarthNet-S2 archive) to "
          "prepare it here, or run stages.prepare first")
    log.info("preparing %s from %s", d.data_dir, cfg.archive_dir)
    run(d.data_dir, archive_dir=cfg.archive_dir, split_dirs=dict(cfg.split_dirs))
  return source.open_data(cfg.distill)
