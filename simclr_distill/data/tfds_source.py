"""BigEarthNet-S2 patches read from an already prepared TFDS `bigearthnet/all` dataset.

An alternative source to the raw archive for users who have TFDS's `bigearthnet` built
(`tfds build bigearthnet/all`, which downloads the same 66 GB archive and needs Apache Beam).
`iter_tfds_patches` streams `(patch_name, image, multi_hot)` in the form the archive reader
produces, so the same conversion into prepared records can consume either source.

What TFDS stores for config `all` (tensorflow_datasets/datasets/bigearthnet):

- No stacked image: each of the 12 bands is its own float32 feature (`B01` ... `B8A`) at its
  native resolution, 120x120 (10 m), 60x60 (20 m) or 20x20 (60 m). The values are the archive's
  uint16 digital numbers cast to float32 (exact integers), not rescaled. TFDS resizes nothing;
  the lower-resolution bands are upsampled here exactly as the archive reader does
  (`bigearthnet.to_uint16`).
- `filename` is the patch name, i.e. the archive's patch folder name
  (e.g. `S2A_MSIL2A_20170613T101031_0_45`).
- `labels` indexes a ClassLabel whose 43 names are sorted alphabetically, not in BigEarthNet's
  standard order (`bigearthnet.CLASSES`), so indices are mapped by class name.
- One split, `train`, holding every patch of the archive.

Config `rgb` holds only an 8-bit JPEG rendering of B04, B03, B02 (reflectance / 2000 * 255,
clipped), so it cannot stand in for the bands.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_distill.data.bigearthnet import CLASSES, to_uint16

# The band features of TFDS bigearthnet/all, in the order its builder declares them
# (alphabetical, hence B8A last). B10 does not exist: BigEarthNet is Level-2A, which drops it.
TFDS_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A")

TFDS_NAME = "bigearthnet/all"


def _check_bands(bands: Sequence[str]) -> tuple[str, ...]:
  if isinstance(bands, str):
    raise ValueError(f"bands must be a sequence of band names, e.g. ('B04', 'B03', 'B02'), "
                     f"not the string {bands!r}")
  bands = tuple(bands)
  if not bands:
    raise ValueError(f"bands is empty; choose from {', '.join(TFDS_BANDS)}")
  unknown = [b for b in bands if b not in TFDS_BANDS]
  if unknown:
    raise ValueError(f"unknown band(s) {', '.join(map(repr, unknown))}; TFDS bigearthnet/all "
                     f"has {', '.join(TFDS_BANDS)}")
  repeated = sorted({b for b in bands if bands.count(b) > 1})
  if repeated:
    raise ValueError(f"band(s) {', '.join(repeated)} requested more than once")
  return bands


def _class_lookup(tfds_names: Sequence[str], classes: Sequence[str]) -> np.ndarray:
  """For each TFDS label index, the index of the same class name in `classes`."""
  missing = sorted(set(tfds_names) - set(classes))
  extra = sorted(set(classes) - set(tfds_names))
  if missing or extra or len(set(classes)) != len(classes):
    raise ValueError(f"classes must be the {len(tfds_names)} BigEarthNet class names, each once; "
                     f"missing {missing}, not in TFDS {extra}")
  index = {name: i for i, name in enumerate(classes)}
  return np.array([index[name] for name in tfds_names], np.int64)


def _not_prepared_error(data_dir: str | None, root: str, bands: Sequence[str]) -> Exception:
  if tfds.builder("bigearthnet/rgb", data_dir=data_dir).is_prepared():
    return ValueError(
        f"only TFDS bigearthnet/rgb is prepared in {root}; it holds a single 8-bit RGB rendering "
        f"of B04, B03, B02, not the bands, so the requested bands {', '.join(bands)} are missing. "
        "Prepare the `all` config (`tfds build bigearthnet/all`) or convert the BigEarthNet-S2 "
        "archive directly instead")
  return FileNotFoundError(
      f"TFDS bigearthnet/all is not prepared in {root}. Prepare it with TFDS "
      f"(`tfds build bigearthnet/all --data_dir={root}`, or "
      f"tfds.builder('bigearthnet/all', data_dir=...).download_and_prepare(); it downloads the "
      "66 GB archive and needs apache-beam), or convert the BigEarthNet-S2 archive directly "
      "instead")


def iter_tfds_patches(*, split: str = "train", data_dir: str | None = None,
                      bands: Sequence[str],
                      classes: Sequence[str] = CLASSES
                      ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  """Streams BigEarthNet patches from a prepared TFDS `bigearthnet/all` dataset.

  Examples are read one at a time, in TFDS's stored order (deterministic; not sorted by
  name). Bands that TFDS stores below 120x120 (the 20 m bands at 60x60, the 60 m bands B01 and
  B09 at 20x20) are bicubic-upsampled here with `bigearthnet.to_uint16`, as the archive conversion
  does; every band is then rounded half to even and clipped to [0, 65535]. The 10 m bands are
  exact: TFDS stores the archive's digital numbers as float32 integers.

  Args:
    split: a TFDS split spec; TFDS has only `train` (the whole archive), so use slices such as
      `train[:1%]` for subsets.
    data_dir: the TFDS data directory; None uses TFDS's default (`TFDS_DATA_DIR` or
      ~/tensorflow_datasets).
    bands: band names from `TFDS_BANDS`; the image channels follow this order.
    classes: the 43 class names in the order of the multi-hot vector. The default is
      BigEarthNet's standard order; TFDS's own label indices (alphabetical) are remapped by name.

  Returns:
    An iterator of `(patch_name, image, multi_hot)`: the patch name (str), a uint16 array
    [120, 120, len(bands)] and an int64 vector [len(classes)] with 1 for each label.

  Raises:
    ValueError: for an unknown, repeated or empty band list, `classes` that are not the 43
      class names, or when only the `rgb` config is prepared (the message names the bands).
    FileNotFoundError: if bigearthnet/all is not prepared in `data_dir`.
  """
  bands = _check_bands(bands)
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  features = builder.info.features
  lookup = _class_lookup(features["labels"].feature.names, classes)
  try:
    ds = builder.as_dataset(split=split, as_supervised=False, shuffle_files=False)
  except AssertionError as e:  # TFDS's way of saying the data is not there.
    if "could not find data" not in str(e):
      raise
    raise _not_prepared_error(data_dir, builder.data_dir_root, bands) from None
  keep = bands + ("filename", "labels")
  # Drop the unused features before they are converted to NumPy, and read ahead while the
  # caller converts the previous example.
  ds = ds.map(lambda ex: {k: ex[k] for k in keep}).prefetch(tf.data.AUTOTUNE)
  return _patches(ds, bands, lookup, len(classes))


def _patches(ds: tf.data.Dataset, bands: tuple[str, ...], lookup: np.ndarray,
             num_classes: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  for ex in tfds.as_numpy(ds):
    image = np.stack([to_uint16(ex[b]) for b in bands], axis=-1)
    multi_hot = np.zeros(num_classes, np.int64)
    multi_hot[lookup[ex["labels"]]] = 1
    yield ex["filename"].decode(), image, multi_hot
