"""Stage 1's second source: Sentinel-2 scenes (written here with tifffile) cut into records."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from benchmarks import scene_files
from simclr_distill.data import bigearthnet, records, scenes
from simclr_distill.study_config import PrepareConfig, SceneConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
SIDE = 1000  # a 1,000 x 1,000 scene: 8 x 8 whole 120-pixel patches
GEE_ORDER = ("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12")  # an Earth Engine export's


def _bands(seed=0, side=SIDE):
  """{band: array}: the 10 m bands at side x side, the 20 m ones at their native side / 2."""
  rng = np.random.default_rng(seed)
  out = {}
  for band in bigearthnet.BANDS:
    n = side if band in bigearthnet.BANDS_10M else side // 2
    smooth = np.add.outer(np.linspace(300, 2500, n), np.linspace(0, 1800, n))
    out[band] = (smooth + rng.integers(0, 800, (n, n))).astype(np.uint16)
  return out


def _on_10m_grid(plane, side=SIDE):
  """A 20 m band on the 10 m grid, each pixel repeated 2 x 2 (as an export at 10 m makes it)."""
  return plane.repeat(2, 0).repeat(2, 1) if plane.shape[0] != side else plane


def _single_file(path, bands, order=bigearthnet.BANDS, descriptions=None, extra=(), **kw):
  stack = [_on_10m_grid(bands[scenes.band_key(b)]) for b in order] + list(extra)
  return scene_files.write_scene(path, np.stack(stack), descriptions=descriptions, **kw)


def _per_band_folder(folder, bands, extra=None):
  side = bands["B02"].shape[0]
  for band, plane in {**bands, **(extra or {})}.items():
    resolution = "10m" if plane.shape[0] == side else "20m"
    scene_files.write_scene(folder / f"T11SKA_20210701_{band}_{resolution}.tif", plane,
                            pixel_size=10.0 * side / plane.shape[0])
  return folder


def _convert(scene_dir, out, **settings):
  shard = settings.pop("examples_per_shard", 1000)
  return scenes.prepare_scenes(scene_dir, out, SceneConfig(**settings), examples_per_shard=shard,
                               workers=1)


def _images(data):
  """{id: uint16 image} of every record, unstandardised."""
  raw = records.PreparedData.open(data.root, standardize=False)
  return {ex["id"].numpy().decode(): ex["image"].numpy().astype(np.uint16)
          for ex in raw.examples()}


def _shard_bytes(root):
  return {p.name: p.read_bytes() for p in sorted((pathlib.Path(root) / "records").glob("*.tfrecord"))}


@pytest.fixture(scope="module")
def bands():
  return _bands()


@pytest.fixture(scope="module")
def single(bands, tmp_path_factory):
  """One 10-band file on the 10 m grid, the study's band order, no descriptions."""
  root = tmp_path_factory.mktemp("single")
  _single_file(root / "scenes" / "T11SKA_20210701.tif", bands)
  return _convert(root / "scenes", root / "out")


def test_a_1000_pixel_scene_gives_its_grid_of_whole_patches(single):
  m = single.manifest
  assert m["num_examples"] == 64 and m["dropped"] == {"nodata": 0, "cloud": 0}
  assert m["image_shape"] == [120, 120, 10] and m["image_dtype"] == "uint16"
  assert m["band_names"] == list(bigearthnet.BANDS) and m["schemes"] == [] and m["label_keys"] == []
  ids = single.ids()
  assert ids[0] == "T11SKA_20210701_r00000_c00000" and ids[-1] == "T11SKA_20210701_r00840_c00840"
  assert len(set(ids)) == 64
  scene, = m["scenes"]
  assert scene["positions"] == 64 and scene["patches"] == 64 and scene["layout"] == "one file"


