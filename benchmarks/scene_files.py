"""Sentinel-2-like scene files written with tifffile, for the scene tests and benchmark.

GeoTIFF tags are written by hand (a UTM zone 11N grid of 10 m pixels by default), with GDAL's
own tags for band descriptions and the nodata value, so GDAL (rasterio) reads them as it reads
an Earth Engine export or a COG. Large scenes are written tile by tile from a function, never
held whole.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Sequence
from xml.sax.saxutils import escape

import numpy as np

EPSG_UTM11N = 32611  # California (Central Valley and Imperial are in zones 10 and 11).


def geotiff_tags(*, pixel_size: float = 10.0, origin: tuple[float, float] = (600000.0, 4100000.0),
                 epsg: int = EPSG_UTM11N, descriptions: Sequence[str] | None = None,
                 nodata: float | None = None) -> list[tuple]:
  """tifffile `extratags`: pixel scale, tie point and GeoKey directory (a projected CRS by EPSG
  code, pixels as areas), and GDAL's metadata (band descriptions) and nodata tags."""
  keys = [1, 1, 0, 3,  # version, revision, minor, number of keys
          1024, 0, 1, 1,  # GTModelType: projected
          1025, 0, 1, 1,  # GTRasterType: pixel is area
          3072, 0, 1, epsg]  # ProjectedCSType
  tags = [(33550, "d", 3, (pixel_size, pixel_size, 0.0), False),
          (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), False),
          (34735, "H", len(keys), tuple(keys), False)]
  if descriptions:
    items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{escape(d)}</Item>'
                    for i, d in enumerate(descriptions))
    tags.append((42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", False))
  if nodata is not None:
    tags.append((42113, "s", 0, f"{nodata:g}", False))
  return tags


def write_scene(path: str | pathlib.Path, data: np.ndarray, *, pixel_size: float = 10.0,
                descriptions: Sequence[str] | None = None, nodata: float | None = None,
                tile: int | None = None, compression: str | None = None) -> pathlib.Path:
  """Writes an array [bands, H, W] (or [H, W]) as a GeoTIFF of separate planes."""
  import tifffile

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tifffile.imwrite(path, data, photometric="minisblack",
                   planarconfig="separate" if data.ndim == 3 else None,
                   tile=(tile, tile) if tile else None, compression=compression,
                   extratags=geotiff_tags(pixel_size=pixel_size, descriptions=descriptions,
                                          nodata=nodata))
  return path


def write_scene_tiled(path: str | pathlib.Path, shape: tuple[int, int],
                      tile_values: Callable[[int, int, int], np.ndarray], *, bands: int = 1,
                      dtype=np.uint16, tile: int = 512, pixel_size: float = 10.0,
                      compression: str | None = "zlib") -> pathlib.Path:
  """Writes a [bands, H, W] GeoTIFF tile by tile: `tile_values(band, row, col)` gives the
  tile x tile values at that offset (cut at the scene's edge by tifffile). Memory: one tile."""
  import tifffile

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  height, width = shape

  def tiles():
    for b in range(bands):
      for r in range(0, height, tile):
        for c in range(0, width, tile):
          yield np.ascontiguousarray(tile_values(b, r, c), dtype=dtype)

  tifffile.imwrite(path, tiles(), shape=(bands, height, width) if bands > 1 else shape,
                   dtype=dtype, photometric="minisblack",
                   planarconfig="separate" if bands > 1 else None, tile=(tile, tile),
                   compression=compression, extratags=geotiff_tags(pixel_size=pixel_size))
  return path
