"""Peak memory and speed of cutting a whole Sentinel-2 tile into patches (`scenes.prepare_scenes`).

  python -m benchmarks.scene_memory [--size=10980] [--workers=2] [--scene_dir=DIR]

Acceptance: the peak memory of converting a generated 10,980 x 10,980 scene stays under 2 GiB.

The scene is generated first (once: `--scene_dir` keeps it for later runs) as an L2A tile
unpacked to one folder with one GeoTIFF per band, tiled 512 x 512 and zlib-compressed like a
COG: `T11SKA_20210701/B02.tif ... B08.tif` at `--size` x `--size` (10 m), B05, B06, B07, B8A,
B11, B12 and SCL at half that (20 m). Reflectances are smooth land-cover fields (field parcels,
gradients) plus noise, 200..6000; a few cloud blobs (bright in every band; SCL 9 with an SCL 8
halo, the rest SCL 4/5) make some patches drop as cloudy, and a no-data strip (zeros, SCL 0)
along the west edge, slanting from 2.5 to 3.5 patch columns wide as at the edge of a swath,
makes others drop as no-data. Generation is written tile by tile (`scene_files.write_scene_tiled`,
one band file per process), so it is memory-bounded too.

The conversion runs in a fresh child process (`--child`), as `scenes.prepare_scenes(...,
workers=--workers)` would in the pipeline (its pool workers are spawned processes; with one
worker it converts in its own process, no pool). The parent samples the whole process tree every
`--interval` seconds with psutil (the child, its pool workers and multiprocessing's resource
tracker) and records:
  tree RSS        the peak of the SUM of the processes' resident memory: the verdict. Pages
                  shared between processes (the libraries every worker maps) count once per
                  process, so this overstates what the machine loses; also its peak while
                  the pool ran (`finalize` runs after it);
  tree PSS        the peak of the sum of proportional set sizes (shared pages split between
                  the processes that map them), read every 0.5 s: what the tree costs the
                  machine (lower while other processes map the same libraries);
  largest process the peak RSS of the biggest single process; per pool worker and the main
                  process separately, since the total grows with `--workers`.
The child also reports `ru_maxrss` of itself and of its waited-for children (the workers, and
any short-lived fork of the main process), the RSS of the main process once `scenes` is
imported, and the wall time of `prepare_scenes` (planning, spawning the pool, cutting, writing,
the manifest).

Like-for-like reference: loading the scene whole, the 10 bands on the 10 m grid as uint16
(`size^2 * 10 * 2` bytes) plus the SCL band at its native 20 m as uint8.

Breakdown (`--breakdown`, each in a fresh process): the resident memory of a process once it
has imported numpy + rasterio (what reading and cutting need), the same with TensorFlow, and
what a pool worker imports (`scenes`, `bigearthnet`); and what a worker's task, the first shard
(`scenes._convert_rows`: read, cut, encode, write), adds to a process's peak (VmHWM reset after
the imports), with GDAL's block cache as `scenes` sets it and with the other setting (the
`scenes.GDAL_CACHE_MB` MiB it means if it is set below 1 MiB, else off).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import common

flags.DEFINE_integer("size", 10980, "Scene side in 10 m pixels (a Sentinel-2 tile: 10980).")
flags.DEFINE_integer("workers", 2, "Conversion worker processes (prepare_scenes(workers=...)).")
flags.DEFINE_string("scene_dir", None, "Keep the generated scene here and reuse it on later runs "
                    "(default: a temporary directory, removed after).")
flags.DEFINE_integer("examples_per_shard", 1000, "Grid positions per shard (prepare_scenes).")
flags.DEFINE_float("interval", 0.05, "Seconds between two samples of the process tree's memory.")
flags.DEFINE_integer("generate_workers", None, "Processes writing band files (default: CPUs).")
flags.DEFINE_bool("breakdown", True, "Also measure where a worker's memory goes (imports, "
                  "cutting one shard), each part in a fresh process.")
flags.DEFINE_string("child", None, "Internal: run one measurement (a JSON of arguments), print "
                    "its figures.")
FLAGS = flags.FLAGS

SCENE = "T11SKA_20210701"
TARGET_MIB = 2048  # 2 GiB
MIB = 2 ** 20
TILE = 512
BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
# Reflectance of each band over bare soil (t = 0) and dense vegetation (t = 1), and in cloud.
SOIL = {"B02": 900, "B03": 1200, "B04": 1500, "B08": 2200, "B05": 1700, "B06": 2000,
        "B07": 2200, "B8A": 2400, "B11": 3000, "B12": 2400}
VEGETATION = {"B02": 350, "B03": 700, "B04": 400, "B08": 4200, "B05": 1000, "B06": 2900,
              "B07": 3700, "B8A": 4000, "B11": 2000, "B12": 1000}
CLOUD = 5500
NOISE = 40.0
# Cloud blobs: centre (fractions of the side) and radius (fraction of the side).
BLOBS = ((0.20, 0.55, 0.030), (0.35, 0.80, 0.045), (0.62, 0.30, 0.025), (0.75, 0.70, 0.050),
         (0.88, 0.45, 0.020), (0.50, 0.52, 0.015))
HALO = 1.3  # SCL 8 (cloud, medium probability) out to this many radii
VERSION = 1  # of the generator, recorded with a kept scene
PSS_INTERVAL = 0.5  # seconds between two PSS readings of the tree
IMPORTS = {  # what a process holds before it converts anything
    "light": ["numpy", "rasterio"],  # what reading and cutting need
    "tensorflow": ["numpy", "rasterio", "tensorflow"],
    "worker": ["simclr_distill.data.scenes", "simclr_distill.data.bigearthnet"],  # a pool worker's
}


# ---- The scene ------------------------------------------------------------------------------


def _border(rows: np.ndarray, size: int) -> np.ndarray:
  """Width in 10 m pixels of the no-data strip at each 10 m row: 2.5 patches at the top to
  3.5 at the bottom (at most a quarter of the scene)."""
  return np.minimum(300.0 + 120.0 * rows / size, size / 4)


def _cover(y: np.ndarray, x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """(vegetation fraction 0..1, cloud weight 0..1+) at 10 m coordinates y [h, 1], x [1, w]."""
  # Field parcels of ~640 m with their own crop, over regional gradients.
  parcel = (((y // 64).astype(np.int64) * 73856093) ^
            ((x // 64).astype(np.int64) * 19349663)) % 1009 / 1009.0
  regional = 0.5 + 0.25 * np.sin(2 * np.pi * x / 3100 + 0.7) * np.cos(2 * np.pi * y / 2700)
  t = np.clip(0.55 * parcel + 0.45 * regional + 0.05 * np.sin(2 * np.pi * (x + y) / 90), 0, 1)
  cloud = np.zeros(np.broadcast_shapes(y.shape, x.shape))
  for fy, fx, fr in BLOBS:
    r, cy, cx = max(fr * size, 40.0), fy * size, fx * size
    if (max(y.min() - cy, cy - y.max(), 0) > HALO * r or
        max(x.min() - cx, cx - x.max(), 0) > HALO * r):
      continue  # the blob's halo misses the tile
    d = np.hypot(y - cy, x - cx) / r
    cloud = np.maximum(cloud, np.clip(HALO - d, 0, None) / (HALO - 1))
  return t, cloud


def _coords(row: int, col: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
  """10 m coordinates of the centres of a tile's pixels on a grid of `factor` x 10 m."""
  idx = np.arange(TILE, dtype=np.float64)
  return ((row + idx[:, None] + 0.5) * factor, (col + idx[None, :] + 0.5) * factor)