def test_patches_equal_their_windows_and_the_20m_bands_an_independent_bicubic_resize(single, bands):
  images = _images(single)
  for name in ("T11SKA_20210701_r00000_c00000", "T11SKA_20210701_r00360_c00840",
               "T11SKA_20210701_r00840_c00120"):
    image = images[name]
    r, c = int(name.split("_r")[1][:5]), int(name.split("_c")[1][:5])
    for i, band in enumerate(bigearthnet.BANDS):
      if band in bigearthnet.BANDS_10M:
        np.testing.assert_array_equal(image[..., i], bands[band][r:r + 120, c:c + 120])
      else:  # TensorFlow's bicubic resize of the native 60 x 60 window, rounded and clipped
        native = bands[band][r // 2:r // 2 + 60, c // 2:c // 2 + 60].astype(np.float32)
        resized = tf.image.resize(native[None, ..., None], (120, 120), method="bicubic").numpy()
        expected = np.clip(np.rint(resized[0, ..., 0]), 0, 65535)
        assert np.abs(image[..., i].astype(float) - expected).max() <= 1  # float32 vs float64
        assert (image[..., i] == expected).mean() > 0.999, band
  # The reader standardises them with BigEarthNet's statistics, as it does BigEarthNet's records.
  assert single.manifest["band_stats_source"] == "BigEarthNet published statistics"
  assert single.manifest["band_mean"] == [bigearthnet.PUBLISHED_MEAN[b] for b in bigearthnet.BANDS]


def test_one_file_per_band_and_described_bands_in_another_order_give_the_same_records(
    single, bands, tmp_path):
  _per_band_folder(tmp_path / "per_band" / "T11SKA_20210701", bands)
  per_band = _convert(tmp_path / "per_band", tmp_path / "per_band_out")
  _single_file(tmp_path / "described" / "T11SKA_20210701.tif", bands, order=GEE_ORDER,
               descriptions=GEE_ORDER)
  described = _convert(tmp_path / "described", tmp_path / "described_out")
  assert per_band.manifest["scenes"][0]["layout"] == "one file per band"
  for other in (per_band, described):
    assert other.ids() == single.ids()
    assert _shard_bytes(other.root) == _shard_bytes(single.root)
  # Without descriptions, --scene_bands names them.
  _single_file(tmp_path / "ordered" / "T11SKA_20210701.tif", bands, order=GEE_ORDER)
  ordered = _convert(tmp_path / "ordered", tmp_path / "ordered_out", bands=GEE_ORDER)
  assert _shard_bytes(ordered.root) == _shard_bytes(single.root)


def test_overlapping_grid_and_patch_size(bands, tmp_path):
  _single_file(tmp_path / "s" / "a.tif", bands)
  data = _convert(tmp_path / "s", tmp_path / "o", patch_size=100, stride=60)
  assert data.manifest["num_examples"] == 16 * 16  # (1000 - 100) // 60 + 1 = 16 per side
  assert data.image_shape == (100, 100, 10)
  image = _images(data)["a_r00060_c00900"]
  np.testing.assert_array_equal(image[..., 0], bands["B04"][60:160, 900:1000])


def test_no_data_and_cloudy_patches_are_dropped_and_counted(bands, tmp_path):
  b = {k: v.copy() for k, v in bands.items()}
  for k, v in b.items():  # no data: every band 0 in the top-left 240 x 240 (4 patches) ...
    f = 1 if k in bigearthnet.BANDS_10M else 2
    v[:240 // f, :240 // f] = 0
    v[:60 // f, 480 // f:600 // f] = 0  # ... and a quarter of patch (0, 480): kept
  scl = np.full((SIDE // 2, SIDE // 2), 4, np.uint8)  # vegetation, at 20 m
  scl[120:180, 120:180] = 9  # cloud over the whole of patch (240, 240)
  scl[300:330, 300:360] = 8  # half of patch (600, 600)
  scl[300:303, 420:480] = 10  # 5% of patch (600, 840): kept
  scl[0:60, 0:60] = 9  # cloud over a no-data patch: counted once, as no data
  _per_band_folder(tmp_path / "s" / "T11SKA_20210701", b, extra={"SCL": scl})
  data = _convert(tmp_path / "s", tmp_path / "o")
  m = data.manifest
  assert m["dropped"] == {"nodata": 4, "cloud": 2} and m["num_examples"] == 64 - 6
  assert m["scenes"][0]["dropped"] == m["dropped"] and m["scenes"][0]["cloud_mask"] == "SCL"
  ids = set(data.ids())
  for gone in ("r00000_c00000", "r00120_c00120", "r00240_c00240", "r00600_c00600"):
    assert f"T11SKA_20210701_{gone}" not in ids
  for kept in ("r00000_c00480", "r00600_c00840", "r00000_c00240"):
    assert f"T11SKA_20210701_{kept}" in ids
  # Stricter thresholds drop more; the scene's nodata value counts as no data too.
  strict = _convert(tmp_path / "s", tmp_path / "strict", max_nodata_fraction=0.2,
                    max_cloud_fraction=0.0)
  assert strict.manifest["dropped"] == {"nodata": 5, "cloud": 3}
  c = {k: np.where(v == 0, 65535, v).astype(np.uint16) for k, v in b.items()}
  _single_file(tmp_path / "n" / "a.tif", c, nodata=65535)
  assert _convert(tmp_path / "n", tmp_path / "no").manifest["dropped"]["nodata"] == 4


def test_a_qa60_band_and_a_cloud_mask_filter_clouds(bands, tmp_path):
  qa60 = np.zeros((SIDE // 6 + 1, SIDE // 6 + 1), np.uint16)
  qa60[0:20, 0:20] = 1 << 10  # opaque clouds over patch (0, 0), at 60 m
  qa60[20:40, 0:20] = 1 << 11  # cirrus over patch (120, 0)
  qa60[40:60, 0:20] = 1 << 3  # another bit: not cloud
  with pytest.raises(ValueError, match="no patch kept"):  # 167 x 6 != 1000: not aligned
    _per_band_folder(tmp_path / "bad" / "s", bands, extra={"QA60": qa60})
    _convert(tmp_path / "bad", tmp_path / "bad_out")
  rejects = pd.read_csv(tmp_path / "bad_out" / "rejects.csv")
  assert "not 1, 2, 3, 6 time(s) smaller" in rejects["reason"][0]
  mask = np.zeros((SIDE, SIDE), np.uint8)
  mask[0:120, 0:120] = 1
  described = ("B04", "B03", "B02", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "cloud_mask")
  _single_file(tmp_path / "m" / "a.tif", bands, extra=[mask], descriptions=described)
  data = _convert(tmp_path / "m", tmp_path / "m_out")
  assert data.manifest["dropped"] == {"nodata": 0, "cloud": 1}
  assert data.manifest["scenes"][0]["cloud_mask"] == "CLOUD_MASK"


def test_a_truncated_or_broken_scene_is_rejected_by_name_while_the_others_convert(bands, tmp_path):
  root = tmp_path / "s"
  _single_file(root / "good.tif", bands)
  truncated = _single_file(root / "truncated.tif", bands)
  truncated.write_bytes(truncated.read_bytes()[:len(truncated.read_bytes()) // 2])
  (root / "garbage.tif").write_bytes(b"not a tiff at all")
  _per_band_folder(root / "missing_band", {k: v for k, v in bands.items() if k != "B8A"})
  scene_files.write_scene(root / "tiny.tif", np.ones((10, 100, 100), np.uint16))
  scene_files.write_scene(root / "twenty_metre.tif", np.stack(
      [_on_10m_grid(bands[b]) for b in bigearthnet.BANDS]), pixel_size=20.0)
  data = _convert(root, tmp_path / "o")
  assert data.manifest["num_examples"] == 64 and {s for s in data.ids()} == {
      f"good_r{r:05d}_c{c:05d}" for r in range(0, 960, 120) for c in range(0, 960, 120)}
  rejects = pd.read_csv(tmp_path / "o" / "rejects.csv").set_index("patch")["reason"].to_dict()
  assert set(rejects) == {"truncated", "garbage", "missing_band", "tiny", "twenty_metre"}
  assert "truncated.tif is truncated" in rejects["truncated"]
  assert "not a readable TIFF" in rejects["garbage"]
  assert "no file for band(s) B8A" in rejects["missing_band"]
  assert "smaller than one 120x120 patch" in rejects["tiny"]
  assert "20 x 20 m pixels" in rejects["twenty_metre"]
  assert data.manifest["num_rejected"] == 5


def test_a_killed_conversion_resumes_to_byte_identical_output(bands, tmp_path):
  _single_file(tmp_path / "s" / "a.tif", bands)
  _single_file(tmp_path / "s" / "b.tif", _bands(seed=1))
  command = [sys.executable, "-m", "stages.prepare", "--source=scenes", f"--scene_dir={tmp_path / 's'}",
             "--examples_per_shard=8", "--workers=1"]
  whole = tmp_path / "whole"
  subprocess.run([*command, f"--output_dir={whole}"], cwd=REPO, env=ENV, check=True,
                 capture_output=True, timeout=600)
  killed = tmp_path / "killed"
  proc = subprocess.Popen([*command, f"--output_dir={killed}"], cwd=REPO, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  deadline = time.time() + 300
  while not list(killed.glob("records/*.meta.json")) and time.time() < deadline:
    time.sleep(0.005)
  os.killpg(proc.pid, signal.SIGKILL)  # the stage and its conversion worker
  proc.wait()
  done = len(list(killed.glob("records/*.meta.json")))
  assert 1 <= done < 16 and not (killed / records.MANIFEST).exists()
  resumed = subprocess.run([*command, f"--output_dir={killed}"], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"{16 - done} shards to convert ({done} done before)" in resumed.stderr
  assert _shard_bytes(killed) == _shard_bytes(whole) and len(_shard_bytes(whole)) == 16
  for name in ("ids.txt", "rejects.csv"):
    assert (killed / name).read_bytes() == (whole / name).read_bytes()
  manifests = [json.loads((d / records.MANIFEST).read_text()) for d in (whole, killed)]
  for m in manifests:
    m.pop("created")
  assert manifests[0] == manifests[1]
  # Resuming with other settings would mix two conversions: refused.
  other = subprocess.run([*command, f"--output_dir={killed}", "--stride=60"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=600)
  assert other.returncode == 2 and "holds a conversion of other settings" in other.stderr


def test_scene_settings_and_sources_are_checked():
  with pytest.raises(ValueError, match="patch_size=121 must be even"):
    SceneConfig(patch_size=121)
  with pytest.raises(ValueError, match="max_cloud_fraction=2"):
    SceneConfig(max_cloud_fraction=2)
  with pytest.raises(ValueError, match="scene patches are unlabelled"):
    PrepareConfig(source="scenes", split_dirs=(("basic", "x"),))
  assert scenes.band_key("b2") == "B02" and scenes.band_key("B8A") == "B8A"
  assert scenes.band_key("Cloud-Mask") == "CLOUD_MASK" and scenes.band_key("TCI") is None


def test_unlabelled_scene_records_say_what_they_are_for(single):
  with pytest.raises(ValueError, match="unlabelled patches .*--encoder=NAME:data_dir="):
    single.splits("expanded")


def _jp2(path, plane, pixel_size):
  """A lossless JPEG 2000 band as an L2A product has them (written with GDAL: tifffile cannot)."""
  import rasterio
  from rasterio.transform import from_origin

  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", driver="JP2OpenJPEG", width=plane.shape[1], height=plane.shape[0],
                     count=1, dtype=plane.dtype, crs="EPSG:32611", QUALITY=100, REVERSIBLE="YES",
                     transform=from_origin(600000, 4100000, pixel_size, pixel_size)) as out:
    out.write(plane, 1)


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rasterio.transform
def test_an_l2a_safe_product_is_read_as_it_is(bands, tmp_path):
  # The layout of a Sentinel-2 L2A product: JPEG 2000 bands at 10, 20 and 60 m (the finest of
  # each is taken), SCL at 20 m, quality masks in QI_DATA (ignored).
  side = 240
  small = {k: v[:side // (1 if k in bigearthnet.BANDS_10M else 2),
                :side // (1 if k in bigearthnet.BANDS_10M else 2)] for k, v in bands.items()}
  safe = tmp_path / "s" / "S2A_MSIL2A_20210701T183919_N0301_R027_T11SKA_20210701T224355.SAFE"
  img = safe / "GRANULE" / "L2A_T11SKA_A031517_20210701T184801" / "IMG_DATA"
  for band, plane in small.items():
    res = 10 if band in bigearthnet.BANDS_10M else 20
    _jp2(img / f"R{res}m" / f"T11SKA_20210701T183919_{band}_{res}m.jp2", plane, res)
    _jp2(img / "R60m" / f"T11SKA_20210701T183919_{band}_60m.jp2", plane[::6 // (res // 10), ::6 // (res // 10)], 60)
  _jp2(img / "R20m" / "T11SKA_20210701T183919_B02_20m.jp2", small["B02"][::2, ::2], 20)
  scl = np.full((side // 2, side // 2), 4, np.uint8)
  scl[:60, :60] = 9
  _jp2(img / "R20m" / "T11SKA_20210701T183919_SCL_20m.jp2", scl, 20)
  _jp2(safe / "GRANULE" / "L2A_T11SKA_A031517_20210701T184801" / "QI_DATA" / "MSK_CLDPRB_20m.jp2",
       np.full((side // 2, side // 2), 100, np.uint8), 20)
  data = _convert(tmp_path / "s", tmp_path / "o")
  m = data.manifest
  assert m["scenes"][0]["name"] == "S2A_MSIL2A_20210701T183919_N0301_R027_T11SKA_20210701T224355"
  assert m["num_examples"] == 3 and m["dropped"] == {"nodata": 0, "cloud": 1}
  image = _images(data)[m["scenes"][0]["name"] + "_r00120_c00000"]
  np.testing.assert_array_equal(image[..., 2], small["B02"][120:240, 0:120])  # the 10 m B02
  _per_band_folder(tmp_path / "t" / "x", small)
  tif = _images(_convert(tmp_path / "t", tmp_path / "t_out"))
  np.testing.assert_array_equal(image, tif["x_r00120_c00000"])


def test_a_conversion_resumes_from_another_path_to_the_same_scenes(bands, tmp_path):
  _single_file(tmp_path / "s" / "a.tif", bands)
  _convert(tmp_path / "s", tmp_path / "o", examples_per_shard=8)
  plan = json.loads((tmp_path / "o" / scenes.PLAN).read_text())
  assert plan["plan"]["scenes"][0]["source"] == "a.tif"
  (tmp_path / "link").symlink_to(tmp_path / "s")
  for meta in list((tmp_path / "o" / "records").glob("*.meta.json"))[:3]:
    meta.unlink()
  again = _convert(tmp_path / "link", tmp_path / "o", examples_per_shard=8)
  assert again.manifest["num_examples"] == 64


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rasterio.transform
def test_a_truncated_jpeg2000_band_is_found_when_decoded_and_its_scene_rejected(tmp_path):
  small = _bands(side=240)
  for band, plane in small.items():
    _jp2(tmp_path / "s" / "broken" / f"{band}.jp2", plane, 10 if band in bigearthnet.BANDS_10M else 20)
  f = tmp_path / "s" / "broken" / "B04.jp2"
  f.write_bytes(f.read_bytes()[:len(f.read_bytes()) * 6 // 10])
  _single_file(tmp_path / "s" / "good.tif", _bands())
  data = _convert(tmp_path / "s", tmp_path / "o")
  assert data.manifest["num_examples"] == 64 and all(i.startswith("good_") for i in data.ids())
  rejects = pd.read_csv(tmp_path / "o" / "rejects.csv").set_index("patch")["reason"].to_dict()
  assert list(rejects) == ["broken"] and "unreadable in rows 0-240: RasterioIOError" in rejects["broken"]
  broken = next(s for s in data.manifest["scenes"] if s["name"] == "broken")
  assert broken["patches"] == 0 and "unreadable" in broken["rejected"]


def test_compute_stats_standardises_with_the_patches_own_statistics(single, tmp_path):
  data = scenes.prepare_scenes(pathlib.Path(single.manifest["source"]), tmp_path / "o",
                               examples_per_shard=1000, workers=1, compute_stats=True)
  images = np.stack(list(_images(data).values())).astype(np.float64)
  m = data.manifest
  assert m["band_stats_source"] == "computed from 64 patches"
  np.testing.assert_allclose(m["band_mean"], images.mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(m["band_std"], images.std(axis=(0, 1, 2)), rtol=1e-6)
  first = next(iter(data.examples()))  # the reader standardises with them
  raw = _images(data)[first["id"].numpy().decode()]
  np.testing.assert_allclose(first["image"].numpy(), (raw - np.array(m["band_mean"])) /
                             np.array(m["band_std"]), rtol=1e-4, atol=1e-4)
  assert _shard_bytes(data.root) == _shard_bytes(single.root)  # the records themselves unchanged


MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
<n1:General_Info><Product_Image_Characteristics>
<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
</QUANTIFICATION_VALUES_LIST>
<BOA_ADD_OFFSET_VALUES_LIST>{}</BOA_ADD_OFFSET_VALUES_LIST>
</Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>"""


def test_an_l2a_products_declared_offset_puts_it_on_bigearthnets_scale(tmp_path):
  # Processing baseline 04.00 (2022 on) adds 1000 to every DN; BigEarthNet (2017-18) has no
  # offset. Read from the product's metadata, the same ground gives the same records.
  small = _bands(side=240)
  _per_band_folder(tmp_path / "old" / "x", small)
  shifted = {k: (v.astype(np.int64) + 1000).astype(np.uint16) for k, v in small.items()}
  _per_band_folder(tmp_path / "new" / "x", shifted)
  (tmp_path / "new" / "x" / "MTD_MSIL2A.xml").write_text(MTD.format("".join(
      f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))))
  old = _convert(tmp_path / "old", tmp_path / "old_out")
  new = _convert(tmp_path / "new", tmp_path / "new_out")
  assert new.manifest["scenes"][0]["boa_add_offset"] == [-1000.0] * 10
  assert old.manifest["scenes"][0]["boa_add_offset"] is None
  assert _shard_bytes(new.root) == _shard_bytes(old.root)
  (tmp_path / "new" / "x" / "MTD_MSIL2A.xml").write_text(MTD.format(
      '<BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET>'))
  with pytest.raises(ValueError, match="no patch kept"):
    _convert(tmp_path / "new", tmp_path / "bad_out")
  reason = pd.read_csv(tmp_path / "bad_out" / "rejects.csv")["reason"][0]
  assert "declares BOA_ADD_OFFSET for some bands but not B04" in reason
