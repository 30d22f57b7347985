"""The configured data of a command: prepared records, or the digits demo prepared on first use."""

from __future__ import annotations

import pathlib

from simclr_distill import fileio
from simclr_distill.config import STUDY_SPLIT_PERCENTS, DistillConfig
from simclr_distill.data import digits, records


def open_data(config: DistillConfig) -> records.PreparedData:
  """Opens the configured data, preparing the digits demo on first use."""
  d = config.data
  data_dir = d.data_dir
  if d.source == "digits":
    percents = sorted(set(STUDY_SPLIT_PERCENTS) | set(d.split_percents))
    data_dir = pathlib.Path(d.data_dir or pathlib.Path(config.workdir) / "data")
    with fileio.file_lock(data_dir.parent / f".{data_dir.name}.lock"):  # Shards start together.
      digits.prepare_digits(data_dir, percents=percents)
  data = records.PreparedData.open(data_dir, bands=d.bands or None, image_size=d.image_size,
                                   standardize=d.standardize)
  for scheme in d.schemes:
    available = data.splits(scheme)
    for pct in d.split_percents:
      for kind in ("train", "val"):
        if f"{kind}_{pct}" not in available:
          raise ValueError(f"{data.root} has no {kind}_{pct} split for scheme {scheme}; prepare "
                           f"it or choose --split_percents from those present")
  return data