def band_tile(band: str, size: int, row: int, col: int) -> np.ndarray:
  """One TILE x TILE tile of a band at its native grid offset (row, col)."""
  factor = 1 if band in BANDS_10M else 2
  y, x = _coords(row, col, factor)
  t, cloud = _cover(y, x, size)
  value = SOIL[band] + (VEGETATION[band] - SOIL[band]) * t
  w = np.clip(cloud, 0, 1)
  value = (1 - w) * value + w * CLOUD
  rng = np.random.default_rng((VERSION, sum(map(ord, band)), row, col))
  value += NOISE * rng.standard_normal(value.shape, np.float32)
  value = np.clip(np.rint(value), 200, 6000)
  value[(x < _border(y, size)) | (y >= size) | (x >= size)] = 0
  return value.astype(np.uint16)


def scl_tile(size: int, row: int, col: int) -> np.ndarray:
  """One tile of the 20 m SCL band: 0 no data, 4 vegetation, 5 bare soil, 8/9 cloud."""
  y, x = _coords(row, col, 2)
  t, cloud = _cover(y, x, size)
  scl = np.where(t < 0.25, 5, 4).astype(np.uint8)
  scl[cloud > 0] = 8  # within HALO radii
  scl[cloud >= 1] = 9  # within one radius
  scl[(x < _border(y, size)) | (y >= size) | (x >= size)] = 0
  return scl


