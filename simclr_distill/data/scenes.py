"""Sentinel-2 scenes -> unlabelled prepared records: stage 1's second source (the CA encoders).

The study pretrained two of its three encoders (CA_adam, CA_sgd) on California Sentinel-2
tiles cut into 120x120 patches. This module cuts any scene the same way, into records a
BigEarthNet encoder reads unchanged: the same 10 bands in the same order (B04, B03, B02, B08,
B05, B06, B07, B8A, B11, B12), uint16, the 20 m bands bicubic-upsampled per patch from their
native 60x60 window exactly as `bigearthnet.to_uint16` does for BigEarthNet, and BigEarthNet's
published band statistics (or ones computed from the patches, `compute_stats`).

A scene directory holds, sorted by name:
  * files (.tif, .tiff, .jp2, .vrt): one multi-band scene each, on the 10 m grid (an Earth
    Engine export). Its bands are named by their descriptions (B2 or B02, ..., SCL, QA60,
    CLOUD_MASK), else by `SceneConfig.bands`, else they are the study's 10 bands in its order.
    20 m bands on the 10 m grid are first averaged 2x2 back to 20 m (exact for the repeated
    pixels an export makes), then upsampled per patch like BigEarthNet's.
  * folders: one scene each, one file per band (band in the file name: T11SKA_..._B02_10m.jp2,
    B8A.tif, SCL_20m.jp2); searched recursively, so an L2A .SAFE product works as it is (the
    finest resolution of each band is taken; QI_DATA and MSK_* files are skipped). 20 m bands
    may be at 20 m (half the 10 m size) or on the 10 m grid.
An SCL band (cloud: `SceneConfig.cloud_classes`), a QA60 band (bits 10 and 11) or a cloud mask
(nonzero = cloud), at any integer fraction of 10 m, filters cloudy patches. A product whose
MTD_MSIL2A.xml declares BOA_ADD_OFFSET (processing baseline 04.00 and later) has it added to
its DNs, so its patches are on BigEarthNet's scale (reflectance x 10000) like older products'.

Patches are cut on a grid (`patch_size`, `stride`, whole patches only) and named
`<scene>_r<row>_c<col>` (the pixel offset of the patch's top-left corner on the 10 m grid).
A patch is dropped, and counted by reason in the manifest, when more than
`max_nodata_fraction` of its pixels are no-data (every band 0, NaN or the file's nodata value)
or more than `max_cloud_fraction` is cloud. A scene that cannot be read (corrupt, truncated,
bands missing or not aligned) is listed in rejects.csv with the reason; the others convert.

Scenes are never loaded whole: a shard is a run of patch rows of one scene, converted by a
worker process that reads only those rows, a few patch rows at a time (`READ_BUDGET` bytes of
pixels, GDAL's block cache capped at `GDAL_CACHE_MB`), so memory is bounded per worker
whatever the scene size. Shards are written atomically with their metadata last, so a killed
conversion resumes at the first unfinished shard and produces byte-identical output; the plan
(scenes, sizes, settings) is recorded, and a resumption with a different plan is refused.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import pathlib
import re
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

from simclr_distill import fileio
from simclr_distill.data import bigearthnet, tfrecord

if TYPE_CHECKING:
  from simclr_distill.data import records
from simclr_distill.study_config import SceneConfig

log = logging.getLogger(__name__)

BANDS = bigearthnet.BANDS
SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
MASKS = ("SCL", "QA60", "CLOUD_MASK")  # cloud masks, by the band name that holds them
QA60_CLOUD_BITS = (1 << 10) | (1 << 11)  # opaque clouds, cirrus
READ_BUDGET = 48 * 2 ** 20  # bytes of scene pixels a worker holds at once (at least a patch row)
GDAL_CACHE_MB = 96  # GDAL's block cache per worker (its default is 5% of the machine's memory)
PLAN = "conversion.json"  # the plan of the conversion, for a safe resumption
DROP_REASONS = ("nodata", "cloud")


class SceneError(ValueError):
  """A scene that cannot be converted; the message is its reject reason."""


def band_key(text: str | None) -> str | None:
  """A band's canonical name: 'B2', 'b02' -> 'B02'; 'B8A'; 'SCL'; 'QA60'; 'cloud_mask' ->
  'CLOUD_MASK'; None when `text` names no band."""
  t = (text or "").strip().upper().replace("-", "_")
  match = re.fullmatch(r"B0?(\d{1,2}|8A)", t)
  if match:
    return "B8A" if match.group(1) == "8A" else f"B{int(match.group(1)):02d}"
  if t in ("SCL", "QA60"):
    return t
  if t in ("CLOUD_MASK", "CLOUDMASK", "CLOUDS", "CLOUD", "MASK"):
    return "CLOUD_MASK"
  return None


@dataclasses.dataclass(frozen=True)
class Layer:
  """One band of a scene: its file, the 1-based band index there, and its grid factor (1: on
  the 10 m grid; 2: 20 m pixels; n: n x n 10 m pixels per pixel)."""

  path: str
  index: int
  factor: int


@dataclasses.dataclass(frozen=True)
class Scene:
  """A scene checked and ready to cut (see `describe_scene`)."""

  name: str
  source: str
  height: int  # on the 10 m grid
  width: int
  bands: tuple[Layer, ...]  # in BANDS order
  mask: Layer | None = None
  mask_kind: str | None = None  # one of MASKS
  nodata: float | None = None
  offsets: tuple[float, ...] | None = None  # per band, from an L2A product's metadata

  @property
  def layout(self) -> str:
    return "one file" if len({layer.path for layer in self.bands}) == 1 else "one file per band"

  def offset(self, band_index: int, default: float) -> float:
    return self.offsets[band_index] if self.offsets else default

  def grid(self, patch_size: int, step: int) -> tuple[list[int], list[int]]:
    """The top-left offsets of the grid's patch rows and columns (whole patches only)."""
    return (list(range(0, self.height - patch_size + 1, step)),
            list(range(0, self.width - patch_size + 1, step)))


