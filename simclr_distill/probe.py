"""How good is a stage-1 encoder? k-NN and linear probes of its frozen features, on validation.

A falling NT-Xent says the network solves the contrastive task, not that its features separate
the classes the teachers will learn. The probe answers that directly, before any fine-tuning:
the frozen network's features (the layer the fine-tuning head attaches to) of each labelled
split `train_P` train a k-nearest-neighbour classifier (cosine) and a logistic regression
(scikit-learn), which are scored on the scheme's largest validation list. The same probe of a
randomly initialised network of the same architecture (encoder "none") says what the
pretraining added. Test lists are never read.

Each (encoder, scheme, split) is one row of the results table (`stage` "pretrain"), with
`probe_knn_accuracy`, `probe_linear_accuracy`, the final NT-Xent (`pretrain_loss`) and its
chance level, ln(2N - 1) for a global batch of N (`pretrain_chance_loss`); the probes'
validation predictions are saved in the row's run directory (`probe_predictions.parquet`), so
`stats` can put an interval on the difference between two encoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Callable, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from simclr_distill import fileio, provenance, results
from simclr_distill.data import records
from simclr_distill.study_config import ProbeConfig

log = logging.getLogger(__name__)

PREDICTIONS = results.PROBE_PREDICTIONS
RANDOM_INIT = "none"


def features(network: keras.Model, data: records.PreparedData, ids: Sequence[str], layer: str,
             batch_size: int = 256) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
  """(ids, features [N, D], label fields) of `ids`, streamed through `network` up to `layer`.

  Raises:
    ValueError: if the network has no such layer.
  """
  try:
    output = network.get_layer(layer).output
  except ValueError:
    raise ValueError(f"the probe reads layer {layer!r}, which {network.name!r} lacks") from None
  extractor = keras.Model(network.inputs, output)
  step = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
  out_ids, feats, labels = [], [], {}
  with data.reading():
    for batch in data.batches(batch_size, list(ids)):
      out_ids.extend(batch["id"].numpy().astype(str).tolist())
      value = np.asarray(step(batch["image"]), np.float32)
      feats.append(value.reshape(len(value), -1))
      for key, column in batch.items():
        if key not in ("id", "image"):
          labels.setdefault(key, []).append(column.numpy())
  return out_ids, np.concatenate(feats), {k: np.concatenate(v) for k, v in labels.items()}


def _subset(ids: Sequence[str], limit: int, seed: int = 0) -> list[str]:
  ids = sorted(ids)
  if len(ids) <= limit:
    return ids
  picked = np.random.default_rng(seed).choice(len(ids), limit, replace=False)
  return [ids[i] for i in sorted(picked)]


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                 *, neighbours: int = 5) -> dict:
  """k-NN (cosine) and logistic-regression probes: their validation accuracies and predicted
  probabilities of the positive (binary) or predicted class."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.neighbors import KNeighborsClassifier
  from sklearn.preprocessing import StandardScaler

  def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

  out = {}
  classes = np.unique(train_y)
  if len(classes) < 2:
    raise ValueError(f"a probe needs both classes in its training list; it has only {classes}")
  knn = KNeighborsClassifier(n_neighbors=min(neighbours, len(train_y))).fit(unit(train_x), train_y)
  scaler = StandardScaler().fit(train_x)
  linear = LogisticRegression(max_iter=5000).fit(scaler.transform(train_x), train_y)
  for name, model, x in (("knn", knn, unit(eval_x)), ("linear", linear, scaler.transform(eval_x))):
    probs = model.predict_proba(x)
    predicted = model.classes_[probs.argmax(1)]
    out[f"{name}_accuracy"] = float(np.mean(predicted == eval_y))
    out[f"{name}_prob"] = probs[:, list(model.classes_).index(1)] if len(model.classes_) == 2 and 1 in model.classes_ else predicted
  return out


def _final_loss(history: pathlib.Path) -> float:
  if not history.is_file():
    return float("nan")
  frame = pd.read_csv(history)
  return float(frame["loss"].iloc[-1]) if "loss" in frame and len(frame) else float("nan")


def run_id(encoder: str, arch: str, scheme: str, percent: int, settings: dict) -> str:
  digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
  return f"pretrain-{arch}-{encoder}-{scheme}-{percent}-{digest}"