def _write_band(args: tuple[str, str, int]) -> tuple[str, float]:
  from benchmarks import scene_files

  folder, band, size = args
  start = time.perf_counter()
  ten = band in BANDS_10M  # else 20 m (SCL too)
  side = size if ten else size // 2
  final = pathlib.Path(folder) / f"{band}.tif"
  partial = final.with_name(f".{band}.tif.partial")  # not a raster suffix: never a band
  if band == "SCL":
    values = lambda b, r, c: scl_tile(size, r, c)
  else:
    values = lambda b, r, c: band_tile(band, size, r, c)
  scene_files.write_scene_tiled(partial, (side, side), values, dtype=np.uint8 if band == "SCL"
                                else np.uint16, tile=TILE, pixel_size=10.0 if ten else 20.0,
                                compression="zlib")
  os.replace(partial, final)
  return band, time.perf_counter() - start


def generate(scene_dir: pathlib.Path, size: int, processes: int | None = None) -> float:
  """Writes the scene under `scene_dir` unless a finished one of this size is there; returns the
  seconds spent (0 when reused)."""
  marker = scene_dir / ".scene_memory.json"  # hidden: not a scene
  wanted = {"scene": SCENE, "size": size, "version": VERSION}
  if marker.is_file() and json.loads(marker.read_text()) == wanted:
    print(f"reusing the {size}x{size} scene in {scene_dir}", flush=True)
    return 0.0
  folder = scene_dir / SCENE
  shutil.rmtree(folder, ignore_errors=True)
  marker.unlink(missing_ok=True)
  folder.mkdir(parents=True)
  start = time.perf_counter()
  jobs = [(str(folder), b, size) for b in (*BANDS_10M, *BANDS_20M, "SCL")]  # largest first
  processes = min(processes or os.cpu_count() or 1, len(jobs))
  print(f"generating a {size}x{size} scene ({len(jobs)} band files) in {folder} with "
        f"{processes} process(es)", flush=True)
  with multiprocessing.get_context("spawn").Pool(processes) as pool:
    for band, seconds in pool.imap_unordered(_write_band, jobs):
      print(f"  {band}.tif written in {seconds:.0f} s", flush=True)
  marker.write_text(json.dumps(wanted))
  return time.perf_counter() - start


# ---- The measurement -----------------------------------------------------------------------


def _convert(args: dict) -> dict:
  """Child: the conversion, timed, with the manifest's counts."""
  import psutil

  from simclr_distill import fileio
  from simclr_distill.data import scenes
  from simclr_distill.study_config import SceneConfig

  imported = psutil.Process().memory_info().rss / MIB
  start = time.perf_counter()
  scenes.prepare_scenes(args["scene_dir"], args["output_dir"], SceneConfig(),
                        examples_per_shard=args["examples_per_shard"], workers=args["workers"])
  wall = time.perf_counter() - start
  from simclr_distill.data import records  # pylint: disable=import-outside-toplevel

  manifest = fileio.read_json(pathlib.Path(args["output_dir"]) / records.MANIFEST)
  scene = manifest["scenes"][0]
  written = sum(path.stat().st_size for path in pathlib.Path(args["output_dir"]).rglob("*")
                if path.is_file())
  return {"wall_s": wall, "positions": scene["positions"], "kept": manifest["num_examples"],
          "dropped": manifest["dropped"], "size": scene["size"], "shards": len(manifest["shards"]),
          "rejected": manifest["num_rejected"], "imported_rss_mib": imported,
          "main_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "workers_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
          "written_mib": written / MIB}


def _imports(args: dict) -> dict:
  """Child: the memory of a process once `args["modules"]` are imported: resident, and the part
  of it that is not file-backed (heap, not shareable with another process)."""
  import importlib

  import psutil

  for module in args["modules"]:
    importlib.import_module(module)
  info = psutil.Process().memory_info()
  return {"rss_mib": info.rss / MIB, "anon_mib": (info.rss - info.shared) / MIB,
          "tensorflow": "tensorflow" in sys.modules}


