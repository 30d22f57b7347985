"""BigEarthNet-S2 archive -> prepared records: patch reading, label schemes, parallel conversion.

The archive is one folder per patch: 12 GeoTIFF bands (`<patch>_B01.tif` ...) and
`<patch>_labels_metadata.json` (CORINE class names). The study's input is 10 bands at 120x120:
B04, B03, B02, B08 (10 m, 120x120) and B05, B06, B07, B8A, B11, B12 (20 m, 60x60, bicubic
upsampled). B01 and B09 (60 m) are dropped. Images are stored as uint16 reflectances (the
bicubic values rounded to the nearest integer and clipped to [0, 65535]); the reader
standardises each band with the manifest's mean and std (BigEarthNet's published statistics,
or ones computed in the conversion pass with `compute_stats`).

Conversion streams: patches are assigned to shards by sorted name, each shard is converted by
a worker process and written atomically together with a small metadata file (ids, labels,
rejects, band sums), so memory stays bounded by one shard per worker and an interrupted run
resumes at the first unfinished shard, producing byte-identical output.
"""

from __future__ import annotations

import collections
import datetime
import functools
import itertools
import json
import logging
import math
import multiprocessing
import os
import pathlib
import time
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np

from simclr_distill import fileio
from simclr_distill.config import STUDY_SPLIT_PERCENTS
from simclr_distill.data import splits as splits_lib
from simclr_distill.data import tfrecord

if TYPE_CHECKING:
  from simclr_distill.data import records

log = logging.getLogger(__name__)

BANDS_10M = ("B04", "B03", "B02", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
BANDS = BANDS_10M + BANDS_20M
SIZE = 120

# The 43 CORINE Land Cover classes of BigEarthNet, in their standard index order.
CLASSES = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports",
    "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
    "Sport and leisure facilities", "Non-irrigated arable land", "Permanently irrigated land",
    "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves", "Pastures",
    "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland", "Moors and heathland", "Sclerophyllous vegetation",
    "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock",
    "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons",
    "Estuaries", "Sea and ocean",
)
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}
# The study's binary target "irrigated": basic = Permanently irrigated land; expanded adds
# Rice fields, Vineyards, Fruit trees and berry plantations, Olive groves.
SCHEMES = {"basic": (12,), "expanded": (12, 13, 14, 15, 16)}

# BigEarthNet's published per-band statistics (uint16 reflectance), from the BigEarthNet
# models repository (bigearthnet-models-tf, BigEarthNet.py).
PUBLISHED_MEAN = {"B02": 429.9430203, "B03": 614.21682446, "B04": 590.23569706,
                  "B05": 950.68368468, "B06": 1792.46290469, "B07": 2075.46795189,
                  "B08": 2218.94553375, "B8A": 2266.46036911, "B11": 1594.42694882,
                  "B12": 1009.32729131}
PUBLISHED_STD = {"B02": 572.41639287, "B03": 582.87945694, "B04": 675.88746967,
                 "B05": 729.89827633, "B06": 1096.01480586, "B07": 1273.45393088,
                 "B08": 1365.45589904, "B8A": 1356.13789355, "B11": 1079.19066363,
                 "B12": 818.86747235}


class PatchError(ValueError):
  """A patch that cannot be converted; the message is the reject reason."""


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
  t = np.abs(t)
  return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                  np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


@functools.lru_cache(maxsize=None)
def bicubic_matrix(n_in: int, n_out: int = SIZE) -> np.ndarray:
  """The [n_out, n_in] matrix of 1-D bicubic upsampling (Keys a=-0.5, half-pixel centres,
  taps outside the image dropped and the rest renormalised), as TF2's
  `tf.image.resize(method="bicubic")` computes it; a 2-D resize is `M @ image @ M.T`, cheap
  enough to run in every worker without TensorFlow."""
  scale = n_in / n_out
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    x = (i + 0.5) * scale - 0.5
    base = math.floor(x)
    for k in range(max(base - 1, 0), min(base + 3, n_in)):
      m[i, k] = _keys_cubic(x - k)
    m[i] /= m[i].sum()
  m.setflags(write=False)  # Shared through the cache.
  return m


