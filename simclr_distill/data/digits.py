"""The embedded demo data: scikit-learn's digits framed as the study's rare-positive task.

1,797 real 8x8 handwritten digits ship with scikit-learn, so the whole pipeline runs offline.
Like "Permanently irrigated land" in BigEarthNet, one digit is the rare positive class of the
"basic" labelling scheme; the "expanded" scheme adds related digits, as the study added rice
fields, vineyards, orchards and olive groves. Splits follow the study's procedure
(`splits.make_balanced_splits`). Pixels are scaled to [0, 1] (x / 16); each image is 8x8x1.
"""

from __future__ import annotations

import datetime
import pathlib

import numpy as np

from simclr_distill import fileio
from simclr_distill.config import STUDY_SPLIT_PERCENTS
from simclr_distill.data import records
from simclr_distill.data import splits as splits_lib

# Positive digits per labelling scheme.
SCHEMES = {"basic": (8,), "expanded": (8, 3, 5, 9)}
IMAGE_SHAPE = (8, 8, 1)


def load_digits_arrays() -> tuple[list[str], np.ndarray, np.ndarray]:
  """Returns (ids, images [N,8,8,1] float32 in [0,1], digit classes [N])."""
  from sklearn.datasets import load_digits  # Imported here: only the demo needs scikit-learn.

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  ids = [f"digits-{i:04d}" for i in range(len(images))]
  return ids, images, digits.target.astype(np.int64)


def scheme_labels(classes: np.ndarray, scheme: str) -> np.ndarray:
  return np.isin(classes, SCHEMES[scheme]).astype(np.int64)


def prepare_digits(out_dir: str | pathlib.Path, *, seed: int = 0, num_shards: int = 4,
                   percents=STUDY_SPLIT_PERCENTS, min_per_class: int = 2) -> records.PreparedData:
  """Writes the digits demo as a prepared data directory (skipped if already complete).

  Args:
    out_dir: destination directory.
    seed: seeds the split generation.
    num_shards: TFRecord shards (several, so sharded reading and labelling are exercised).
    percents: label-split sizes.
    min_per_class: smallest class count in any split subset (the 1% split of a pool of a few
      hundred examples would otherwise be empty).

  Returns:
    The opened data directory.
  """
  out_dir = pathlib.Path(out_dir)
  if (out_dir / records.MANIFEST).is_file():
    return records.PreparedData.open(out_dir)
  ids, images, classes = load_digits_arrays()
  labels = {f"label_{s}": scheme_labels(classes, s) for s in SCHEMES}
  labels["class"] = classes
  split_sizes = {}
  for scheme in SCHEMES:
    lists = splits_lib.make_balanced_splits(
        ids, labels[f"label_{scheme}"], percents=percents, seed=seed, min_per_class=min_per_class)
    splits_lib.write_split_lists(out_dir / "splits" / scheme, lists)
    split_sizes[scheme] = {name: len(v) for name, v in lists.items()}
  shards = [records.shard_name(i, num_shards) for i in range(num_shards)]
  order = []
  for i, shard in enumerate(shards):
    rows = range(i, len(ids), num_shards)
    order.extend(rows)
    records.write_shard(out_dir / shard, (
        records.encode_example(ids[r], images[r], {k: v[r] for k, v in labels.items()})
        for r in rows))
  fileio.write_text(out_dir / "ids.txt", "".join(f"{ids[r]}\n" for r in order))
  # The manifest goes last: its presence means the directory is complete.
  fileio.write_json(out_dir / records.MANIFEST, {
      "format": records.FORMAT,
      "name": "digits",
      "source": "sklearn.datasets.load_digits",
      "image_shape": list(IMAGE_SHAPE),
      "band_names": ["gray"],
      "transform": "pixel / 16",
      "label_keys": sorted(labels),
      "num_classes": 10,
      "num_examples": len(ids),
      "schemes": sorted(SCHEMES),
      "positive_classes": {s: list(v) for s, v in SCHEMES.items()},
      "split_sizes": split_sizes,
      "split_seed": seed,
      "shards": shards,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  })
  return records.PreparedData.open(out_dir)
