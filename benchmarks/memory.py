"""Peak host memory of the data conversion and of labelling, at two data sizes.

  python -m benchmarks.memory [--sizes=400,1600]

Each measurement runs in a fresh Python process (peak resident memory, `ru_maxrss`, of the
process and its worker processes) on synthetic full-size BigEarthNet-S2 patches:
  conversion (archive)   `bigearthnet.prepare_archive`: GeoTIFF folders -> TFRecords, 1 worker;
  conversion (stream)    `bigearthnet.prepare_from_patches`: an in-order patch stream (the
                         TFDS path) -> TFRecords, shards of 1000 patches;
  labelling              `labelling.label_with_teacher` with a small cnn teacher (the model's
                         own memory is the same at any data size) over the converted records.
Memory "stays flat" when the larger size's peak is within 10% (+64 MiB) of the smaller's.
"""

from __future__ import annotations

import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile

from absl import app, flags

from benchmarks import common

flags.DEFINE_list("sizes", ["400", "1600"], "Two data sizes, in patches.")
flags.DEFINE_string("child", None, "Internal: run one measurement (part:size:workdir) and print it.")
FLAGS = flags.FLAGS

PARTS = ("conversion (archive)", "conversion (stream)", "labelling")
FLAT_SLACK = 1.10
FLAT_MIB = 64


def _peak_mib() -> float:
  own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return max(own, children) / 1024  # KiB on Linux


def _child(part: str, size: int, work: pathlib.Path) -> dict:
  from benchmarks.data_throughput import generate

  if part == "conversion (archive)":
    from simclr_distill.data import bigearthnet

    archive = work / f"archive_{size}"
    generate(archive, size)
    before = _peak_mib()
    bigearthnet.prepare_archive(archive, work / f"archive_out_{size}", workers=1,
                                percents=(10, 100))
  elif part == "conversion (stream)":
    from simclr_distill.data import bigearthnet

    before = _peak_mib()
    bigearthnet.prepare_from_patches(common.synthetic_patches(size), work / f"stream_out_{size}",
                                     source="synthetic", percents=(10, 100))
  else:
    import keras

    from simclr_distill import labelling, models, teachers

    data = common.prepared_data(common.SCALES["paper"], work, examples=size, examples_per_shard=200)
    keras.utils.set_random_seed(0)
    model = models.build_model("cnn", data.image_shape, 1, head="pooled", width=16)
    entry = teachers.TeacherEntry(teacher_id="mem", labeling="basic", split_percent=10, path="-")
    teacher = teachers.Teacher(entry=entry, model=model, output="logits")
    checkpoint = work / "teacher.id"
    checkpoint.write_text("mem")
    before = _peak_mib()
    labelling.label_with_teacher(teacher, checkpoint, data, work / f"labels_{size}", batch_size=64)
  return {"part": part, "size": size, "peak_mib": _peak_mib(), "before_mib": before}


def main(argv):
  del argv
  if FLAGS.child:
    part, size, work = FLAGS.child.split(":", 2)
    print(json.dumps(_child(part, int(size), pathlib.Path(work))))
    return
  sizes = sorted(int(s) for s in FLAGS.sizes)
  work = pathlib.Path(tempfile.mkdtemp(prefix="bench_memory_"))
  results = {}
  try:
    for part in PARTS:
      for size in sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.memory", f"--child={part}:{size}:{work}"],
                             capture_output=True, text=True, check=False)
        if out.returncode:
          raise SystemExit(f"{part} at {size} patches failed:\n{out.stderr[-3000:]}")
        results[(part, size)] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {part}, {size} patches: peak {results[(part, size)]['peak_mib']:.0f} MiB", flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  small, large = sizes[0], sizes[-1]
  report = common.Report(f"peak host memory (MiB), {small} vs {large} patches")
  for part in PARTS:
    a, b = results[(part, small)]["peak_mib"], results[(part, large)]["peak_mib"]
    flat = b <= a * FLAT_SLACK + FLAT_MIB
    report.figure("paper", f"{part}, {small} patches", a, "MiB")
    report.figure("paper", f"{part}, {large} patches", b, "MiB")
    report.notes.append(f"{part}: x{b / a:.2f} the memory for x{large / small:.1f} the data: "
                        f"{'flat' if flat else 'GROWS'}")
  report.print()


if __name__ == "__main__":
  app.run(main)
