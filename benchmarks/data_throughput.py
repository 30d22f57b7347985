"""Conversion and reading throughput of the BigEarthNet-S2 data layer on generated patches.

  python -m benchmarks.data_throughput --patches=400 --workers=1,2

Generates full-size synthetic patches (12 GeoTIFF bands: 10 m 120x120, 20 m 60x60, 60 m 20x20,
uint16, plus a labels JSON), converts them with `stages.prepare`'s library path at each worker
count, then streams the records through the training reader (standardise, batch 32). Prints
patches/s, patches/s per core, examples/s, and the projected time for the full 590,326-patch
archive on 2 and 16 cores (per-core rate times cores: conversion is embarrassingly parallel
over shards, reading is limited by the slower of disk and parsing).
"""

import json
import pathlib
import shutil
import tempfile
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("patches", 400, "Generated patches.")
flags.DEFINE_list("workers", ["1", "2"], "Worker counts to time the conversion with.")
flags.DEFINE_integer("read_epochs", 3, "Passes over the records when timing the reader.")
FLAGS = flags.FLAGS

FULL_ARCHIVE = 590_326
ALL_BANDS = {"B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60, "B07": 60,
             "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60}


def generate(root: pathlib.Path, count: int) -> None:
  import tifffile

  rng = np.random.default_rng(0)
  for i in range(count):
    name = f"S2X_BENCH_{i:06d}"
    folder = root / name
    folder.mkdir(parents=True)
    for band, side in ALL_BANDS.items():
      tifffile.imwrite(folder / f"{name}_{band}.tif",
                       rng.integers(0, 10_000, (side, side), dtype=np.uint16))
    labels = ["Permanently irrigated land"] if i % 10 == 0 else ["Pastures"]
    (folder / f"{name}_labels_metadata.json").write_text(json.dumps({"labels": labels}))


def main(argv):
  del argv
  from simclr_distill.data import bigearthnet, records

  work = pathlib.Path(tempfile.mkdtemp(prefix="bench_data_"))
  try:
    archive = work / "archive"
    start = time.perf_counter()
    generate(archive, FLAGS.patches)
    print(f"generated {FLAGS.patches} patches in {time.perf_counter() - start:.1f} s")
    rates = {}
    for workers in map(int, FLAGS.workers):
      out = work / f"out_{workers}"
      start = time.perf_counter()
      bigearthnet.prepare_archive(archive, out, examples_per_shard=50, workers=workers)
      seconds = time.perf_counter() - start
      rates[workers] = FLAGS.patches / seconds
    data = records.PreparedData.open(out)
    ds = data.examples().batch(32).prefetch(-1)
    for _ in ds:  # warm-up: file cache and tf.data graph
      pass
    start = time.perf_counter()
    for _ in range(FLAGS.read_epochs):
      for _ in ds:
        pass
    read_rate = FLAGS.read_epochs * FLAGS.patches / (time.perf_counter() - start)
    shard_bytes = sum((out / s).stat().st_size for s in data.shards)
    print("\n== data throughput ==")
    for workers, rate in rates.items():
      print(f"conversion, {workers} worker(s): {rate:.1f} patches/s ({rate / workers:.1f} per core)")
    # Conservative: the per-core rate at the most workers (the parent, I/O and the page
    # cache share the cores with them).
    per_core = rates[max(rates)] / max(rates)
    for cores in (2, 16):
      print(f"projected full archive ({FULL_ARCHIVE:,} patches) on {cores} cores: "
            f"{FULL_ARCHIVE / (per_core * cores) / 3600:.2f} h (at {per_core:.1f} patches/s/core)")
    if len(rates) > 1:
      w = sorted(rates)
      print(f"scaling {w[0]}->{w[-1]} workers: {rates[w[-1]] / rates[w[0]]:.2f}x")
    print(f"reader (standardise, batch 32): {read_rate:.0f} examples/s; full archive pass: "
          f"{FULL_ARCHIVE / read_rate / 60:.1f} min")
    print(f"records: {shard_bytes / FLAGS.patches / 1024:.0f} KiB/patch; full archive "
          f"{shard_bytes / FLAGS.patches * FULL_ARCHIVE / 2**30:.0f} GiB")
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