def list_scenes(scene_dir: str | os.PathLike) -> list[pathlib.Path]:
  """The scenes of a directory (raster files and folders, hidden ones skipped), by name.

  Raises:
    FileNotFoundError: for a missing directory, or one without scenes.
  """
  scene_dir = pathlib.Path(scene_dir)
  if not scene_dir.is_dir():
    raise FileNotFoundError(f"no scene directory at {scene_dir} (--scene_dir)")
  found = sorted(p for p in scene_dir.iterdir() if not p.name.startswith(".") and (
      p.is_dir() or p.suffix.lower() in SUFFIXES))
  if not found:
    raise FileNotFoundError(
        f"{scene_dir} holds no scenes: give a directory with multi-band GeoTIFF/JPEG 2000 files "
        f"({', '.join(SUFFIXES)}) or one folder per scene with a file per band (B02 ... B12 in "
        "the names)")
  return found


def scene_name(path: pathlib.Path) -> str:
  """The scene's name in patch ids: the file's stem or the folder's name (without .SAFE),
  characters other than letters, digits, '.', '-' and '_' replaced by '_'."""
  stem = path.name[:-5] if path.name.upper().endswith(".SAFE") else (
      path.stem if path.is_file() else path.name)
  return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def _open(path):
  import rasterio
  import warnings

  with warnings.catch_warnings():  # A plain TIFF (no geo tags) is read on its pixel grid.
    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
    return rasterio.open(path)


def _check_complete(path: pathlib.Path) -> None:
  """Refuses a TIFF whose strips or tiles end beyond the file (a truncated copy or download):
  only the directories are read, so this costs nothing next to the conversion.

  Raises:
    SceneError: naming the file and how much of it is missing.
  """
  if path.suffix.lower() not in (".tif", ".tiff"):
    return  # GDAL reports a damaged JPEG 2000 when the worker decodes it.
  import tifffile

  try:
    with tifffile.TiffFile(path) as tif:
      size = tif.filehandle.size
      for page in tif.pages:
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
        if ends and max(ends) > size:
          raise SceneError(f"{path.name} is truncated: its pixel data ends at byte {max(ends)}, "
                           f"the file has {size} bytes")
  except SceneError:
    raise
  except Exception as e:  # tifffile raises many types for damaged files.
    raise SceneError(f"{path.name} is not a readable TIFF ({type(e).__name__}: {e})") from None


