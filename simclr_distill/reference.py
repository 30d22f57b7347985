"""A classical semi-supervised reference: label spreading on raw pixels, on the students' data.

What does the deep pipeline add? The honest comparison is a classical method given exactly what
a student gets: the labelled split and the unlabelled pool, scored on the same test list.
scikit-learn's `LabelSpreading` (Zhou et al. 2004) spreads the labelled split's labels over a
k-nearest-neighbour graph of the pool's raw pixels. On the digits demo's 8 vs rest framing it
reaches F1 0.85 at 3% where a logistic regression on the labelled split alone reaches 0.61.

Images larger than `max_features` values are average-pooled (e.g. a 120x120x10 patch to
10x10x10), and a pool larger than `max_pool` is a seeded subset (the labelled split always in),
so the reference stays a minute's work on BigEarthNet. Each (scheme, split) writes a results
row (`stage` "reference", `arch` "label_spreading") and its test predictions, which `stats`
compares with the teachers and students like any run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import pathlib
import time

import numpy as np
import pandas as pd
import scipy.special
import tensorflow as tf

from simclr_distill import fileio, provenance, results, scoring, stats
from simclr_distill.data import records
from simclr_distill.data import splits as splits_lib
from simclr_distill.study_config import ReferenceConfig

log = logging.getLogger(__name__)

METHODS = ("label_spreading",)


def pooling_factor(image_shape, max_features: int) -> int:
  """The smallest spatial average-pooling factor that brings an image to `max_features` values."""
  h, w, c = image_shape
  factor = 1
  while math.ceil(h / factor) * math.ceil(w / factor) * c > max_features and factor < max(h, w):
    factor += 1
  return factor


def pixels(data: records.PreparedData, ids, label_key: str, factor: int
           ) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(ids, flattened (average-pooled) pixels, labels) of `ids`, streamed."""
  out_ids, xs, ys = [], [], []
  with data.reading():
    for batch in data.batches(512, list(ids), labels=[label_key]):
      image = batch["image"]
      if factor > 1:
        image = tf.nn.avg_pool2d(image, factor, factor, padding="SAME")
      out_ids.extend(batch["id"].numpy().astype(str).tolist())
      xs.append(image.numpy().reshape(len(image.numpy()), -1))
      ys.append(batch[label_key].numpy())
  return out_ids, np.concatenate(xs), np.concatenate(ys)


def _settings(config: ReferenceConfig, scheme: str, percent: int, task: str, dataset: str) -> dict:
  return {"method": "label_spreading", **dataclasses.asdict(config), "scheme": scheme,
          "percent": percent, "task": task, "dataset": dataset}


def run_id(settings: dict) -> str:
  digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
  return f"reference-label_spreading-{settings['scheme']}-{settings['percent']}-{digest}"