def to_uint16(plane: np.ndarray, size: int = SIZE) -> np.ndarray:
  """Upsamples a band to size x size if needed (bicubic), rounds and clips to uint16.

  Bicubic overshoots near sharp edges, below 0 and (rarely) above the uint16 range.
  """
  plane = plane.astype(np.float64)
  if plane.shape != (size, size):
    m = bicubic_matrix(plane.shape[0], size)
    plane = m @ plane @ m.T
  return np.clip(np.rint(plane), 0, 65535).astype(np.uint16)


def label_vector(names: Iterable[str]) -> np.ndarray:
  """43-class multi-hot int64 vector from CORINE class names.

  Raises:
    PatchError: for a name that is not one of the 43 classes.
  """
  vector = np.zeros(len(CLASSES), np.int64)
  for name in names:
    if name not in CLASS_INDEX:
      raise PatchError(f"unknown label {name!r}")
    vector[CLASS_INDEX[name]] = 1
  return vector


def scheme_label(multi_hot: np.ndarray, scheme: str) -> int:
  return int(multi_hot[list(SCHEMES[scheme])].any())


def read_patch(folder: str | os.PathLike) -> tuple[str, np.ndarray, np.ndarray]:
  """Reads one patch folder.

  Returns:
    (patch name, uint16 image [120, 120, 10] in `BANDS` order, 43-class multi-hot labels).

  Raises:
    PatchError: naming what is wrong (missing or unreadable band, wrong size, bad JSON).
  """
  import tifffile  # Only conversion needs it.

  folder = pathlib.Path(folder)
  name = folder.name
  planes = []
  for band in BANDS:
    path = folder / f"{name}_{band}.tif"
    if not path.is_file():
      raise PatchError(f"missing band {band} ({path.name})")
    try:
      plane = tifffile.imread(path)
    except Exception as e:  # tifffile raises many types for damaged files.
      raise PatchError(f"unreadable band {band}: {type(e).__name__}: {e}") from None
    side = SIZE if band in BANDS_10M else SIZE // 2
    if plane.shape != (side, side):
      raise PatchError(f"band {band} is {'x'.join(map(str, plane.shape))}, expected {side}x{side}")
    planes.append(to_uint16(plane))
  json_path = folder / f"{name}_labels_metadata.json"
  try:
    metadata = json.loads(json_path.read_text())
    labels = metadata["labels"]
  except FileNotFoundError:
    raise PatchError(f"missing {json_path.name}") from None
  except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise PatchError(f"bad labels JSON ({type(e).__name__}: {e})") from None
  return name, np.stack(planes, axis=-1), label_vector(labels)


def encode_patch(name: str, image: np.ndarray, multi_hot: np.ndarray) -> bytes:
  labels = {f"label_{s}": scheme_label(multi_hot, s) for s in SCHEMES}
  labels["labels"] = multi_hot
  return tfrecord.encode_example(name, image, labels, dtype="uint16")


def meta_path(output_dir: pathlib.Path, shard: str) -> pathlib.Path:
  return output_dir / (shard + ".meta.json")


class BandSums:
  """Per-band sums of the patches a shard stores (for `band_statistics`)."""

  def __init__(self):
    self.sum, self.sumsq, self.pixels = np.zeros(len(BANDS)), np.zeros(len(BANDS)), 0

  def add(self, image: np.ndarray) -> None:
    values = image.reshape(-1, len(BANDS)).astype(np.float64)
    self.sum += values.sum(0)
    self.sumsq += (values ** 2).sum(0)
    self.pixels += values.shape[0]

  def as_meta(self) -> dict:
    return {"band_sum": self.sum.tolist(), "band_sumsq": self.sumsq.tolist(),
            "pixels": self.pixels}


