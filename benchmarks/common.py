"""What the performance benchmarks share: scales, data, timing and the closing table.

Every benchmark compares two ways of doing the same work in one process, on the same data,
with the same models, and prints the figures last. Repetitions of the two sides alternate
(A B A B ...), after one untimed warm-up of each (tracing, file cache), so drift on a shared
machine hits both alike; the verdict is the ratio of the medians. Printed beside it: the
best-of ratio (fastest repetition of each side) and the ratio of images per CPU-second of this
process. The CPU-time figure matters on a virtual machine whose host pauses it now and then:
on the 2-core development VM some repetitions take ~4 s longer with the same CPU time used
(the process is not running, whatever it runs), which moves wall-clock medians by chance.

Scales (`--scales`):
  paper  ResNet50 student, ResNet152 teacher, 120x120x10 BigEarthNet-S2 patches (synthetic
         uint16 reflectances through the real conversion, `bigearthnet.prepare_from_patches`),
         a small batch; what the 180-run matrix trains, at a size a CPU can time.
  small  the small CPU students (cnn student, cnn teacher) on the embedded digits (8x8x1), the
         demo's setting, where fixed per-step and per-call costs weigh most.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable

import numpy as np
from absl import flags

flags.DEFINE_list("scales", ["small", "paper"], "Scales to run: small, paper (see benchmarks/common.py).")
flags.DEFINE_integer("repeats", 7, "Timed repetitions of each side (the median is reported).")
flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Scale:
  """One benchmark setting.

  Attributes:
    name: "paper" or "small".
    student: student architecture.
    teacher: teacher architecture.
    batch_size: examples per step.
    steps: timed training steps per repetition.
    examples: examples in the data set (labelling and reading pass over all of them).
    width: width of the small architectures (None for keras.applications).
    head: student head.
  """

  name: str
  student: str
  teacher: str
  batch_size: int
  steps: int
  examples: int
  width: int | None = None
  head: str = "study"
  steps_per_execution: int = 1


SCALES = {
    "paper": Scale("paper", student="ResNet50", teacher="ResNet152", batch_size=8, steps=6,
                   examples=160),
    "small": Scale("small", student="cnn", teacher="cnn", batch_size=64, steps=200,
                   examples=1797 * 40, width=32, head="pooled", steps_per_execution=4),
}


def scales() -> list[Scale]:
  unknown = [s for s in FLAGS.scales if s not in SCALES]
  if unknown:
    raise SystemExit(f"--scales: unknown scale(s) {', '.join(unknown)}; known: {', '.join(SCALES)}")
  return [SCALES[s] for s in FLAGS.scales]


def quiet_tensorflow() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(title: str, run_scale: Callable[[Scale, pathlib.Path, "Report"], None]):
  """The `main` of a benchmark: `run_scale(scale, workdir, report)` for each of `--scales`
  in a temporary directory (removed after), then the report."""

  def run(argv):
    del argv
    quiet_tensorflow()
    report = Report(title)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_"))
    try:
      for scale in scales():
        run_scale(scale, work, report)
    finally:
      shutil.rmtree(work, ignore_errors=True)
    report.print()

  return run


def synthetic_images(scale: Scale) -> np.ndarray:
  """Standard-normal images of the scale's shape (paper 120x120x10, small 8x8x1), 16
  batches or 512 images, whichever is more."""
  shape = (120, 120, 10) if scale.name == "paper" else (8, 8, 1)
  count = max(scale.batch_size * 16, 512)
  return np.random.default_rng(0).standard_normal((count, *shape), np.float32)


def endless(images: np.ndarray, targets, batch_size: int):
  """(images, targets) from memory, repeated, in full batches."""
  import tensorflow as tf

  return tf.data.Dataset.from_tensor_slices((images, targets)).repeat().batch(
      batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def synthetic_patches(count: int, seed: int = 0, positive_every: int = 5):
  """Yields (name, uint16 image 120x120x10, multi-hot) like `bigearthnet.read_patch`, every
  `positive_every`-th one irrigated."""
  from simclr_distill.data import bigearthnet

  rng = np.random.default_rng(seed)
  irrigated = bigearthnet.CLASSES.index("Permanently irrigated land")
  for i in range(count):
    multi_hot = np.zeros(len(bigearthnet.CLASSES), np.int64)
    multi_hot[irrigated if i % positive_every == 0 else 0] = 1
    image = rng.integers(0, 10_000, (bigearthnet.SIZE, bigearthnet.SIZE, len(bigearthnet.BANDS)),
                         dtype=np.uint16)
    yield f"S2B_BENCH_{i:07d}", image, multi_hot


def prepared_data(scale: Scale, root: pathlib.Path, examples: int | None = None,
                  examples_per_shard: int = 64):
  """The scale's prepared data directory under `root` (written on first use)."""
  from simclr_distill.data import bigearthnet, records

  count = examples or scale.examples
  if scale.name == "small":
    return tiled_digits(root / f"digits_{count}", count)
  out = root / f"bigearthnet_{count}"
  if (out / records.MANIFEST).is_file():
    return records.PreparedData.open(out)
  bigearthnet.prepare_from_patches(synthetic_patches(count), out, source="synthetic",
                                   examples_per_shard=examples_per_shard, percents=(10, 100))
  return records.PreparedData.open(out)