def label_spreading(data: records.PreparedData, workdir: str | pathlib.Path, *, scheme: str,
                    percent: int, task: str = "binary",
                    config: ReferenceConfig = ReferenceConfig(), preset: str = "",
                    retrain_stale: bool = False) -> dict:
  """Label spreading for one scheme and split; writes and returns its results row (an existing
  row is returned as it is, when the split lists and data it read are unchanged).

  Raises:
    ValueError: for a split list that names ids the records lack.
    provenance.StaleRunsError: for a finished row whose inputs changed (unless
      `retrain_stale`: it is computed again).
  """
  from sklearn.semi_supervised import LabelSpreading

  settings = _settings(config, scheme, percent, task, data.fingerprint())
  rid = run_id(settings)
  digests = provenance.split_digests(data, data.schemes)
  inputs = provenance.inputs_of(data, provenance.lists_read(
      "distill", scheme, percent, validated=False, pool_lists=list(digests)), digests)
  if provenance.reusable(workdir, rid, inputs, retrain_stale=retrain_stale):
    return results.read_row(workdir, rid)
  start = time.perf_counter()
  lists = data.splits(scheme)
  labelled = lists[splits_lib.split_name("train", percent)]
  others = [data.splits(s) for s in data.schemes if s != scheme]
  pool = splits_lib.unlabelled_pool(data.ids(), lists, "holdout", others)
  rest = sorted(set(pool) - set(labelled))
  if len(labelled) + len(rest) > config.max_pool:
    keep = np.random.default_rng(config.seed).choice(
        len(rest), max(config.max_pool - len(labelled), 0), replace=False)
    rest = [rest[i] for i in sorted(keep)]
  key = data.label_key(scheme, task)
  factor = pooling_factor(data.image_shape, config.max_features)
  train_ids, x, y = pixels(data, [*labelled, *rest], key, factor)
  test_ids, x_test, y_test = pixels(data, lists[splits_lib.TEST], key, factor)
  missing = len(set(labelled) | set(rest)) - len(train_ids)
  if missing:
    raise ValueError(f"{data.root}: {missing} ids of the {scheme} lists are not in the records")
  known = np.isin(np.asarray(train_ids), np.asarray(labelled))
  targets = np.where(known, y, -1)
  model = LabelSpreading(kernel="knn", n_neighbors=min(config.neighbours, len(train_ids) - 1),
                         alpha=config.alpha, max_iter=1000)
  with np.errstate(divide="ignore", invalid="ignore"):  # Isolated points have no neighbours.
    model.fit(x, targets)
    probs = model.predict_proba(x_test)
  probs = np.nan_to_num(probs, nan=1.0 / probs.shape[1])
  frame = pd.DataFrame({"id": test_ids, "label": y_test.astype(np.int64)})
  if task == "binary":
    column = list(model.classes_).index(1)
    frame["student_prob"] = probs[:, column]
    frame["student_logit"] = scipy.special.logit(np.clip(probs[:, column], 1e-12, 1 - 1e-12))
    frame["teacher_prob"] = np.nan
  else:
    full = np.zeros((len(frame), data.num_classes))
    full[:, model.classes_.astype(int)] = probs
    frame["student_pred"] = full.argmax(-1)
    for k in range(full.shape[1]):
      frame[f"student_prob_{k}"] = full[:, k]
    frame["teacher_pred"] = -1
  run_dir = pathlib.Path(workdir) / results.RUNS / rid
  run_dir.mkdir(parents=True, exist_ok=True)
  fileio.atomic_write(run_dir / "predictions.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
  fileio.write_json(run_dir / "config.json", {"reference": settings, "pooling_factor": factor,
                                              "pool": len(train_ids), "labelled": len(labelled)})
  method = (f"label spreading ({config.neighbours}-NN, pixels"
            + (f" pooled {factor}x{factor}" if factor > 1 else "") + ")")
  row = {"run_id": rid, "stage": "reference", "status": "ok", "error": "", "protocol": "holdout",
         "task": task, "model": "label_spreading", "labeling": scheme, "split_percent": percent,
         "arch": "label_spreading", "method": method, "init": "scratch", "seed": config.seed,
         "loss_kind": "", "train_examples": len(train_ids), "test_examples": len(frame),
         "dataset": data.fingerprint(), "preset": preset, "code_version": provenance.code_version(),
         **scoring.score(frame, task)}
  row["collapsed"] = "test" if stats.predicts_one_class(
      stats.load_predictions_frame(frame)["predicted"]) else ""
  row["wall_seconds"] = time.perf_counter() - start
  row["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
  results.write_row(workdir, {**row, provenance.KEY: provenance.record(
      inputs, run_dir, ("predictions.parquet",), row["code_version"])})
  log.info("reference: label spreading on %s %d%% (%d labelled, %d in the pool): test f1=%.3f",
           scheme, percent, len(labelled), len(train_ids), row["f1"])
  return row


def run_references(data: records.PreparedData, workdir: str | pathlib.Path, *, schemes,
                   split_percents, task: str = "binary", config: ReferenceConfig = ReferenceConfig(),
                   preset: str = "", retrain_stale: bool = False) -> list[dict]:
  """`label_spreading` for every scheme and split (each skipped when done)."""
  return [label_spreading(data, workdir, scheme=s, percent=p, task=task, config=config,
                          preset=preset, retrain_stale=retrain_stale)
          for s in schemes for p in split_percents]