def _layer_files(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """Band name -> the raster files of a per-band folder naming it (recursively; quality masks
  of a .SAFE product, QI_DATA and MSK_*, skipped)."""
  found = collections.defaultdict(list)
  for path in sorted(folder.rglob("*")):
    if path.suffix.lower() not in SUFFIXES or not path.is_file() or "QI_DATA" in path.parts:
      continue
    tokens = re.split(r"[_.\s-]+", path.stem)
    if any(t.upper() == "MSK" for t in tokens):
      continue
    keys = {band_key(t) for t in tokens} - {None}
    if "CLOUD_MASK" in keys and len(keys) > 1:
      keys.discard("CLOUD_MASK")  # e.g. B02_mask: not a cloud mask
    if len(keys) > 1:
      raise SceneError(f"{path.relative_to(folder)} names several bands ({', '.join(sorted(keys))}); "
                       "give each band its own file")
    if keys:
      found[keys.pop()].append(path)
  return found


def describe_scene(path: str | os.PathLike, cfg: SceneConfig = SceneConfig()) -> Scene:
  """Opens a scene's headers (no pixels) and checks it can be cut.

  Raises:
    SceneError: the reason it cannot (unreadable, truncated, bands missing, misaligned, pixel
      size other than 10 m, smaller than one patch).
  """
  path = pathlib.Path(path)
  scene = _describe_folder(path) if path.is_dir() else _describe_file(path, cfg)
  if scene.height < cfg.patch_size or scene.width < cfg.patch_size:
    raise SceneError(f"{scene.height}x{scene.width} pixels, smaller than one {cfg.patch_size}x"
                     f"{cfg.patch_size} patch")
  return scene


def _ten_metre(transform, crs, what: str) -> None:
  """Refuses a georeferenced raster in metres whose pixels are not 10 m."""
  if crs is not None and crs.is_projected and crs.linear_units_factor[1] == 1.0:
    x, y = abs(transform.a), abs(transform.e)
    if abs(x - 10) > 0.5 or abs(y - 10) > 0.5:
      raise SceneError(f"{what} has {x:g} x {y:g} m pixels; patches are cut on the 10 m grid "
                       "(export the scene at 10 m, or give one file per band)")


def _describe_file(path: pathlib.Path, cfg: SceneConfig) -> Scene:
  _check_complete(path)
  try:
    with _open(path) as src:
      count, height, width = src.count, src.height, src.width
      descriptions, nodata = src.descriptions, src.nodata
      _ten_metre(src.transform, src.crs, path.name)
  except SceneError:
    raise
  except Exception as e:
    raise SceneError(f"unreadable: {type(e).__name__}: {e}") from None
  named = [band_key(d) for d in descriptions]
  if all(b in named for b in BANDS):
    names, origin = named, "its band descriptions"
  elif cfg.bands:
    names, origin = [band_key(b) for b in cfg.bands], "--scene_bands"
    if len(names) > count:
      raise SceneError(f"--scene_bands names {len(names)} bands, the file has {count}")
  else:
    names, origin = list(BANDS), "the study's band order (no band descriptions)"
  missing = [b for b in BANDS if b not in names]
  if missing or count < len(BANDS):
    raise SceneError(f"{count} band(s) named by {origin}; the study's 10 bands are "
                     f"{','.join(BANDS)} (missing {','.join(missing) or 'some'}): give "
                     "--scene_bands in the file's band order, or one file per band")
  masks = [m for m in MASKS if m in names]
  mask = Layer(str(path), names.index(masks[0]) + 1, 1) if masks else None
  return Scene(name=scene_name(path), source=str(path), height=height, width=width,
               bands=tuple(Layer(str(path), names.index(b) + 1, 1) for b in BANDS), mask=mask,
               mask_kind=masks[0] if masks else None, nodata=nodata)


def _describe_folder(folder: pathlib.Path) -> Scene:
  files = _layer_files(folder)
  missing = [b for b in BANDS if b not in files]
  if missing:
    raise SceneError(f"no file for band(s) {', '.join(missing)} (each band's file name must "
                     "name it, e.g. T11SKA_20210701_B05_20m.jp2 or B05.tif)")
  shapes, geo = {}, {}
  for key in [*BANDS, *(m for m in MASKS if m in files)]:
    for path in files[key]:
      _check_complete(path)
      try:
        with _open(path) as src:
          shapes[path] = (src.height, src.width)
          geo[path] = (src.transform, src.crs, src.nodata)
      except Exception as e:
        raise SceneError(f"{path.name} is unreadable: {type(e).__name__}: {e}") from None
  # The finest file of each band (a .SAFE product has B02 at 10, 20 and 60 m).
  chosen = {k: max(files[k], key=lambda p: shapes[p]) for k in files if k in BANDS or k in MASKS}
  tens = {shapes[chosen[b]] for b in bigearthnet.BANDS_10M}
  if len(tens) > 1:
    raise SceneError("the 10 m bands differ in size: " + ", ".join(
        f"{b} {'x'.join(map(str, shapes[chosen[b]]))}" for b in bigearthnet.BANDS_10M))
  height, width = tens.pop()
  reference = geo[chosen[bigearthnet.BANDS_10M[0]]]
  for band in bigearthnet.BANDS_10M:
    _ten_metre(*geo[chosen[band]][:2], chosen[band].name)

  def layer(key: str, allowed: Sequence[int]) -> Layer:
    path = chosen[key]
    h, w = shapes[path]
    factor = height // h if h else 0
    if factor not in allowed or h * factor != height or w * factor != width:
      raise SceneError(f"{path.name} ({key}) is {h}x{w}: not {', '.join(map(str, allowed))} "
                       f"time(s) smaller than the 10 m bands' {height}x{width}")
    transform, crs, _ = geo[path]
    ref_transform, ref_crs, _ = reference
    if not (transform.is_identity or ref_transform.is_identity):
      if crs != ref_crs or abs(transform.c - ref_transform.c) > ref_transform.a / 2 or abs(
          transform.f - ref_transform.f) > abs(ref_transform.e) / 2:
        raise SceneError(f"{path.name} ({key}) does not cover the same area as "
                         f"{chosen[bigearthnet.BANDS_10M[0]].name}")
    return Layer(str(path), 1, factor)

  bands = tuple(layer(b, (1,) if b in bigearthnet.BANDS_10M else (1, 2)) for b in BANDS)
  masks = [m for m in MASKS if m in chosen]
  mask = layer(masks[0], (1, 2, 3, 6)) if masks else None
  name = scene_name(folder)
  return Scene(name=name, source=str(folder), height=height, width=width, bands=bands, mask=mask,
               mask_kind=masks[0] if masks else None, nodata=reference[2],
               offsets=product_offsets(folder))


# Sentinel-2 band ids of the product metadata (BOA_ADD_OFFSET band_id="N").
_BAND_IDS = {"B01": 0, "B02": 1, "B03": 2, "B04": 3, "B05": 4, "B06": 5, "B07": 6, "B08": 7,
             "B8A": 8, "B09": 9, "B10": 10, "B11": 11, "B12": 12}


def product_offsets(folder: pathlib.Path) -> tuple[float, ...] | None:
  """The BOA_ADD_OFFSET of each of BANDS from an L2A product's MTD_MSIL2A.xml (processing
  baseline 04.00 and later, from January 2022: -1000, reflectance = (DN + offset) / 10000),
  None when the folder has no such metadata or it declares no offset (earlier baselines, whose
  DNs are reflectance x 10000 like BigEarthNet's).

  Raises:
    SceneError: for metadata that cannot be parsed, or that lacks one of the bands' offsets.
  """
  import xml.etree.ElementTree as ET

  found = sorted(folder.glob("MTD_MSIL2A.xml")) or sorted(folder.glob("*/MTD_MSIL2A.xml"))
  if not found:
    return None
  try:
    root = ET.parse(found[0]).getroot()
  except ET.ParseError as e:
    raise SceneError(f"{found[0].name} cannot be parsed ({e})") from None
  declared = {int(e.get("band_id")): float(e.text) for e in root.iter()
              if e.tag.split("}")[-1] == "BOA_ADD_OFFSET" and e.get("band_id") is not None}
  if not declared:
    return None
  missing = [b for b in BANDS if _BAND_IDS[b] not in declared]
  if missing:
    raise SceneError(f"{found[0].name} declares BOA_ADD_OFFSET for some bands but not "
                     f"{', '.join(missing)}")
  return tuple(declared[_BAND_IDS[b]] for b in BANDS)


# ---- Cutting ---------------------------------------------------------------------------------


def patch_name(scene: str, row: int, col: int) -> str:
  return f"{scene}_r{row:05d}_c{col:05d}"


def patch_rows_per_read(scene: Scene, cfg: SceneConfig) -> int:
  """How many patch rows a worker reads at once: as many as `READ_BUDGET` bytes of pixels
  hold (counted at 4 bytes a pixel: uint16 to float32 scenes), at least one."""
  per_row = sum(scene.width // layer.factor * max(cfg.step, cfg.patch_size) // layer.factor * 4
                for layer in scene.bands)
  return max(1, READ_BUDGET // max(per_row, 1))


def _windows(scene: Scene, rows: Sequence[int], cfg: SceneConfig):
  """Reads the scene's rows covering `rows` (patch-row offsets), `patch_rows_per_read` patch
  rows at a time, every band of one file and grid in one read; yields (first 10 m row of the
  block, [one array per band], mask array or None, the block's patch rows)."""
  from rasterio.windows import Window

  layers = [*scene.bands, *([scene.mask] if scene.mask else [])]
  groups = collections.defaultdict(list)  # (file, factor) -> positions in `layers`
  for i, layer in enumerate(layers):
    groups[(layer.path, layer.factor)].append(i)
  block = patch_rows_per_read(scene, cfg)
  with contextlib.ExitStack() as stack:
    handles = {path: stack.enter_context(_open(path)) for path, _ in groups}
    for i in range(0, len(rows), block):
      chunk = rows[i:i + block]
      r0, r1 = chunk[0], chunk[-1] + cfg.patch_size
      arrays = [None] * len(layers)
      for (path, f), members in groups.items():
        top, bottom = r0 // f, -(-r1 // f)
        read = handles[path].read([layers[m].index for m in members],
                                  window=Window(0, top, scene.width // f, bottom - top))
        for m, array in zip(members, read):
          arrays[m] = array
      yield r0, arrays[:len(scene.bands)], arrays[-1] if scene.mask else None, chunk


def _window(plane: np.ndarray, layer: Layer, top: int, row: int, col: int, p: int) -> np.ndarray:
  f = layer.factor
  r = row // f - top // f
  return plane[r:r + p // f, col // f:(col + p) // f]


def patch_fractions(scene: Scene, cfg: SceneConfig, planes: Sequence[np.ndarray],
                    mask: np.ndarray | None, top: int, row: int, col: int) -> tuple[float, float | None]:
  """The no-data and cloud fractions (None without a cloud mask) of the patch at (`row`,
  `col`) of the 10 m grid, from arrays holding every band's (and the mask's) pixels of a block
  of rows starting at 10 m row `top`, whole width."""
  p = cfg.patch_size
  missing = np.ones((p, p), bool)
  for layer, plane in zip(scene.bands, planes):
    absent = _absent(_window(plane, layer, top, row, col, p), scene.nodata)
    f = layer.factor
    missing &= np.repeat(np.repeat(absent, f, 0), f, 1) if f > 1 else absent
  cloud = None
  if mask is not None:
    f = scene.mask.factor
    m = mask[row // f - top // f:-(-(row + p) // f) - top // f, col // f:-(-(col + p) // f)]
    if scene.mask_kind == "SCL":
      cloudy = np.isin(m, cfg.cloud_classes)
    elif scene.mask_kind == "QA60":
      cloudy = (np.nan_to_num(m).astype(np.int64) & QA60_CLOUD_BITS) != 0
    else:
      cloudy = np.nan_to_num(m) != 0
    cloud = float(cloudy.mean())
  return float(missing.mean()), cloud


def _absent(window: np.ndarray, nodata: float | None) -> np.ndarray:
  absent = (window == 0) | np.isnan(window) if window.dtype.kind == "f" else window == 0
  if nodata is not None and not math.isnan(nodata):
    absent |= window == nodata
  return absent


def patch_image(scene: Scene, cfg: SceneConfig, planes: Sequence[np.ndarray], top: int, row: int,
                col: int) -> np.ndarray:
  """The uint16 image [P, P, 10] (BANDS order) of the patch at (`row`, `col`) (arguments as
  `patch_fractions`): reflectances x scale + offset (the product's own BOA_ADD_OFFSET where
  its metadata declares one), no-data pixels 0, 20 m bands upsampled from their 20 m pixels as
  BigEarthNet's."""
  p = cfg.patch_size
  images = []
  for i, (band, layer, plane) in enumerate(zip(BANDS, scene.bands, planes)):
    window = _window(plane, layer, top, row, col, p)
    values = np.where(_absent(window, scene.nodata), 0.0,
                      window.astype(np.float64) * cfg.scale + scene.offset(i, cfg.offset))
    if band in bigearthnet.BANDS_20M and layer.factor == 1:  # On the 10 m grid: back to 20 m.
      values = values.reshape(p // 2, 2, p // 2, 2).mean(axis=(1, 3))
    images.append(bigearthnet.to_uint16(values, p))
  return np.stack(images, axis=-1)


def _scene_patches(scene: Scene, cfg: SceneConfig, rows: Sequence[int]) -> Iterator[tuple]:
  """Yields ("patch", name, image), ("drop", reason) or ("reject", reason) for the patches
  of the given patch rows."""
  import rasterio

  cols = scene.grid(cfg.patch_size, cfg.step)[1]
  try:
    for top, planes, mask, chunk in _windows(scene, rows, cfg):
      for row in chunk:
        for col in cols:
          nodata, cloud = patch_fractions(scene, cfg, planes, mask, top, row, col)
          if nodata > cfg.max_nodata_fraction:
            yield ("drop", "nodata")
          elif cloud is not None and cloud > cfg.max_cloud_fraction:
            yield ("drop", "cloud")
          else:
            yield ("patch", patch_name(scene.name, row, col),
                   patch_image(scene, cfg, planes, top, row, col))
  except (rasterio.errors.RasterioError, OSError) as e:  # damaged data, found when decoded
    yield ("reject", f"unreadable in rows {rows[0]}-{rows[-1] + cfg.patch_size}: "
                     f"{type(e).__name__}: {e}")


def _convert_rows(task: tuple) -> dict:
  """Worker: one shard, the patches of some patch rows of one scene."""
  import rasterio

  output_dir, shard, scene, cfg, rows, plan = task
  meta = {"shard": shard, "scene": scene.name, "plan": plan, "rows": [rows[0], rows[-1]],
          "positions": len(rows) * len(scene.grid(cfg.patch_size, cfg.step)[1]), "ids": [],
          "rejects": [], "dropped": {r: 0 for r in DROP_REASONS}}
  sums = bigearthnet.BandSums()

  def serialized():
    for item in _scene_patches(scene, cfg, rows):
      if item[0] == "drop":
        meta["dropped"][item[1]] += 1
      elif item[0] == "reject":
        meta["rejects"].append([scene.name, item[1]])
      else:
        meta["ids"].append(item[1])
        sums.add(item[2])
        yield tfrecord.encode_example(item[1], item[2], {}, dtype="uint16")

  # rasterio takes an integer GDAL_CACHEMAX in bytes.
  with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2 ** 20, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
    tfrecord.write_shard(pathlib.Path(output_dir) / shard, serialized())
  meta.update(sums.as_meta())
  fileio.write_json(bigearthnet.meta_path(pathlib.Path(output_dir), shard), meta)
  return meta


# ---- The conversion ----------------------------------------------------------------------------


def _relative(scene: dict, scene_dir) -> dict:
  out = {**scene, "source": os.path.relpath(scene["source"], scene_dir)}
  for key in ("bands", "mask"):
    if isinstance(out[key], dict):
      out[key] = {**out[key], "path": os.path.relpath(out[key]["path"], scene_dir)}
    elif out[key] is not None:
      out[key] = [{**layer, "path": os.path.relpath(layer["path"], scene_dir)}
                  for layer in out[key]]
  return out


def plan_shards(scenes: Sequence[Scene], cfg: SceneConfig,
                examples_per_shard: int) -> list[tuple[Scene, list[int]]]:
  """Each shard's scene and patch rows: consecutive rows of one scene holding at most
  `examples_per_shard` grid positions (at least one row)."""
  shards = []
  for scene in scenes:
    rows, cols = scene.grid(cfg.patch_size, cfg.step)
    per_shard = max(1, examples_per_shard // len(cols))
    shards += [(scene, rows[i:i + per_shard]) for i in range(0, len(rows), per_shard)]
  return shards


def convert_scenes(scene_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   cfg: SceneConfig = SceneConfig(), *, examples_per_shard: int = 1000,
                   workers: int | None = None) -> tuple[list[dict], list[dict]]:
  """Cuts every scene into sharded records; finished shards are skipped.

  Returns:
    (every shard's metadata in shard order, each scene's report: name, source, size, layout,
    cloud mask, grid positions, or the reason it was rejected).

  Raises:
    ValueError: when `output_dir` holds a conversion planned differently (other scenes or
      settings): resuming it would mix the two.
  """
  output_dir = pathlib.Path(output_dir)
  scenes, report = [], []
  for path in list_scenes(scene_dir):
    try:
      scene = describe_scene(path, cfg)
    except SceneError as e:
      report.append({"name": scene_name(path), "source": str(path), "rejected": str(e)})
      log.warning("scene %s rejected: %s", path.name, e)
      continue
    names = {s.name for s in scenes}
    if scene.name in names:
      raise ValueError(f"two scenes of {scene_dir} are both named {scene.name} in patch ids; "
                       "rename one")
    rows, cols = scene.grid(cfg.patch_size, cfg.step)
    scenes.append(scene)
    report.append({"name": scene.name, "source": scene.source, "size": [scene.height, scene.width],
                   "layout": scene.layout, "cloud_mask": scene.mask_kind,
                   "boa_add_offset": list(scene.offsets) if scene.offsets else None,
                   "positions": len(rows) * len(cols)})
  shards = plan_shards(scenes, cfg, examples_per_shard)
  # The plan names files relative to the scene directory: a resumption may reach it by
  # another path (another working directory, a mount point).
  plan = {"scenes": [_relative(dataclasses.asdict(s), scene_dir) for s in scenes],
          "settings": dataclasses.asdict(cfg), "examples_per_shard": examples_per_shard}
  digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
  plan_path = output_dir / PLAN
  if plan_path.is_file():
    before = fileio.read_json(plan_path)
    if before.get("digest") != digest:
      changed = [k for k in ("scenes", "settings", "examples_per_shard")
                 if before.get("plan", {}).get(k) != json.loads(json.dumps(plan[k]))]
      raise ValueError(
          f"{output_dir} holds a conversion of other {' and '.join(changed) or 'inputs'} than "
          f"this one ({plan_path}); resuming it would mix the two. Give another --output_dir, "
          "or delete that one to convert again")
  else:
    output_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_json(plan_path, {"digest": digest, "plan": plan})
  tasks = [(str(output_dir), tfrecord.shard_name(i, len(shards)), scene, cfg, rows, digest)
           for i, (scene, rows) in enumerate(shards)]
  log.info("cutting %d scene(s) (%d rejected) into %d grid positions, %d shards", len(scenes),
           len(report) - len(scenes), sum(r.get("positions", 0) for r in report), len(tasks))

  def describe(meta):
    d = meta["dropped"]
    return (f"{meta['scene']} rows {meta['rows'][0]}-{meta['rows'][1]}: {len(meta['ids'])} "
            f"patches, dropped {d['nodata']} no-data and {d['cloud']} cloudy" +
            (f"; REJECTED {meta['rejects'][0][1]}" if meta["rejects"] else ""))

  size = lambda task: len(task[4]) * len(task[2].grid(cfg.patch_size, cfg.step)[1])
  metas = bigearthnet.convert_shards(output_dir, tasks, _convert_rows, workers=workers, size=size,
                                     done=lambda meta: meta["positions"], describe=describe)
  return metas, report


def finalize(output_dir: str | os.PathLike, metas: Sequence[Mapping], report: Sequence[dict], *,
             cfg: SceneConfig, source: str, compute_stats: bool = False) -> records.PreparedData:
  """Writes ids, rejects and (last) the manifest of converted scene shards.

  Raises:
    ValueError: if no patch was kept (every scene rejected, or every patch dropped).
  """
  output_dir = pathlib.Path(output_dir)
  ids = [i for m in metas for i in m["ids"]]
  rejects = [[r["name"], r["rejected"]] for r in report if "rejected" in r]
  rejects += [r for m in metas for r in m["rejects"]]
  fileio.write_text(output_dir / "rejects.csv", "patch,reason\n" + "".join(
      f"{name},{json.dumps(reason)}\n" for name, reason in rejects))
  dropped = {r: sum(m["dropped"][r] for m in metas) for r in DROP_REASONS}
  for entry in report:
    if "rejected" not in entry:
      own = [m for m in metas if m["scene"] == entry["name"]]
      entry.update(patches=sum(len(m["ids"]) for m in own),
                   dropped={r: sum(m["dropped"][r] for m in own) for r in DROP_REASONS})
      bad = [r[1] for m in own for r in m["rejects"]]
      if bad:
        entry["rejected"] = "; ".join(bad)
  if not ids:
    reasons = "; ".join(f"{r[0]}: {r[1]}" for r in rejects[:3])
    raise ValueError(
        f"no patch kept in {output_dir}: {len(rejects)} scene(s) rejected"
        f"{' (' + reasons + ')' if reasons else ''}, {dropped['nodata']} patch(es) dropped as "
        f"no-data (> --max_nodata_fraction={cfg.max_nodata_fraction}) and {dropped['cloud']} as "
        f"cloudy (> --max_cloud_fraction={cfg.max_cloud_fraction}); see {output_dir / 'rejects.csv'}")
  fileio.write_text(output_dir / "ids.txt", "".join(f"{i}\n" for i in ids))
  mean, std, stats_source = bigearthnet.standardisation(metas, compute_stats)
  measured, _ = bigearthnet.band_statistics(metas)
  published = np.array([bigearthnet.PUBLISHED_MEAN[b] for b in BANDS])
  ratio = measured / published
  if not compute_stats and (ratio.max() > 4 or ratio.min() < 0.25):
    log.warning("the patches' band means are %s x BigEarthNet's: are the scenes in another unit? "
                "(0-1 reflectance needs --scene_scale=10000; L2A baseline >= 04.00 "
                "--scene_offset=-1000)", ", ".join(f"{b} {r:.2g}" for b, r in zip(BANDS, ratio)))
  p = cfg.patch_size
  fileio.write_json(output_dir / tfrecord.MANIFEST, {
      "format": tfrecord.FORMAT, "name": "sentinel2-scenes", "source": source,
      "image_shape": [p, p, len(BANDS)], "image_dtype": "uint16", "band_names": list(BANDS),
      "transform": f"uint16 reflectance x {cfg.scale:g} + {cfg.offset:g}; {p}x{p} patches of "
                   f"10 m pixels every {cfg.step} pixels; 20 m bands bicubic-upsampled "
                   f"{p // 2}->{p} per patch as BigEarthNet's; reader standardises with "
                   "band_mean/band_std",
      "band_mean": mean.tolist(), "band_std": std.tolist(), "band_stats_source": stats_source,
      "patch_band_mean": measured.tolist(),
      "label_keys": [], "num_classes": 2, "schemes": [], "splits": {},
      "num_examples": len(ids), "num_rejected": len(rejects), "dropped": dropped,
      "grid": {"patch_size": p, "stride": cfg.step}, "filters": {
          "max_nodata_fraction": cfg.max_nodata_fraction,
          "max_cloud_fraction": cfg.max_cloud_fraction, "cloud_classes": list(cfg.cloud_classes)},
      "scenes": list(report), "shards": [m["shard"] for m in metas],
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  })
  from simclr_distill.data import records  # TensorFlow: not in conversion workers

  return records.PreparedData.open(output_dir)


def prepare_scenes(scene_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   cfg: SceneConfig = SceneConfig(), *, examples_per_shard: int = 1000,
                   workers: int | None = None, compute_stats: bool = False) -> records.PreparedData:
  """Cuts a directory of Sentinel-2 scenes into a prepared (unlabelled) data directory."""
  metas, report = convert_scenes(scene_dir, output_dir, cfg, examples_per_shard=examples_per_shard,
                                 workers=workers)
  return finalize(output_dir, metas, report, cfg=cfg, source=str(scene_dir),
                  compute_stats=compute_stats)
