"""The prepared-data format every stage reads: sharded TFRecords, split lists, a manifest.

Layout of a prepared data directory:

  dataset.json               manifest: image shape, label keys, shards, counts, provenance
  ids.txt                    every example id, one per line (the order of the shards)
  records/part-NNNNN-of-MMMMM.tfrecord
  splits/<scheme>/{train_P, val_P, test}   one example id per line (the study's format)

Each record holds `id` (bytes), `image` (raw little-endian bytes of the manifest's
`image_dtype`, float32 or uint16, row-major HxWxC), one int64 per label key (e.g.
`label_basic`, `label_expanded`, `class`) and optionally a multi-hot int64 vector (`labels`,
the 43 CORINE classes of BigEarthNet). The reader can standardise each band with the
manifest's `band_mean` / `band_std`, keep a subset of bands and resize.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from simclr_distill import fileio
from simclr_distill.data import splits as splits_lib
# The format's constants and its writer need no TensorFlow (conversion workers use them).
from simclr_distill.data.tfrecord import (  # noqa: F401  (re-exported)
    FORMAT, MANIFEST, encode_example, shard_name, write_shard)

RGB = ("B04", "B03", "B02")


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A prepared data directory, opened and checked, with its read options.

  Use `PreparedData.open(path, ...)`; the constructor does no I/O.
  """

  root: pathlib.Path
  manifest: dict
  bands: tuple[str, ...] | None = None
  image_size: int | None = None
  standardize: bool = True

  @classmethod
  def open(cls, data_dir: str | pathlib.Path, *, bands: Sequence[str] | None = None,
           image_size: int | None = None, standardize: bool = True) -> "PreparedData":
    """Opens a data directory written by `stages.prepare` or the digits demo.

    Args:
      data_dir: the directory.
      bands: keep these bands, by name (e.g. B04,B03,B02), or "rgb"; None keeps all.
      image_size: resize images to image_size x image_size (bilinear); None keeps them.
      standardize: subtract each band's mean and divide by its std (manifest statistics).

    Raises:
      FileNotFoundError: if the directory or its manifest is missing.
      ValueError: if the manifest is of another format or lists missing shards, or a band is
        unknown.
    """
    root = pathlib.Path(data_dir)
    path = root / MANIFEST
    if not path.is_file():
      raise FileNotFoundError(
          f"{root} is not a prepared data directory (no {MANIFEST}); write one with "
          "`python -m stages.prepare` or omit --data_dir to use the embedded digits demo")
    remedy = (f"the manifest of {root} is damaged: rerun the `python -m stages.prepare` "
              f"command that wrote it (it keeps the converted shards and writes the manifest "
              f"again), or, for the digits demo, delete {root} and rerun")
    manifest = fileio.read_json(path, remedy=remedy)
    if not isinstance(manifest, dict):
      raise ValueError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest; {remedy}")
    if manifest.get("format") != FORMAT:
      raise ValueError(f"{path} has format {manifest.get('format')!r}; this code reads {FORMAT!r}")
    lacking = [k for k in ("shards", "image_shape", "label_keys", "schemes") if k not in manifest]
    if lacking:
      raise ValueError(f"{path} lacks {', '.join(lacking)}; {remedy}")
    missing = [s for s in manifest["shards"] if not (root / s).is_file()]
    if missing:
      raise ValueError(f"{root} lists {len(missing)} missing shard(s), e.g. {missing[0]}; "
                       "re-run the preparation to finish it")
    names = list(manifest.get("band_names", []))
    if bands is not None:
      bands = tuple(RGB if tuple(bands) in (("rgb",), ("RGB",)) else bands)
      unknown = [b for b in bands if b not in names]
      if unknown:
        raise ValueError(f"{root} has no band(s) {', '.join(unknown)}; it has {', '.join(names)}")
    if image_size is not None and image_size < 1:
      raise ValueError(f"image_size={image_size} must be >= 1")
    return cls(root=root, manifest=manifest, bands=bands, image_size=image_size,
               standardize=standardize)

  @property
  def stored_shape(self) -> tuple[int, int, int]:
    return tuple(self.manifest["image_shape"])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """The shape of the images this reader yields (after band selection and resizing)."""
    h, w, c = self.stored_shape
    if self.image_size:
      h = w = self.image_size
    return (h, w, len(self.bands) if self.bands else c)

  @property
  def num_classes(self) -> int:
    return int(self.manifest.get("num_classes", 2))

  @property
  def schemes(self) -> list[str]:
    return list(self.manifest["schemes"])

  @property
  def shards(self) -> list[str]:
    return list(self.manifest["shards"])

  def fingerprint(self) -> str:
    """Identifies the data for run ids: name, example count and split seed."""
    m = self.manifest
    options = f":bands={','.join(self.bands)}" if self.bands else ""
    options += f":size={self.image_size}" if self.image_size else ""
    options += "" if self.standardize else ":raw"
    return f"{m['name']}:{m['num_examples']}:{m.get('split_seed', '')}{options}"

  def corrupt_shards(self) -> dict[str, str]:
    """Reads every shard through (checking each record's CRC); returns {shard: error} for the
    corrupt or truncated ones."""
    bad = {}
    for shard in self.shards:
      try:
        for _ in tf.data.TFRecordDataset(str(self.root / shard)).batch(4096):
          pass
      except tf.errors.DataLossError as e:
        bad[shard] = e.message.split("}}")[-1].split("[Op:")[0].strip()
    return bad

  @contextlib.contextmanager
  def reading(self):
    """Turns TensorFlow's error for a corrupt or truncated record, raised wherever the data is
    read (training, evaluation, labelling), into a ValueError naming the bad shard(s).

    Raises:
      ValueError: naming each bad shard and how to rebuild it.
    """
    try:
      yield
    except tf.errors.InvalidArgumentError as e:
      if "NON-FINITE INPUT" not in e.message:
        raise
      found = e.message.split("NON-FINITE INPUT")[1].split("\n")[0]
      raise ValueError(
          f"{self.root} holds NaN/inf pixels{found.split(':', 1)[0].replace('pixels', '')}: "
          f"{found.split('example(s)', 1)[-1].strip()}. Re-prepare them from their sources, or "
          "leave them out of the split lists") from None
    except tf.errors.DataLossError as e:
      bad = self.corrupt_shards()
      listed = "; ".join(f"{s} ({why})" for s, why in bad.items()) or e.message
      raise ValueError(
          f"{self.root} has corrupt or truncated TFRecord shard(s): {listed}. Delete them and "
          "rerun the preparation (`python -m stages.prepare`, which keeps finished shards), or "
          "restore them from a copy") from None

  def ids(self) -> list[str]:
    return (self.root / "ids.txt").read_text().splitlines()

  def splits(self, scheme: str) -> dict[str, list[str]]:
    """The split lists of one labelling scheme.

    Raises:
      ValueError: if the scheme was not prepared.
    """
    if scheme not in self.schemes and not self.manifest.get("label_keys"):
      raise ValueError(
          f"{self.root} holds unlabelled patches ({self.manifest.get('name')}, for stage 1's "
          f"pretraining): it has no labelling scheme {scheme!r}. Give labelled data (BigEarthNet) "
          f"as --data_dir, and this directory as an encoder's data "
          f"(--encoder=NAME:data_dir={self.root})")
    if scheme not in self.schemes:
      raise ValueError(f"{self.root} has no labelling scheme {scheme!r}; it has "
                       f"{', '.join(self.schemes) or 'none'}")
    directory = self.root / "splits" / scheme
    lists = splits_lib.read_split_lists(directory)
    self._check_listed_ids(directory, lists)
    return lists

  def _check_listed_ids(self, directory: pathlib.Path, lists: Mapping[str, Sequence[str]]) -> None:
    """Refuses split lists naming ids the records do not hold (an edited list, or lists of
    other data): they would otherwise fail deep in TensorFlow, naming no id. Checked once per
    process for each state of the files (a stat per call after that).

    Raises:
      ValueError: naming the list, how many ids are absent, a few of them, and what to do.
    """
    ids_path = self.root / "ids.txt"
    if not ids_path.is_file():
      return  # Nothing to check against; reading the records will say what is missing.
    key = (str(directory.resolve()), _stamp(ids_path),
           tuple((name, _stamp(directory / name)) for name in sorted(lists)))
    if key in _CHECKED_LISTS:
      return
    known = set(self.ids())
    for name, listed in sorted(lists.items()):
      absent = [i for i in listed if i not in known]
      if absent:
        raise ValueError(
            f"{directory / name} names {len(absent)} example id(s) absent from the records of "
            f"{self.root} (e.g. {', '.join(absent[:3])}); every listed id must be in {ids_path}. "
            "Fix the list, or prepare the data again (`python -m stages.prepare` writes the "
            f"lists from the records; for the digits demo, delete {self.root} and rerun), or "
            "give the --data_dir these lists were made for")
    _CHECKED_LISTS.add(key)

  def label_key(self, scheme: str, task: str) -> str:
    """The record field holding the target: `label_<scheme>` (binary) or `class`."""
    key = "class" if task == "multiclass" else f"label_{scheme}"
    if key not in self.manifest["label_keys"]:
      raise ValueError(f"{self.root} has no {key!r} labels (task={task!r}); it has "
                       f"{', '.join(self.manifest['label_keys'])}")
    return key

  def _parse_batch(self, serialized, labels: bool | Sequence[str] = True):
    """Parses a vector of serialised records at once (one vectorised op per field: a
    per-record `map` costs tens of microseconds of tf.data overhead per example)."""
    spec = {"id": tf.io.FixedLenFeature([], tf.string),
            "image": tf.io.FixedLenFeature([], tf.string)}
    wanted = set(labels) if not isinstance(labels, bool) else None
    for key in self.manifest["label_keys"] if labels else ():
      if wanted is None or key in wanted:
        spec[key] = tf.io.FixedLenFeature([], tf.int64)
    multi_hot = self.manifest.get("multi_hot")
    if multi_hot and labels and (wanted is None or multi_hot["key"] in wanted):
      spec[multi_hot["key"]] = tf.io.FixedLenFeature([multi_hot["size"]], tf.int64)
    ex = tf.io.parse_example(serialized, spec)
    dtype = tf.dtypes.as_dtype(self.manifest.get("image_dtype", "float32"))
    image = tf.cast(tf.reshape(tf.io.decode_raw(ex["image"], dtype), (-1, *self.stored_shape)),
                    tf.float32)
    if self.standardize and "band_mean" in self.manifest:
      image = (image - self.manifest["band_mean"]) / self.manifest["band_std"]
    if self.bands:
      names = self.manifest["band_names"]
      image = tf.gather(image, [names.index(b) for b in self.bands], axis=-1)
    if self.image_size:
      image = tf.image.resize(image, (self.image_size, self.image_size), method="bilinear")
    ex["image"] = image
    return ex

  def batches(self, batch_size: int, ids: Sequence[str] | None = None, *,
              shards: Sequence[str] | None = None, deterministic: bool = True,
              by_shard: bool = False, labels: bool | Sequence[str] = True) -> tf.data.Dataset:
    """Streams parsed batches {"id", "image", <label keys>} of up to `batch_size` examples
    (never empty, except with `by_shard`, where a shard's batch may hold none of `ids`).

    Args:
      batch_size: records parsed together (a batch is smaller where `ids` drops records, and
        at the end of the data, or of a shard with `by_shard`).
      ids: keep only these example ids (a hash-table lookup per record, so streaming stays
        O(1) memory in the data size).
      shards: read only these shard paths (relative, from the manifest); default all.
      deterministic: keep a fixed interleave order (needed for seeded, repeatable runs).
      by_shard: read the shards one after the other, in the order given; no batch spans two
        shards and each carries "shard", the index of its shard in `shards` (for per-shard
        outputs from one pipeline, as labelling writes).
      labels: which label fields to parse besides "id" and "image": all (True), none (False)
        or the named ones (less to parse, and less to cache and shuffle downstream).
    """
    files = [str(self.root / s) for s in (shards if shards is not None else self.shards)]
    if by_shard:
      ds = tf.data.Dataset.from_tensor_slices((files, tf.range(len(files), dtype=tf.int64))).flat_map(
          lambda f, i: tf.data.TFRecordDataset(f).batch(batch_size).map(lambda s: (i, s)))
    else:
      ds = tf.data.Dataset.from_tensor_slices(files).interleave(
          tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic).batch(batch_size)
    table = id_table(ids, np.ones(len(ids), np.int64), default=0) if ids is not None else None

    def parse(*element):  # (shard index, records) by shard, else records
      shard, serialized = element if by_shard else (None, element[0])
      if table is not None:  # Ids first: the records dropped are never decoded.
        example_ids = tf.io.parse_example(serialized, {"id": tf.io.FixedLenFeature([], tf.string)})
        serialized = tf.boolean_mask(serialized, table.lookup(example_ids["id"]) > 0)
      ex = self._parse_batch(serialized, labels)
      if by_shard:
        ex["shard"] = shard
      return ex

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if table is not None and not by_shard:
      # A run of records holding none of `ids` parses to an empty batch; a model given one
      # fails (oneDNN: "input depth must be evenly divisible by filter depth"), so drop them.
      ds = ds.filter(lambda ex: tf.shape(ex["id"])[0] > 0)
    return ds

  def examples(self, ids: Sequence[str] | None = None, *, shards: Sequence[str] | None = None,
               deterministic: bool = True, labels: bool | Sequence[str] = True) -> tf.data.Dataset:
    """Streams examples as dicts {"id", "image", <label keys>}: `batches` parsed 128 at a
    time, then split into examples. Arguments as for `batches`."""
    return self.batches(128, ids, shards=shards, deterministic=deterministic,
                        labels=labels).unbatch()


_CHECKED_LISTS: set = set()  # Split directories found consistent with their ids.txt (by stamp).


def _stamp(path: pathlib.Path) -> tuple[int, int]:
  stat = path.stat()
  return stat.st_mtime_ns, stat.st_size


def id_table(ids: Sequence[str], values: np.ndarray, default: int) -> tf.lookup.StaticHashTable:
  """A string-id -> int64 lookup table (membership tests and row indices of cached logits)."""
  if len(ids) == 0:  # TF tables cannot be empty; a key no example has stands in.
    ids, values = ["\0"], np.array([default], np.int64)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(list(ids), tf.string), tf.constant(values, tf.int64)),
      default_value=default)
