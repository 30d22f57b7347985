"""Writing prepared records without TensorFlow: the conversion workers' encoder and writer.

A conversion worker only serialises examples and frames them as TFRecords; importing
TensorFlow for that costs each worker ~620 MiB and ~4 s (measured by `benchmarks.scene_memory`).
This module writes the same bytes with numpy and `google-crc32c`:

  * `encode_example` is `tf.train.Example(...).SerializeToString(deterministic=True)` for the
    features the records hold (one bytes list, int64 lists), in protobuf's wire format, map
    entries in key order as deterministic serialisation sorts them; a test holds it equal, byte
    for byte, to TensorFlow's.
  * `write_shard` frames each record as TFRecordWriter does: length (uint64 little-endian), its
    masked CRC-32C, the data, its masked CRC-32C; written atomically.
"""

from __future__ import annotations

import pathlib
import struct
from typing import Iterable, Mapping, Sequence

import numpy as np

from simclr_distill import fileio

FORMAT = "simclr_distill.records/1"
MANIFEST = "dataset.json"


def shard_name(index: int, count: int) -> str:
  return f"records/part-{index:05d}-of-{count:05d}.tfrecord"


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # negative int64s: two's complement, ten bytes
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
  return _field(1, _field(1, value))  # Feature.bytes_list { value }


def _int64_feature(values: Sequence[int]) -> bytes:
  packed = b"".join(_varint(int(v)) for v in values)  # Int64List.value is packed
  return _field(3, _field(1, packed) if values else b"")  # Feature.int64_list


def encode_example(example_id: str, image: np.ndarray, labels: Mapping[str, int | Sequence[int]],
                   dtype: str = "float32") -> bytes:
  """One example (`id`, raw little-endian `image` of `dtype`, int64 labels) serialised exactly
  as `tf.train.Example(...).SerializeToString(deterministic=True)` does."""
  features = {
      "id": _bytes_feature(example_id.encode()),
      "image": _bytes_feature(np.ascontiguousarray(
          image, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()),
  }
  for key, value in labels.items():
    features[key] = _int64_feature([int(v) for v in np.atleast_1d(value)])
  entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, features[key]))
                     for key in sorted(features, key=str.encode))
  return _field(1, entries)  # Example.features { feature: map }


def _masked_crc(data: bytes) -> bytes:
  import google_crc32c

  crc = google_crc32c.value(data)
  return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame(record: bytes) -> bytes:
  """One record as a TFRecord file holds it."""
  length = struct.pack("<Q", len(record))
  return length + _masked_crc(length) + record + _masked_crc(record)


def write_shard(path: str | pathlib.Path, serialized: Iterable[bytes]) -> int:
  """Writes serialised examples to one TFRecord file atomically; returns the count."""
  count = 0

  def writer(tmp):
    nonlocal count
    with open(tmp, "wb") as f:
      for record in serialized:
        f.write(frame(record))
        count += 1

  fileio.atomic_write(path, writer)
  return count
