"""BigEarthNet-S2 conversion on the six real patches shipped by bigearthnet-common 2.8.0.

None of the six is irrigated, so the tests add SYNTHETIC positives: copies of a real patch
whose labels JSON the test rewrites (named SYNTHETIC_*, never mistaken for archive data).
"""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tifffile

from simclr_distill.data import bigearthnet as B, records
from tests.conftest import REPO
from tests.test_stages import ENV


def _example_tarball() -> pathlib.Path:
  spec = importlib.util.find_spec("bigearthnet_common")
  if spec is None:
    pytest.skip("bigearthnet-common==2.8.0 is not installed (pip install -e .[dev])")
  return pathlib.Path(spec.submodule_search_locations[0]) / "BigEarthNet-S2-Example.tar.bz2"


def _copy_patch(source: pathlib.Path, dest_root: pathlib.Path, name: str, labels) -> pathlib.Path:
  dest = dest_root / name
  dest.mkdir()
  for f in source.iterdir():
    shutil.copyfile(f, dest / f.name.replace(source.name, name))
  meta = dest / f"{name}_labels_metadata.json"
  meta.write_text(json.dumps({**json.loads(meta.read_text()), "labels": labels}))
  return dest


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  root = tmp_path_factory.mktemp("archive")
  with tarfile.open(_example_tarball()) as tar:
    tar.extractall(root, filter="data")
  archive = root / "BigEarthNet-S2-Example"
  real = sorted(p for p in archive.iterdir() if p.is_dir())
  assert len(real) == 6
  _copy_patch(real[0], archive, "SYNTHETIC_irrigated_1", ["Permanently irrigated land"])
  _copy_patch(real[1], archive, "SYNTHETIC_irrigated_2", ["Permanently irrigated land", "Pastures"])
  _copy_patch(real[2], archive, "SYNTHETIC_rice_1", ["Rice fields"])
  _copy_patch(real[3], archive, "SYNTHETIC_olives_1", ["Olive groves", "Vineyards"])
  bad = _copy_patch(real[4], archive, "SYNTHETIC_bad_missing_band", ["Pastures"])
  (bad / "SYNTHETIC_bad_missing_band_B8A.tif").unlink()
  bad = _copy_patch(real[5], archive, "SYNTHETIC_bad_json", ["Pastures"])
  (bad / "SYNTHETIC_bad_json_labels_metadata.json").write_text('{"labels": ["Past')
  return archive