def tiled_digits(out: pathlib.Path, count: int, num_shards: int = 8):
  """The embedded digits repeated to `count` examples (ids suffixed with the copy), with the
  digits' split lists repeated alike: data large enough that fixed per-pass costs are
  measured in proportion."""
  from simclr_distill import fileio
  from simclr_distill.data import digits, records
  from simclr_distill.data import splits as splits_lib

  if (out / records.MANIFEST).is_file():
    return records.PreparedData.open(out)
  source = digits.prepare_digits(out.parent / "digits")
  ids, images, classes = digits.load_digits_arrays()
  copies = -(-count // len(ids))
  rows = [(f"{ids[i]}-{c}", i) for c in range(copies) for i in range(len(ids))][:count]
  labels = {f"label_{s}": digits.scheme_labels(classes, s) for s in digits.SCHEMES}
  labels["class"] = classes
  shards = [records.shard_name(i, num_shards) for i in range(num_shards)]
  for k, shard in enumerate(shards):
    records.write_shard(out / shard, (records.encode_example(
        name, images[i], {key: v[i] for key, v in labels.items()}) for name, i in rows[k::num_shards]))
  fileio.write_text(out / "ids.txt", "".join(
      f"{name}\n" for k in range(num_shards) for name, _ in rows[k::num_shards]))
  kept = {name for name, _ in rows}
  for scheme in digits.SCHEMES:
    lists = source.splits(scheme)
    splits_lib.write_split_lists(out / "splits" / scheme, {
        split: [f"{i}-{c}" for c in range(copies) for i in members if f"{i}-{c}" in kept]
        for split, members in lists.items()})
  fileio.write_json(out / records.MANIFEST, {**source.manifest, "name": f"digits_x{copies}",
                                             "num_examples": len(rows), "shards": shards})
  return records.PreparedData.open(out)


def in_memory(data, ids=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(ids, images, binary labels) of `data` read once through its reader, as numpy."""
  import tensorflow as tf

  key = data.label_key("basic", "binary")
  ids_out, images, labels = [], [], []
  for batch in data.examples(ids).batch(256).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    ids_out.append(batch["id"].astype(str))
    images.append(batch["image"])
    labels.append(batch[key])
  return np.concatenate(ids_out), np.concatenate(images), np.concatenate(labels).astype(np.float32)


def build(scale: Scale, arch: str, image_shape, seed: int = 0):
  """A network of the scale (the same weights for the same seed)."""
  import keras

  from simclr_distill import models

  keras.utils.set_random_seed(seed)
  return models.build_model(arch, image_shape, 1, head=scale.head, width=scale.width,
                            dropout=0.25)


def stage_teacher(model, work: pathlib.Path, teacher_id: str, sample: np.ndarray):
  """`model` as the stages run a teacher: saved as a zoo checkpoint, then loaded and checked by
  `teachers.load_teacher` (with its default BatchNormalization folding)."""
  from simclr_distill import teachers

  path = work / f"{teacher_id}.keras"
  model.save(path)
  entry = teachers.TeacherEntry(teacher_id=teacher_id, labeling="basic", split_percent=10,
                                path=path.name, output="logits")
  return teachers.load_teacher(entry, work, image_shape=sample.shape[1:],
                               num_outputs=model.outputs[0].shape[-1], sample=sample)


def fit_side(model, dataset, scale: Scale) -> Callable[[], tuple[int, float, float]]:
  """A side that times the second of two `fit` epochs of `scale.steps` steps on an endless
  dataset: Keras keeps one iterator across the epochs of a `fit` with `steps_per_epoch`, so the
  first epoch absorbs the pipeline's start (iterator, shuffle buffer), as the first steps of a
  real run do, and the second is the steady state. Returns (images, wall s, CPU s)."""
  import keras

  class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.start = (time.perf_counter(), _cpu_seconds())

    def on_epoch_end(self, epoch, logs=None):
      self.last = (time.perf_counter() - self.start[0], _cpu_seconds() - self.start[1])

  timer = EpochTimer()

  def run() -> tuple[int, float, float]:
    model.fit(dataset, epochs=2, steps_per_epoch=scale.steps, verbose=0, callbacks=[timer])
    return (scale.steps * scale.batch_size, *timer.last)

  return run


def same_loss(report: "Report", scale: str, losses: dict[str, float], rtol: float = 1e-4) -> None:
  """Records each side's loss on the same batch from the same initial weights, next to the
  timing, and stops the benchmark if they differ: a ratio is only like for like when both
  sides compute the same loss on the same data.

  Raises:
    SystemExit: naming the sides whose losses differ.
  """
  for name, value in losses.items():
    report.figure(scale, f"loss on one batch before timing: {name}", value, "")
  values = list(losses.values())
  if not np.allclose(values, values[0], rtol=rtol, atol=1e-6):
    raise SystemExit(f"[{scale}] the sides compute different losses on the same batch "
                     f"({', '.join(f'{k}={v:.6g}' for k, v in losses.items())}): the timing would "
                     "not compare like with like")
  print(f"[{scale}] same loss on one batch: " + ", ".join(f"{k}={v:.6f}" for k, v in losses.items()),
        flush=True)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Rates:
  """Images per second of wall-clock time and per second of this process's CPU time."""

  wall: dict[str, list[float]]
  cpu: dict[str, list[float]]


def alternate(sides: dict[str, Callable[[], int | tuple[int, float, float]]], repeats: int,
              warmup: int = 1) -> Rates:
  """Calls each side `warmup` times untimed, then `repeats` times in turn; returns each side's
  rates. A side returns the images it processed (the call is timed), or (images, wall
  seconds, CPU seconds) of the part of the call it timed itself."""
  for name, fn in sides.items():
    for _ in range(warmup):
      fn()
      print(f"  warmed up {name}", flush=True)
  rates = Rates({name: [] for name in sides}, {name: [] for name in sides})
  for r in range(repeats):
    for name, fn in sides.items():
      wall, cpu = time.perf_counter(), _cpu_seconds()
      out = fn()
      images, wall, cpu = out if isinstance(out, tuple) else (
          out, time.perf_counter() - wall, _cpu_seconds() - cpu)
      rates.wall[name].append(images / wall)
      rates.cpu[name].append(images / max(cpu, 1e-9))
    print(f"  repetition {r + 1}/{repeats}: " + ", ".join(
        f"{n}={v[-1]:.2f}/s" for n, v in rates.wall.items()), flush=True)
  return rates


@dataclasses.dataclass
class Report:
  """The figures of one benchmark, printed as a table at the end."""

  title: str
  rows: list[dict] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def ratio(self, scale: str, name: str, rates: Rates, ours: str, reference: str,
            target: float | None, unit: str = "images/s") -> float:
    """Records ours/reference: the median wall-clock rates (the verdict), the best-of ratio, and
    the ratio of images per CPU-second (what each side costs, whatever the host lets run)."""
    a, b = statistics.median(rates.wall[ours]), statistics.median(rates.wall[reference])
    ratio = a / b
    self.rows.append({
        "scale": scale, "measure": name, "ours": a, "reference": b, "unit": unit, "ratio": ratio,
        "best_ratio": max(rates.wall[ours]) / max(rates.wall[reference]),
        "cpu_ratio": statistics.median(rates.cpu[ours]) / statistics.median(rates.cpu[reference]),
        "target": target, "met": None if target is None else bool(ratio >= target),
        "ours_all": rates.wall[ours], "reference_all": rates.wall[reference]})
    return ratio

  def figure(self, scale: str, name: str, value: float, unit: str) -> None:
    self.rows.append({"scale": scale, "measure": name, "value": value, "unit": unit})

  def print(self) -> None:
    timed = any("ratio" in row for row in self.rows)
    print(f"\n== {self.title} ==" + (f"  (median of {FLAGS.repeats} repetitions)" if timed else "")
          + f"  [{os.cpu_count()} CPU core(s), python {sys.version.split()[0]}]")
    for row in self.rows:
      if "ratio" in row:
        verdict = "" if row["target"] is None else (
            f"  target >= {row['target']:.2f}: {'met' if row['met'] else 'MISSED'}")
        print(f"[{row['scale']}] {row['measure']}: {row['ours']:.2f} vs {row['reference']:.2f} "
              f"{row['unit']} -> ratio {row['ratio']:.3f}{verdict} (best-of "
              f"{row['best_ratio']:.3f}, per CPU-second {row['cpu_ratio']:.3f})")
      else:
        print(f"[{row['scale']}] {row['measure']}: {row['value']:.4g} {row['unit']}")
    for note in self.notes:
      print(f"note: {note}")
    if FLAGS.json:
      pathlib.Path(FLAGS.json).write_text(json.dumps({"title": self.title, "rows": self.rows,
                                                      "notes": self.notes}, indent=1))


def memory_status() -> dict[str, float]:
  """VmRSS and VmHWM of this process, MiB."""
  text = pathlib.Path("/proc/self/status").read_text()
  return {k: int(v) / 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def reset_peak() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
  try:
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    return True
  except OSError:
    return False