def probe_encoder(network: keras.Model | Callable[[], keras.Model], data: records.PreparedData,
                  workdir: str | pathlib.Path, *,
                  encoder: str, encoder_optimizer: str, arch: str, settings: dict,
                  config: ProbeConfig = ProbeConfig(), history: pathlib.Path | None = None,
                  global_batch: int = 0, preset: str = "", code_version: str = "",
                  retrain_stale: bool = False) -> list[dict]:
  """Probes one network on every (scheme, split) of `config`, writing a results row and the
  validation predictions per pair (skipping pairs already done); returns the rows.

  Args:
    network: a stage-1 network (or a random-init one of the same architecture), or a function
      that loads or builds it: called only when some pair is not probed yet, so a rerun with
      nothing to do loads nothing.
    data: the prepared data (its split lists; the test lists are never read).
    workdir: rows go to `<workdir>/runs/<run_id>/`.
    encoder, encoder_optimizer, arch: the row's encoder columns.
    settings: what identifies the network (its pretraining config), hashed into the run ids.
    config: the probe settings.
    history: the pretraining's history.csv (its last loss goes in the rows).
    global_batch: the pretraining's global batch (for the chance-level NT-Xent).
    retrain_stale: probe again a pair whose split lists changed since it was probed (else
      `provenance.StaleRunsError`).
  """
  start = time.perf_counter()
  schemes = [s for s in (config.schemes or data.schemes) if s in data.schemes]
  key = {**settings, "probe": dataclasses.asdict(config), "data": data.fingerprint()}
  todo = []
  split_lists = {scheme: data.splits(scheme) for scheme in schemes}  # Read once per scheme.
  digests = provenance.split_digests(data, data.schemes)
  for scheme in schemes:
    lists = split_lists[scheme]
    val_names = sorted((n for n in lists if n.startswith("val_") and lists[n]),
                       key=lambda n: int(n[4:]))
    if not val_names:  # e.g. a handful of patches: nothing to score a probe on
      log.warning("no probe on %s: its validation lists are empty", scheme)
      continue
    evaluation = val_names[-1]
    for pct in config.split_percents:
      if f"train_{pct}" in lists:
        rid = run_id(encoder, arch, scheme, pct, {**key, "scheme": scheme, "percent": pct})
        inputs = provenance.inputs_of(
            data, [f"splits/{scheme}/train_{pct}", f"splits/{scheme}/{evaluation}"], digests)
        if not provenance.reusable(workdir, rid, inputs, retrain_stale=retrain_stale):
          todo.append((scheme, pct, evaluation, rid, inputs))
  if not todo:
    return []
  if not isinstance(network, keras.Model):
    network = network()
  wanted = set()
  for scheme, pct, evaluation, _, _ in todo:
    lists = split_lists[scheme]
    wanted.update(_subset(lists[f"train_{pct}"], config.max_examples))
    wanted.update(_subset(lists[evaluation], config.max_examples))
  ids, feats, labels = features(network, data, sorted(wanted), config.layer)
  row_of = {i: r for r, i in enumerate(ids)}
  rows = []
  loss = _final_loss(history) if history is not None else float("nan")
  chance = math.log(2 * global_batch - 1) if global_batch > 1 else float("nan")
  for scheme, pct, evaluation, rid, inputs in todo:
    lists = split_lists[scheme]
    label = labels[f"label_{scheme}"]
    train = [row_of[i] for i in _subset(lists[f"train_{pct}"], config.max_examples)]
    held = _subset(lists[evaluation], config.max_examples)
    held_rows = [row_of[i] for i in held]
    scores = probe_scores(feats[train], label[train], feats[held_rows], label[held_rows],
                          neighbours=config.neighbours)
    run_dir = pathlib.Path(workdir) / results.RUNS / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": held, "label": label[held_rows].astype(np.int64),
                          "knn_prob": scores["knn_prob"], "linear_prob": scores["linear_prob"]})
    fileio.atomic_write(run_dir / PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
    row = {
        "run_id": rid, "stage": "pretrain", "status": "ok", "error": "", "protocol": "holdout",
        "task": "binary", "model": encoder, "encoder": encoder,
        "encoder_optimizer": encoder_optimizer, "labeling": scheme, "split_percent": pct,
        "arch": arch, "method": f"probe ({config.layer}, {evaluation})", "init": (
            "scratch" if encoder == RANDOM_INIT else "simclr"),
        "seed": settings.get("seed", 0), "probe_knn_accuracy": scores["knn_accuracy"],
        "probe_linear_accuracy": scores["linear_accuracy"], "pretrain_loss": loss,
        "pretrain_chance_loss": chance, "val_examples": len(held), "test_examples": 0,
        "train_examples": len(train), "dataset": data.fingerprint(), "preset": preset,
        "code_version": code_version, "wall_seconds": time.perf_counter() - start,
        "finished_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }
    results.write_row(workdir, {**row, provenance.KEY: provenance.record(
        inputs, run_dir, (PREDICTIONS,), code_version)})
    rows.append(row)
    log.info("probe of %s on %s %d%% (%s): k-NN %.3f, linear %.3f on %d %s examples", encoder,
             scheme, pct, config.layer, scores["knn_accuracy"], scores["linear_accuracy"],
             len(held), evaluation)
  return rows