@pytest.fixture(scope="module")
def prepared(archive, tmp_path_factory):
  out = tmp_path_factory.mktemp("prepared")
  proc = subprocess.run(
      [sys.executable, "-m", "stages.prepare", f"--archive_dir={archive}", f"--output_dir={out}",
       "--examples_per_shard=3", "--workers=2"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc


def test_conversion_reports_and_lists_rejects_with_reasons(prepared):
  out, proc = prepared
  assert "prepared 10 patches" in proc.stdout and "2 rejected" in proc.stdout
  rejects = pd.read_csv(out / "rejects.csv").set_index("patch")["reason"].to_dict()
  assert set(rejects) == {"SYNTHETIC_bad_missing_band", "SYNTHETIC_bad_json"}
  assert "missing band B8A" in rejects["SYNTHETIC_bad_missing_band"]
  assert "bad labels JSON" in rejects["SYNTHETIC_bad_json"]
  assert "shard records/part-" in proc.stderr and "patches/s" in proc.stderr


def _read_all(out, **options):
  data = records.PreparedData.open(out, **options)
  return data, {ex["id"].numpy().decode(): ex for ex in data.examples()}


def test_records_match_the_source_geotiffs_after_the_documented_transform(prepared, archive):
  out, _ = prepared
  data, raw = _read_all(out, standardize=False)
  assert data.image_shape == (120, 120, 10) and len(raw) == 10
  _, standardized = _read_all(out)
  mean = np.array([B.PUBLISHED_MEAN[b] for b in B.BANDS], np.float32)
  std = np.array([B.PUBLISHED_STD[b] for b in B.BANDS], np.float32)
  for name in [p.name for p in sorted(archive.iterdir()) if not p.name.startswith("SYNTHETIC")]:
    image = raw[name]["image"].numpy()
    assert image.dtype == np.float32 and image.shape == (120, 120, 10)
    for k, band in enumerate(B.BANDS):
      source = tifffile.imread(archive / name / f"{name}_{band}.tif").astype(np.float64)
      if band in B.BANDS_10M:
        np.testing.assert_array_equal(image[..., k], source)
      else:  # an independent bicubic resize: TensorFlow's own, then the documented rounding
        resized = tf.image.resize(source[None, ..., None], (120, 120), method="bicubic").numpy()
        np.testing.assert_allclose(image[..., k], np.clip(np.rint(resized[0, ..., 0]), 0, 65535), atol=1)
    np.testing.assert_allclose(standardized[name]["image"].numpy(), (image - mean) / std, rtol=1e-5, atol=1e-5)


def test_labels_match_the_json_files_and_the_schemes(prepared, archive):
  out, _ = prepared
  _, examples = _read_all(out)
  for name, ex in examples.items():
    labels = json.loads((archive / name / f"{name}_labels_metadata.json").read_text())["labels"]
    hot = ex["labels"].numpy()
    assert [B.CLASSES[i] for i in np.flatnonzero(hot)] == sorted(labels, key=B.CLASS_INDEX.get)
  basic = {n for n, ex in examples.items() if int(ex["label_basic"])}
  expanded = {n for n, ex in examples.items() if int(ex["label_expanded"])}
  assert basic == {"SYNTHETIC_irrigated_1", "SYNTHETIC_irrigated_2"}
  assert expanded == basic | {"SYNTHETIC_rice_1", "SYNTHETIC_olives_1"}


def test_manifest_records_splits_stats_and_shapes(prepared):
  out, _ = prepared
  m = json.loads((out / records.MANIFEST).read_text())
  assert m["num_examples"] == 10 and m["num_rejected"] == 2 and m["image_dtype"] == "uint16"
  assert m["band_names"] == list(B.BANDS) and len(m["shards"]) == 4
  assert m["splits"]["basic"]["positive_rate"] == pytest.approx(0.2)
  sizes = m["splits"]["expanded"]["sizes"]
  assert sizes["train_100"] + sizes["val_100"] + sizes["test"] == 8  # 4 positives + 4 negatives
  data = records.PreparedData.open(out)
  assert set(data.splits("basic")["test"]) <= set(data.ids())


def test_band_subsets_and_resizing(prepared):
  out, _ = prepared
  data, rgb = _read_all(out, bands=["rgb"], image_size=64, standardize=False)
  _, full = _read_all(out, standardize=False)
  assert data.image_shape == (64, 64, 3)
  name = next(iter(rgb))
  expected = tf.image.resize(full[name]["image"][..., :3], (64, 64), method="bilinear").numpy()
  np.testing.assert_allclose(rgb[name]["image"].numpy(), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="no band\\(s\\) B13"):
    records.PreparedData.open(out, bands=["B13"])


def test_interrupted_conversion_resumes_to_identical_output(archive, prepared, tmp_path):
  out, _ = prepared
  # The state a kill leaves: finished shards (each written atomically with its metadata last),
  # a half-written temporary file, and no manifest.
  shutil.copytree(out, tmp_path / "resumed")
  resumed = tmp_path / "resumed"
  (resumed / records.MANIFEST).unlink()
  for shard in json.loads((out / records.MANIFEST).read_text())["shards"][2:]:
    (resumed / shard).unlink()
    (resumed / (shard + ".meta.json")).unlink()
  (resumed / "records" / ".part-00002-of-00004.tfrecord.abc.tmp").write_bytes(b"half")
  kept = (resumed / "records/part-00000-of-00004.tfrecord").stat().st_mtime_ns
  B.prepare_archive(archive, resumed, examples_per_shard=3, workers=1)
  assert (resumed / "records/part-00000-of-00004.tfrecord").stat().st_mtime_ns == kept
  assert not list((resumed / "records").glob(".*.tmp*"))  # the half-written file is cleared
  for shard in json.loads((out / records.MANIFEST).read_text())["shards"]:
    assert (resumed / shard).read_bytes() == (out / shard).read_bytes(), shard
  for name in ("ids.txt", "rejects.csv", "splits/basic/test", "splits/expanded/train_100"):
    assert (resumed / name).read_bytes() == (out / name).read_bytes(), name


def test_importing_the_study_split_lists(prepared, reference_dir, tmp_path):
  out, _ = prepared
  copy = tmp_path / "imported"
  shutil.copytree(out, copy)
  metas = [json.loads((copy / (s + ".meta.json")).read_text())
           for s in json.loads((copy / records.MANIFEST).read_text())["shards"]]
  # One of the six real patches is in the study's basic train_100 list; the study's other
  # 26,795 distinct listed names are not in this small archive and are counted as missing.
  data = B.finalize(copy, metas, source="test", split_dirs={"basic": reference_dir / "balanced_splits"})
  basic = data.splits("basic")
  assert basic["train_100"] == ["S2A_MSIL2A_20170617T113321_36_85"]
  assert sum(map(len, basic.values())) == 1
  assert "(26795 listed patches not in the archive)" in data.manifest["splits"]["basic"]["origin"]
  assert "generated" in data.manifest["splits"]["expanded"]["origin"]
  with pytest.raises(ValueError, match="name none of the 10 converted patches"):
    B.finalize(copy, metas, source="test",
               split_dirs={"expanded": reference_dir / "balanced_splits_expanded"})


def test_bicubic_matrix_is_tensorflows_bicubic():
  x = np.random.default_rng(0).integers(0, 10000, (60, 60)).astype(np.float64)
  ours = B.bicubic_matrix(60, 120) @ x @ B.bicubic_matrix(60, 120).T
  theirs = tf.image.resize(x[None, ..., None], (120, 120), method="bicubic").numpy()[0, ..., 0]
  np.testing.assert_allclose(ours, theirs, atol=5e-3)


def test_missing_archive_is_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match="no archive directory"):
    B.list_patches(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="holds no patch folders"):
    B.list_patches(tmp_path)


def test_stage3_distils_on_the_prepared_bigearthnet_records(prepared, tmp_path):
  out, _ = prepared
  proc = subprocess.run(
      [sys.executable, "-m", "stages.distill", "--preset=smoke", f"--workdir={tmp_path}",
       f"--data_dir={out}", "--schemes=expanded", "--split_percents=100", "--archs=cnn",
       "--optimizers=adam", "--nobaseline", "--noearly_stopping", "--image_size=32", "--epochs=2"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = pd.read_parquet(tmp_path / "results.parquet")
  row = table[table["stage"] == "distill"].iloc[0]
  assert row["labeling"] == "expanded" and row["arch"] == "cnn" and row["status"] == "ok"
  # The holdout pool: the 10 patches minus every scheme's test and validation lists.
  data = records.PreparedData.open(out)
  held_out = set()
  for scheme in data.schemes:
    held_out |= {i for name, ids in data.splits(scheme).items()
                 if name == "test" or name.startswith("val_") for i in ids}
  assert row["train_examples"] == 10 - len(held_out) == 7
  config = json.loads((tmp_path / "runs" / row["run_id"] / "config.json").read_text())
  assert config["image_shape"] == [32, 32, 10]


def test_the_six_real_patches_alone_convert_without_splits(archive, tmp_path):
  real = tmp_path / "real"
  real.mkdir()
  for p in archive.iterdir():
    if not p.name.startswith("SYNTHETIC"):
      shutil.copytree(p, real / p.name)
  data = B.prepare_archive(real, tmp_path / "out", workers=1)
  assert data.manifest["num_examples"] == 6 and data.schemes == []
  assert "0 positive(s) among 6 patches" in data.manifest["splits"]["basic"]["origin"]
  assert len(list(data.examples())) == 6
  with pytest.raises(ValueError, match="has no labelling scheme 'basic'"):
    data.splits("basic")


def test_the_paper_study_lists_everything_missing_before_any_training(prepared, tmp_path):
  # The paper preset on real prepared records, without ImageNet weights and without the
  # California tiles its CA_adam and CA_sgd encoders pretrain on: one message, nothing trained.
  out, _ = prepared
  workdir = tmp_path / "paper"
  proc = subprocess.run(
      [sys.executable, "-m", "stages.study", "--preset=paper", f"--data_dir={out}",
       f"--workdir={workdir}", "--schemes=expanded", "--split_percents=100",
       f"--imagenet_dir={tmp_path / 'no_weights'}"],
      cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-3000:]
  message = proc.stderr.split("error:", 1)[-1]
  assert "nothing was trained" in message and "Traceback" not in proc.stderr
  assert "no ImageNet weights for 5 architecture(s)" in message
  for arch in ("Xception", "InceptionV3", "ResNet50", "ResNet101V2", "ResNet152"):
    assert arch in message
  assert "encoder CA_adam pretrains on data/california" in message
  assert "encoder CA_sgd pretrains on data/california" in message
  assert not (workdir / "pretrain").exists() and not list(workdir.glob("runs/*"))


def test_stage1_pretrains_an_encoder_on_scene_patches_and_probes_it_on_bigearthnet(prepared, tmp_path):
  # A CA-style encoder: pretrained on unlabelled patches cut from a Sentinel-2 scene, probed
  # (like every encoder and the random-init network) on the study's labelled validation lists.
  from benchmarks import scene_files

  # Ten patches leave the generated validation lists empty: lists with room for a probe.
  out = tmp_path / "bigearthnet"
  shutil.copytree(prepared[0], out)
  data = records.PreparedData.open(out)
  label = {ex["id"].numpy().decode(): int(ex["label_expanded"]) for ex in data.examples()}
  positives = sorted(i for i, y in label.items() if y)
  negatives = sorted(i for i, y in label.items() if not y)
  lists = {"test": [positives[0], negatives[0]], "val_100": positives[1:3] + negatives[1:3],
           "train_100": positives[3:] + negatives[3:]}
  for name in (out / "splits" / "expanded").iterdir():
    name.write_text("".join(f"{i}\n" for i in lists.get(name.name, [])))
  rng = np.random.default_rng(0)
  scene_files.write_scene(tmp_path / "scenes" / "T11SKA.tif",
                          rng.integers(100, 3000, (10, 480, 480)).astype(np.uint16))
  scenes_out = tmp_path / "california"
  proc = subprocess.run(
      [sys.executable, "-m", "stages.prepare", "--source=scenes",
       f"--scene_dir={tmp_path / 'scenes'}", f"--output_dir={scenes_out}", "--workers=1"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"prepared 16 unlabelled 120x120 patches (stride 120) into {scenes_out}" in proc.stdout
  workdir = tmp_path / "w"
  proc = subprocess.run(
      [sys.executable, "-m", "stages.pretrain", "--preset=smoke", f"--data_dir={out}",
       f"--encoder=CA_adam:data_dir={scenes_out}", f"--workdir={workdir}", "--image_size=32",
       "--pretrain_epochs=2", "--pretrain_batch_size=4", "--schemes=expanded",
       "--split_percents=100"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = json.loads((workdir / "pretrain" / "CA_adam" / "config.json").read_text())
  assert config["pool"] == 16 and config["data"].startswith("sentinel2-scenes:16:")
  from simclr_distill import results

  probes = results.read_rows([workdir])
  assert set(probes["stage"]) == {"pretrain"} and set(probes["labeling"]) == {"expanded"}
  assert set(probes["encoder"]) == {"CA_adam", "none"} and set(probes["val_examples"]) == {4}
  assert set(probes["dataset"]) == {"bigearthnet-s2:10:0:size=32"}  # both on BigEarthNet's lists
  # Scene patches of another size: the study names the mismatch before anything trains.
  from simclr_distill.data import scenes
  from simclr_distill.study_config import SceneConfig

  scenes.prepare_scenes(tmp_path / "scenes", tmp_path / "ca96", SceneConfig(patch_size=96), workers=1)
  proc = subprocess.run(
      [sys.executable, "-m", "stages.study", "--preset=smoke", f"--data_dir={out}",
       f"--encoder=CA_adam:data_dir={tmp_path / 'ca96'}", f"--workdir={tmp_path / 'w96'}",
       "--schemes=expanded", "--split_percents=100"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and "nothing was trained" in proc.stderr, proc.stderr[-3000:]
  assert "encoder CA_adam: its data" in proc.stderr and "(96, 96, 10)" in proc.stderr
  assert "(120, 120, 10)" in proc.stderr and not (tmp_path / "w96" / "pretrain").exists()