def _cut(args: dict) -> dict:
  """Child: what a pool worker's task, the first shard (`scenes._convert_rows`: read, cut,
  encode, write), adds to a process that has imported what a worker imports (`scenes`, and
  `bigearthnet` for the pool's initializer); the peak is reset after the imports.
  `args["cache_bytes"]`: None, GDAL's block cache as `scenes` sets it; else that many bytes
  (rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64, which counts bytes)."""
  import rasterio
  from rasterio._env import get_gdal_config  # pylint: disable=no-name-in-module

  from simclr_distill.data import bigearthnet, scenes
  from simclr_distill.study_config import SceneConfig

  seen = []

  class Env(rasterio.Env):
    """rasterio.Env noting GDAL's cache setting (and overriding it with `cache_bytes`)."""

    def __init__(self, *a, **options):
      if args["cache_bytes"] is not None and "GDAL_CACHEMAX" in options:
        options["GDAL_CACHEMAX"] = args["cache_bytes"]
      super().__init__(*a, **options)

    def __enter__(self):
      entered = super().__enter__()
      seen.append(int(get_gdal_config("GDAL_CACHEMAX")))
      return entered

  rasterio.Env = Env  # _convert_rows looks it up when it runs
  bigearthnet.init_worker()  # one BLAS thread, as in the pool
  cfg = SceneConfig()
  scene = scenes.describe_scene(pathlib.Path(args["scene_dir"]) / SCENE, cfg)
  shards = scenes.plan_shards([scene], cfg, args["examples_per_shard"])
  rows = shards[0][1]
  output_dir = pathlib.Path(args["output_dir"])
  (output_dir / "records").mkdir(parents=True, exist_ok=True)
  shard = f"records/part-00000-of-{len(shards):05d}.tfrecord"
  before = common.memory_status()["VmRSS"]
  reset = common.reset_peak()
  start = time.process_time()
  meta = scenes._convert_rows(  # pylint: disable=protected-access
      (str(output_dir), shard, scene, cfg, rows, "benchmark"))
  cpu = time.process_time() - start
  peak = common.memory_status()["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {"added_mib": peak - before, "before_mib": before, "rows": len(rows),
          "positions": len(rows) * len(scene.grid(cfg.patch_size, cfg.step)[1]),
          "patches": len(meta["ids"]), "cpu_s": cpu, "block_mib": _block_bytes(scene, cfg) / MIB,
          "cache_bytes": seen[0] if seen else None, "intended_mb": scenes.GDAL_CACHE_MB,
          "tensorflow_after": "tensorflow" in sys.modules}


def _block_bytes(scene, cfg) -> int:
  """Bytes of the pixel arrays `scenes._windows` holds at once (native dtypes)."""
  from simclr_distill.data import scenes

  rows = (scenes.patch_rows_per_read(scene, cfg) - 1) * cfg.step + cfg.patch_size
  total = 0
  for layer in [*scene.bands, *([scene.mask] if scene.mask else [])]:
    with scenes._open(layer.path) as src:  # pylint: disable=protected-access
      itemsize = np.dtype(src.dtypes[layer.index - 1]).itemsize
    total += scene.width // layer.factor * -(-rows // layer.factor) * itemsize
  return total


CHILDREN = {"convert": _convert, "imports": _imports, "cut": _cut}


def _bytes(n: int | None) -> str:
  if n is None:
    return "(not set)"
  return f"{n / MIB:g} MiB" if n >= MIB else f"{n} byte{'s' if n != 1 else ''}"