def band_statistics(metas: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
  """The per-band mean and std of every patch the shards stored."""
  pixels = sum(m["pixels"] for m in metas)
  mean = np.sum([m["band_sum"] for m in metas], 0) / max(pixels, 1)
  mean_sq = np.sum([m["band_sumsq"] for m in metas], 0) / max(pixels, 1)
  return mean, np.sqrt(np.maximum(mean_sq - mean ** 2, 0.0))


def write_patch_shard(output_dir: pathlib.Path, shard: str,
                      patches: Iterable[tuple[str, np.ndarray, np.ndarray] | tuple[str, str]]) -> dict:
  """Writes one shard of converted patches and its metadata file (last, atomically).

  `patches` yields (name, image, multi_hot) for good patches and (name, reason) for rejects.
  Returns the metadata: ids, scheme labels, rejects and per-band sums for statistics.
  """
  meta = {"shard": shard, "ids": [], "labels": {s: [] for s in SCHEMES}, "rejects": []}
  sums = BandSums()

  def serialized():
    for item in patches:
      if len(item) == 2:
        meta["rejects"].append(list(item))
        continue
      name, image, multi_hot = item
      meta["ids"].append(name)
      for s in SCHEMES:
        meta["labels"][s].append(scheme_label(multi_hot, s))
      sums.add(image)
      yield encode_patch(name, image, multi_hot)

  tfrecord.write_shard(output_dir / shard, serialized())
  meta.update(sums.as_meta())
  fileio.write_json(meta_path(output_dir, shard), meta)
  return meta


def init_worker() -> None:
  """One BLAS thread per worker: the workers already fill the cores, and threaded small
  matrix products oversubscribe them."""
  from threadpoolctl import threadpool_limits

  global _THREAD_LIMIT
  _THREAD_LIMIT = threadpool_limits(1)


def _convert_folders(args: tuple[str, str, list[str]]) -> dict:
  """Worker: reads the folders of one shard, rejecting bad patches by name with a reason."""
  output_dir, shard, folders = args

  def patches():
    for folder in folders:
      try:
        yield read_patch(folder)
      except PatchError as e:
        yield (pathlib.Path(folder).name, str(e))

  return write_patch_shard(pathlib.Path(output_dir), shard, patches())


def list_patches(archive_dir: str | os.PathLike) -> list[str]:
  """Patch folders of an archive, sorted by name (the shard assignment depends on it).

  Raises:
    FileNotFoundError: if the directory is missing or holds no patch folders.
  """
  archive_dir = pathlib.Path(archive_dir)
  if not archive_dir.is_dir():
    raise FileNotFoundError(f"no archive directory at {archive_dir}")
  with os.scandir(archive_dir) as entries:
    folders = sorted(e.path for e in entries if e.is_dir())
  if not folders:
    raise FileNotFoundError(f"{archive_dir} holds no patch folders; point --archive_dir at the "
                            "directory with one folder per patch (e.g. BigEarthNet-v1.0/)")
  return folders


def convert_archive(archive_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                    examples_per_shard: int = 1000, workers: int | None = None) -> list[dict]:
  """Converts every patch folder into sharded records; finished shards are skipped.

  Returns:
    The metadata of every shard, in shard order.
  """
  output_dir = pathlib.Path(output_dir)
  folders = list_patches(archive_dir)
  count = math.ceil(len(folders) / examples_per_shard)
  tasks = [(str(output_dir), tfrecord.shard_name(i, count),
            folders[i * examples_per_shard:(i + 1) * examples_per_shard]) for i in range(count)]
  log.info("converting %d patches into %d shards", len(folders), count)
  return convert_shards(output_dir, tasks, _convert_folders, workers=workers,
                        size=lambda task: len(task[2]),
                        done=lambda meta: len(meta["ids"]) + len(meta["rejects"]))


def convert_shards(output_dir: pathlib.Path, tasks: Sequence[tuple], worker, *,
                   workers: int | None, size, done, describe=None) -> list[dict]:
  """Runs `worker` on every task whose shard (`task[1]`) has no metadata file yet, in a pool
  of spawned processes (in this process for one worker), logging each finished shard; returns every shard's metadata in task
  order. A shard is finished once its metadata exists (written last), so a killed conversion
  resumes at the first unfinished shard.

  Args:
    size, done: a task's, and a finished shard's (from its metadata), number of patches.
    describe: a finished shard's metadata -> its log line (default: patches and rejects).
  """
  todo = [t for t in tasks if not meta_path(output_dir, t[1]).is_file()]
  for stale in (output_dir / "records").glob(".*.tmp*"):  # left by a killed run; never trusted
    stale.unlink()
  log.info("%d shards to convert (%d done before), %d workers", len(todo),
           len(tasks) - len(todo), workers or os.cpu_count())
  describe = describe or (lambda m: f"{len(m['ids'])} patches, {len(m['rejects'])} rejected")
  start, converted, total = time.perf_counter(), 0, sum(size(t) for t in todo)

  def _log_shard(meta: dict) -> dict:
    nonlocal converted
    converted += done(meta)
    log.info("shard %s: %s; %d/%d patches this run (%.1f patches/s)", meta["shard"],
             describe(meta), converted, total, converted / (time.perf_counter() - start))
    return meta

  if workers == 1:  # One worker: this process does the work (no pool to start).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
      for task in todo:
        _log_shard(worker(task))
  elif todo:
    # "spawn": workers must not inherit a TensorFlow runtime initialised in this process.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker) as pool:
      for meta in pool.imap_unordered(worker, todo):
        _log_shard(meta)
  return [fileio.read_json(meta_path(output_dir, t[1])) for t in tasks]


def finalize(output_dir: str | os.PathLike, metas: Sequence[Mapping], *, source: str,
             compute_stats: bool = False, split_dirs: Mapping[str, str | os.PathLike] | None = None,
             seed: int = 0, percents: Sequence[int] = STUDY_SPLIT_PERCENTS) -> records.PreparedData:
  """Writes ids, rejects, split lists and (last) the manifest of converted shards.

  Args:
    output_dir: the prepared directory holding the shards.
    metas: every shard's metadata, in shard order.
    source: where the patches came from (recorded).
    compute_stats: use the per-band mean/std of these patches instead of the published ones.
    split_dirs: scheme -> directory of the study's split lists to import; schemes not given
      get new splits by the study's procedure.
    seed: seeds generated splits.
    percents: label-split sizes of generated splits.

  Raises:
    ValueError: if no patch converted, or imported split lists name none of the patches.
  """
  output_dir = pathlib.Path(output_dir)
  ids = [i for m in metas for i in m["ids"]]
  rejects = [r for m in metas for r in m["rejects"]]
  # Written first, so the error below (nothing converted) can point at the reasons.
  fileio.write_text(output_dir / "rejects.csv", "patch,reason\n" + "".join(
      f"{name},{json.dumps(reason)}\n" for name, reason in rejects))
  if not ids and not rejects:
    raise ValueError(f"no patch converted into {output_dir}: {source} yielded none")
  if not ids:
    reasons = collections.Counter(reason.split(" (")[0].split(": ")[0]
                                  for _, reason in rejects).most_common(3)
    raise ValueError(f"no patch converted into {output_dir}: all {len(rejects)} were rejected "
                     f"(most often: {'; '.join(f'{r} x{n}' for r, n in reasons)}); see "
                     f"{output_dir / 'rejects.csv'} for each patch's reason, and check that "
                     f"{source} is a BigEarthNet-S2 archive (one folder per patch with its band "
                     ".tif files and labels JSON)")
  fileio.write_text(output_dir / "ids.txt", "".join(f"{i}\n" for i in ids))
  mean, std, stats_source = standardisation(metas, compute_stats)
  split_report = {}
  for scheme in SCHEMES:
    labels = [label for m in metas for label in m["labels"][scheme]]
    positives = sum(labels)
    if not (split_dirs and scheme in split_dirs) and positives in (0, len(labels)):
      # No balanced pool exists (e.g. a small excerpt with no irrigated patch): the records
      # are still written; this scheme gets no split lists and is not offered to stage 3.
      split_report[scheme] = {"origin": f"not generated: {positives} positive(s) among "
                                        f"{len(labels)} patches, both classes are needed",
                              "positive_rate": positives / len(labels), "sizes": {}}
      log.warning("scheme %s: %s", scheme, split_report[scheme]["origin"])
      continue
    if split_dirs and scheme in split_dirs:
      imported = splits_lib.read_split_lists(split_dirs[scheme])
      present = set(ids)
      lists = {name: [i for i in v if i in present] for name, v in imported.items()}
      missing = len(set().union(*imported.values()) - present)
      if not any(lists.values()):
        raise ValueError(f"the split lists in {split_dirs[scheme]} name none of the {len(ids)} "
                         "converted patches; point them at the archive they were made from")
      origin = f"imported from {split_dirs[scheme]} ({missing} listed patches not in the archive)"
    else:
      lists = splits_lib.make_balanced_splits(ids, labels, percents=percents, seed=seed)
      origin = f"generated with seed {seed}"
    splits_lib.write_split_lists(output_dir / "splits" / scheme, lists)
    label_of = dict(zip(ids, labels))
    split_report[scheme] = {
        "origin": origin, "positive_rate": float(np.mean(labels)),
        "sizes": {n: len(v) for n, v in lists.items()},
        "positive_rates": {n: float(np.mean([label_of[i] for i in v])) if v else 0.0
                           for n, v in lists.items()}}
  fileio.write_json(output_dir / tfrecord.MANIFEST, {
      "format": tfrecord.FORMAT, "name": "bigearthnet-s2", "source": source,
      "image_shape": [SIZE, SIZE, len(BANDS)], "image_dtype": "uint16", "band_names": list(BANDS),
      "transform": "uint16 reflectance; 20 m bands bicubic-upsampled 60->120 and rounded; "
                   "reader standardises with band_mean/band_std",
      "band_mean": mean.tolist(), "band_std": std.tolist(), "band_stats_source": stats_source,
      "label_keys": [f"label_{s}" for s in SCHEMES], "multi_hot": {"key": "labels",
                                                                   "size": len(CLASSES)},
      "classes": list(CLASSES), "positive_classes": {s: [CLASSES[i] for i in v]
                                                     for s, v in SCHEMES.items()},
      "num_classes": 2, "num_examples": len(ids), "num_rejected": len(rejects),
      "schemes": sorted(s for s, r in split_report.items() if r["sizes"]),
      "splits": split_report, "split_seed": seed,
      "shards": [m["shard"] for m in metas],
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  })
  from simclr_distill.data import records  # TensorFlow: not in conversion workers

  return records.PreparedData.open(output_dir)


def standardisation(metas: Sequence[Mapping],
                    compute_stats: bool) -> tuple[np.ndarray, np.ndarray, str]:
  """The band mean and std the reader standardises with, and where they come from."""
  if compute_stats:
    mean, std = band_statistics(metas)
    return mean, std, f"computed from {sum(len(m['ids']) for m in metas)} patches"
  return (np.array([PUBLISHED_MEAN[b] for b in BANDS]), np.array([PUBLISHED_STD[b] for b in BANDS]),
          "BigEarthNet published statistics")


def prepare_archive(archive_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                    examples_per_shard: int = 1000, workers: int | None = None,
                    compute_stats: bool = False,
                    split_dirs: Mapping[str, str | os.PathLike] | None = None, seed: int = 0,
                    percents: Sequence[int] = STUDY_SPLIT_PERCENTS) -> records.PreparedData:
  """Converts a BigEarthNet-S2 archive directory into a prepared data directory."""
  metas = convert_archive(archive_dir, output_dir, examples_per_shard=examples_per_shard,
                          workers=workers)
  return finalize(output_dir, metas, source=str(archive_dir), compute_stats=compute_stats,
                  split_dirs=split_dirs, seed=seed, percents=percents)


def prepare_from_patches(patches: Iterator[tuple[str, np.ndarray, np.ndarray]],
                         output_dir: str | os.PathLike, *, source: str,
                         examples_per_shard: int = 1000, **finalize_kwargs) -> records.PreparedData:
  """Converts an in-order stream of (name, image, multi_hot) (e.g. from TFDS) in one process.

  Patches stream straight into the shard being written (never a shard's worth in memory), so
  peak memory does not grow with the data or the shard size.
  """
  output_dir = pathlib.Path(output_dir)
  metas, stream = [], iter(patches)
  for index in itertools.count():
    first = next(stream, None)
    if first is None:
      break
    chunk = itertools.chain([first], itertools.islice(stream, examples_per_shard - 1))
    # The total shard count is unknown while streaming; names carry the index only.
    shard = f"records/part-{index:05d}.tfrecord"
    finished = meta_path(output_dir, shard)
    if finished.is_file():  # Written by an interrupted earlier call: skip its patches.
      collections.deque(chunk, maxlen=0)
      metas.append(fileio.read_json(finished))
    else:
      metas.append(write_patch_shard(output_dir, shard, chunk))
  return finalize(output_dir, metas, source=source, **finalize_kwargs)