def _run_child(args: dict, log_path: pathlib.Path) -> dict:
  out = subprocess.run([sys.executable, "-m", "benchmarks.scene_memory",
                        f"--child={json.dumps(args)}"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, check=False)
  log_path.write_text(out.stderr)
  if out.returncode:
    raise SystemExit(f"{args['kind']} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class TreePeaks:
  """The peaks of a process tree's memory, sampled."""

  rss_sum: float = 0.0  # bytes
  rss_sum_pool: float = 0.0  # the peak while pool workers ran
  pss_sum: float = 0.0
  processes: int = 0  # in the tree at the RSS-sum peak
  samples: int = 0
  pss_samples: int = 0
  by_pid: dict = dataclasses.field(default_factory=dict)  # pid -> [role, peak RSS]

  def sample(self, root, pss: bool) -> float:
    """Adds one sample of `root` and its descendants (RSS, and PSS when `pss`: reading it costs
    ~10 ms a TensorFlow process); returns the current RSS sum."""
    import psutil

    try:
      tree = [root, *root.children(recursive=True)]
    except psutil.Error:
      return 0.0
    rss_sum = pss_sum = 0
    workers = 0
    for proc in tree:
      try:
        rss = proc.memory_info().rss
        if pss:
          pss_sum += proc.memory_full_info().pss
      except psutil.Error:  # ended between the listing and the read
        continue
      rss_sum += rss
      entry = self.by_pid.setdefault(proc.pid, [self._role(proc, root), 0])
      entry[1] = max(entry[1], rss)
      workers += entry[0] == "worker"
    if rss_sum > self.rss_sum:
      self.rss_sum, self.processes = rss_sum, len(tree)
    if workers:
      self.rss_sum_pool = max(self.rss_sum_pool, rss_sum)
    self.samples += 1
    if pss:
      self.pss_sum = max(self.pss_sum, pss_sum)
      self.pss_samples += 1
    return rss_sum

  @staticmethod
  def _role(proc, root) -> str:
    if proc.pid == root.pid:
      return "main"
    try:
      command = " ".join(proc.cmdline())
    except Exception:  # pylint: disable=broad-except
      command = ""
    return "resource tracker" if "resource_tracker" in command else "worker"

  def peak(self, role: str) -> float:
    """The largest peak RSS of the processes of a role, bytes (0 if none)."""
    return max((rss for r, rss in self.by_pid.values() if r == role), default=0)


def measure(scene_dir: pathlib.Path, output_dir: pathlib.Path, workers: int,
            log_path: pathlib.Path) -> tuple[dict, TreePeaks, float]:
  """Runs the conversion in a child process while sampling its process tree; returns the
  child's figures, the peaks and the mean seconds between two RSS samples."""
  import psutil

  args = {"kind": "convert", "scene_dir": str(scene_dir), "output_dir": str(output_dir),
          "workers": workers, "examples_per_shard": FLAGS.examples_per_shard}
  peaks = TreePeaks()
  with open(log_path, "w") as log:
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.scene_memory",
                              f"--child={json.dumps(args)}"], stdout=subprocess.PIPE,
                             stderr=log, text=True)
    root = psutil.Process(child.pid)
    start = last = last_pss = time.perf_counter()
    while child.poll() is None:
      now = time.perf_counter()
      pss = now - last_pss >= PSS_INTERVAL
      last_pss = now if pss else last_pss
      now_rss = peaks.sample(root, pss)
      time.sleep(FLAGS.interval)
      if time.perf_counter() - last > 30:
        last = time.perf_counter()
        print(f"  {last - start:.0f} s: tree RSS {now_rss / MIB:.0f} MiB now, peak "
              f"{peaks.rss_sum / MIB:.0f} MiB", flush=True)
    elapsed = time.perf_counter() - start
    out = child.stdout.read()
  if child.returncode:
    raise SystemExit(f"the conversion failed (exit {child.returncode}):\n"
                     f"{log_path.read_text()[-3000:]}")
  return json.loads(out.strip().splitlines()[-1]), peaks, elapsed / max(peaks.samples, 1)


def breakdown(scene_dir: pathlib.Path, work: pathlib.Path) -> dict:
  """Where a worker's memory goes, each part in a fresh process: the imports; what a worker's
  task (the first shard) adds with GDAL's block cache as `scenes` sets it, and with the other
  setting (the `scenes.GDAL_CACHE_MB` MiB it means if it is set to less than 1 MiB, else off)."""
  parts = {}
  for name, modules in IMPORTS.items():
    parts[name] = _run_child({"kind": "imports", "modules": modules}, work / "imports.log")
  task = {"kind": "cut", "scene_dir": str(scene_dir),
          "examples_per_shard": FLAGS.examples_per_shard}
  parts["task"] = _run_child({**task, "output_dir": str(work / "shard_a"), "cache_bytes": None},
                             work / "cut.log")
  as_set = parts["task"]["cache_bytes"] or 0
  other = parts["task"]["intended_mb"] * MIB if as_set < MIB else 1
  parts["other cache"] = _run_child({**task, "output_dir": str(work / "shard_b"),
                                     "cache_bytes": other}, work / "cut.log")
  return parts


def main(argv):
  del argv
  common.quiet_tensorflow()
  if FLAGS.child:
    args = json.loads(FLAGS.child)
    print(json.dumps(CHILDREN[args["kind"]](args)))
    return
  size, workers = FLAGS.size, FLAGS.workers
  if size < 120 or size % 2:
    raise SystemExit(f"--size={size}: give an even side of at least one 120-pixel patch")
  work = pathlib.Path(tempfile.mkdtemp(prefix="bench_scene_memory_"))
  try:
    scene_dir = pathlib.Path(FLAGS.scene_dir) if FLAGS.scene_dir else work / "scenes"
    scene_dir.mkdir(parents=True, exist_ok=True)
    generated = generate(scene_dir, size, FLAGS.generate_workers)
    on_disk = sum(p.stat().st_size for p in (scene_dir / SCENE).iterdir()) / MIB
    print(f"converting with {workers} worker(s), sampling memory every {FLAGS.interval:g} s",
          flush=True)
    result, peaks, interval = measure(scene_dir, work / "prepared", workers, work / "child.log")
    parts = {}
    if FLAGS.breakdown:
      print("measuring the breakdown of a worker's memory", flush=True)
      parts = breakdown(scene_dir, work)
  finally:
    shutil.rmtree(work, ignore_errors=True)

  whole = (size * size * 10 * 2 + (size // 2) ** 2) / MIB
  rss, pss = peaks.rss_sum / MIB, peaks.pss_sum / MIB
  worker, main_peak = peaks.peak("worker") / MIB, peaks.peak("main") / MIB
  pool = sum(role == "worker" for role, _ in peaks.by_pid.values())  # 0: converted in-process
  tracker = peaks.peak("resource tracker") / MIB
  largest = max((v[1] for v in peaks.by_pid.values()), default=0) / MIB
  dropped = result["dropped"]
  wall = result["wall_s"]
  met = rss < TARGET_MIB
  h, w = result["size"]
  report = common.Report(f"converting a generated {h}x{w} Sentinel-2 scene, {workers} worker(s)")
  fig = lambda name, value, unit, scale="scene": report.figure(scale, name, value, unit)
  fig("grid positions (120x120 patches)", result["positions"], "")
  fig("patches kept", result["kept"], "")
  fig("dropped as no-data", dropped["nodata"], "")
  fig("dropped as cloudy", dropped["cloud"], "")
  fig("conversion wall time", wall, "s")
  fig("grid positions per second", result["positions"] / wall, "/s")
  fig("kept patches per second", result["kept"] / wall, "/s")
  fig("peak tree memory (sum of RSS)", rss, "MiB")
  if pool:
    fig("  of which the peak while the pool ran", peaks.rss_sum_pool / MIB, "MiB")
  fig("peak tree memory (sum of PSS, shared pages split)", pss, "MiB")
  fig("peak of the largest process (RSS)", largest, "MiB")
  if pool:
    fig("peak per pool worker (RSS, largest worker)", worker, "MiB")
  fig("peak of the main process (RSS)", main_peak, "MiB")
  fig("ru_maxrss: main process", result["main_maxrss_mib"], "MiB")
  fig("ru_maxrss: largest waited-for child (RUSAGE_CHILDREN; counts forks of the main too)",
      result["workers_maxrss_mib"], "MiB")
  fig("scene loaded whole (10 bands uint16 at 10 m + SCL)", whole, "MiB")
  fig("peak tree memory / scene loaded whole", rss / whole, "x")
  if parts:
    light, heavy, imports = (parts[k] for k in IMPORTS)
    task, other = parts["task"], parts["other cache"]
    worker_tf = imports["tensorflow"] or task["tensorflow_after"]
    tf_cost = heavy["rss_mib"] - light["rss_mib"]
    fig("a process after importing numpy + rasterio (RSS)", light["rss_mib"], "MiB", "breakdown")
    fig("  the same + TensorFlow (RSS)", heavy["rss_mib"], "MiB", "breakdown")
    fig("  of which anonymous (not file-backed: never shared)", heavy["anon_mib"], "MiB",
        "breakdown")
    fig(f"a process after importing what a worker imports (scenes, bigearthnet; TensorFlow "
        f"{'in' if imports['tensorflow'] else 'not in'} it) (RSS)", imports["rss_mib"], "MiB",
        "breakdown")
    fig(f"a worker's task (one shard: read, cut, encode, write) adds, GDAL cache "
        f"{_bytes(task['cache_bytes'])} as scenes sets it", task["added_mib"], "MiB", "breakdown")
    fig(f"  the same with GDAL's cache at {_bytes(other['cache_bytes'])}", other["added_mib"],
        "MiB", "breakdown")
    fig("  pixel block held at once (native dtypes)", task["block_mib"], "MiB", "breakdown")
    fig(f"  CPU s for the shard ({task['positions']} positions), GDAL cache "
        f"{_bytes(task['cache_bytes'])}", task["cpu_s"], "s", "breakdown")
    fig(f"  CPU s for the shard, GDAL cache {_bytes(other['cache_bytes'])}", other["cpu_s"],
        "s", "breakdown")
    note = (f"a worker holds ~{imports['rss_mib']:.0f} MiB of imports before its first task "
            f"({'TensorFlow included' if worker_tf else 'without TensorFlow'}; numpy + rasterio, "
            f"what reading and cutting need: {light['rss_mib']:.0f} MiB; TensorFlow would add "
            f"{tf_cost:.0f}) and its task (the first shard: {task['rows']} patch rows, "
            f"{task['positions']} positions) adds ~{task['added_mib']:.0f} MiB")
    if pool:
      note += (f"; a pool worker peaked at {worker:.0f} MiB, "
               f"{worker - imports['rss_mib'] - task['added_mib']:+.0f} MiB beyond these (a "
               "spawned worker's start-up, heap growth over successive shards)")
      if worker_tf:
        note += (f"; workers without TensorFlow would put the tree near "
                 f"{rss - pool * tf_cost:.0f} MiB (the peak less {pool} x {tf_cost:.0f})")
    else:
      note += "; no pool: the main process converted (prepare_scenes runs one worker in-process)"
    report.notes.append(note)
    if (task["cache_bytes"] or 0) < MIB:
      report.notes.append(
          f"scenes sets GDAL's block cache to {_bytes(task['cache_bytes'])}, not MiB (rasterio "
          "takes an integer GDAL_CACHEMAX as bytes): the cache is off, and every patch-row read "
          f"decodes its tiles again; at the intended {_bytes(other['cache_bytes'])} a task "
          f"adds {other['added_mib'] - task['added_mib']:+.0f} MiB and "
          f"{other['cpu_s'] - task['cpu_s']:+.2f} CPU s")
    else:
      report.notes.append(
          f"GDAL's block cache ({_bytes(task['cache_bytes'])}) costs a task "
          f"{task['added_mib'] - other['added_mib']:+.0f} MiB and "
          f"{task['cpu_s'] - other['cpu_s']:+.2f} CPU s against none")
  report.notes.append(
      f"scene: {SCENE}, {len(BANDS_10M)} bands {size}x{size} + {len(BANDS_20M)} bands and SCL "
      f"{size // 2}x{size // 2}, 512-pixel tiles, zlib, {on_disk:.0f} MiB on disk"
      + (f", generated in {generated:.0f} s" if generated else ", reused"))
  report.notes.append(
      f"{result['positions']} grid positions -> {result['kept']} patches kept, "
      f"{dropped['nodata']} dropped as no-data, {dropped['cloud']} as cloudy; "
      f"{result['shards']} shards, {result['written_mib']:.0f} MiB written, "
      f"{result['rejected']} rejected")
  report.notes.append(
      f"{peaks.samples} RSS samples of the process tree, one every {interval:.3f} s on average "
      f"({peaks.pss_samples} with PSS); at the RSS-sum peak the tree held {peaks.processes} "
      f"process(es); each one's peak: main {main_peak:.0f}"
      + (f", {pool} worker(s) {worker:.0f} at most, resource tracker {tracker:.0f}" if pool else "")
      + f" MiB; the main process held {result['imported_rss_mib']:.0f} "
      "MiB once its imports were done")
  report.notes.append(
      f"peak tree RSS {rss:.0f} MiB vs the {TARGET_MIB} MiB (2 GiB) target: "
      f"{'met' if met else 'MISSED'} ({rss / whole:.2f}x the scene loaded whole, "
      f"{whole:.0f} MiB)")
  report.print()


if __name__ == "__main__":
  app.run(main)
