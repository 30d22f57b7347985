"""The teacher zoo: a directory of checkpoints plus `manifest.csv`, loading and checking.

A zoo's manifest has one row per teacher:

  teacher_id          unique name, e.g. "BEN-basic-10"
  encoder             the pretrained encoder it was fine-tuned from (BEN, CA_adam, CA_sgd, none)
  encoder_optimizer   the optimizer of that pretraining (adam, sgd, or empty)
  labeling            labelling scheme: basic | expanded
  split_percent       the label split it was fine-tuned on (1, 3, 10, 25, 50, 100)
  path                checkpoint, relative to the zoo directory or absolute: a `.keras` file,
                      a legacy `.h5` file, or a TF SavedModel directory
  output              logits | probabilities | auto (read the last layer's activation)
  arch                the teacher's architecture (informational)

Optional provenance columns (written by stage 2, kept as they are, never part of a run's
identity): source_run, pretrain_checkpoint, pretrain_digest, freeze, seed, best_epoch, test_f1, code_version,
created_at.

SavedModel directories (TensorFlow 2.x `model.save(dir)` / `tf.saved_model.save`) are served
through `keras.layers.TFSMLayer`, so checkpoints of the study's TensorFlow 2.3/2.4 era work.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import warnings
from typing import Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from simclr_distill import fileio, inference

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
COLUMNS = ("teacher_id", "encoder", "encoder_optimizer", "labeling", "split_percent", "path",
           "output", "arch")
# "digest": the teacher file's content digest when it was listed (checked before it is used).
PROVENANCE = ("source_run", "digest", "pretrain_checkpoint", "pretrain_digest", "freeze", "seed",
              "best_epoch", "test_f1", "code_version", "created_at")
REQUIRED = ("teacher_id", "labeling", "split_percent", "path")
LOCK = ".manifest.lock"
OUTPUT_KINDS = ("logits", "probabilities", "auto")


class TeacherError(ValueError):
  """A teacher that cannot be used; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class TeacherEntry:
  """One manifest row."""

  teacher_id: str
  labeling: str
  split_percent: int
  path: str
  encoder: str = "none"
  encoder_optimizer: str = ""
  output: str = "auto"
  arch: str = ""
  provenance: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
  # An ensemble teacher (never in a manifest): its members and how their outputs combine.
  members: tuple["TeacherEntry", ...] = ()
  combine: str = ""

  def resolve(self, zoo_dir: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(self.path)
    return path if path.is_absolute() else pathlib.Path(zoo_dir) / path


def read_zoo(zoo_dir: str | pathlib.Path) -> list[TeacherEntry]:
  """Reads and validates a zoo manifest.

  Raises:
    FileNotFoundError: if the manifest is missing.
    TeacherError: for missing columns, duplicate ids or bad values, naming the row.
  """
  path = pathlib.Path(zoo_dir) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(
        f"no teacher zoo manifest at {path}; a zoo is a directory with {MANIFEST} (columns "
        f"{', '.join(COLUMNS)}), written by stage 2 or by hand")
  frame = pd.read_csv(path, dtype=str, keep_default_na=False)
  missing = [c for c in REQUIRED if c not in frame.columns]
  if missing:
    raise TeacherError(f"{path} lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
  unknown = sorted(set(frame.columns) - set(COLUMNS) - set(PROVENANCE))
  if unknown:
    raise TeacherError(f"{path} has unknown column(s) {', '.join(unknown)}; known: "
                       f"{', '.join(COLUMNS + PROVENANCE)}")
  duplicated = frame["teacher_id"][frame["teacher_id"].duplicated()].tolist()
  if duplicated:
    raise TeacherError(f"{path} repeats teacher_id {duplicated[0]!r}; ids must be unique")
  entries = []
  for row_number, row in enumerate(frame.to_dict("records"), start=2):
    row = {k: v for k, v in row.items() if v != ""}
    where = f"{path} line {row_number} (teacher {row.get('teacher_id')!r})"
    try:
      row["split_percent"] = int(row["split_percent"])
    except ValueError:
      raise TeacherError(f"{where}: split_percent {row['split_percent']!r} is not an integer") from None
    if row.get("output", "auto") not in OUTPUT_KINDS:
      raise TeacherError(f"{where}: output {row['output']!r} is not one of {', '.join(OUTPUT_KINDS)}")
    if row["labeling"] not in ("basic", "expanded"):
      raise TeacherError(f"{where}: labeling {row['labeling']!r} is not basic or expanded "
                         "(the study's 'balanced' files are the basic scheme)")
    provenance = {k: row.pop(k) for k in PROVENANCE if k in row}
    entries.append(TeacherEntry(**row, provenance=provenance))
  return entries


def write_zoo(zoo_dir: str | pathlib.Path, entries: Sequence[TeacherEntry]) -> None:
  """Writes `manifest.csv` atomically, sorted by teacher id, with any provenance columns."""
  rows = []
  for e in entries:
    if e.members:
      raise TeacherError(f"{e.teacher_id} is an ensemble; a manifest lists its members only")
    row = {k: v for k, v in dataclasses.asdict(e).items() if k in COLUMNS}
    rows.append({**row, **{k: v for k, v in e.provenance.items() if k in PROVENANCE}})
  used = [c for c in PROVENANCE if any(c in e.provenance for e in entries)]
  frame = pd.DataFrame(rows, columns=list(COLUMNS) + used).sort_values("teacher_id")
  fileio.atomic_write(pathlib.Path(zoo_dir) / MANIFEST, lambda tmp: frame.to_csv(tmp, index=False))


def add_to_zoo(zoo_dir: str | pathlib.Path, entries: Sequence[TeacherEntry]) -> None:
  """Adds or replaces `entries` in a zoo's manifest (created if missing), under a file lock,
  so concurrent stage-2 shards writing one zoo never lose each other's rows."""
  zoo_dir = pathlib.Path(zoo_dir)
  with fileio.file_lock(zoo_dir / LOCK):
    current = {e.teacher_id: e for e in read_zoo(zoo_dir)} if (zoo_dir / MANIFEST).is_file() else {}
    current.update({e.teacher_id: e for e in entries})
    write_zoo(zoo_dir, list(current.values()))


def _savedmodel_model(path: pathlib.Path) -> keras.Model:
  """Wraps a SavedModel's serving signature as a Keras model with a symbolic input."""
  loaded = tf.saved_model.load(str(path))
  if "serving_default" not in loaded.signatures:
    raise TeacherError(f"SavedModel {path} has no 'serving_default' signature; re-export it "
                       "with a serving signature (model.export(dir) in Keras 3)")
  _, kwargs = loaded.signatures["serving_default"].structured_input_signature
  if len(kwargs) != 1:
    raise TeacherError(f"SavedModel {path} takes {len(kwargs)} inputs ({', '.join(kwargs)}); a teacher takes one image")
  spec = next(iter(kwargs.values()))
  layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
  inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name="image")
  outputs = layer(inputs)
  if isinstance(outputs, dict):
    if len(outputs) != 1:
      raise TeacherError(f"SavedModel {path} returns {len(outputs)} outputs ({', '.join(outputs)}); a teacher returns one")
    outputs = next(iter(outputs.values()))
  return keras.Model(inputs, outputs, name=path.name)


def load_model_file(path: str | pathlib.Path, *, safe_mode: bool = True) -> keras.Model:
  """Loads a `.keras` / `.h5` file or a SavedModel directory for inference.

  Args:
    path: the checkpoint.
    safe_mode: refuse to deserialise arbitrary code (Lambda layers) from `.keras` files.

  Raises:
    FileNotFoundError: if nothing is at `path`.
    TeacherError: if the file cannot be read as a model.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"no checkpoint at {path}")
  if not safe_mode:
    warnings.warn(f"loading {path} with safe_mode=False: Lambda layers in it can run arbitrary code")
    log.warning("loading %s with Keras safe mode off (--unsafe_load)", path)
  try:
    if path.is_dir():
      return _savedmodel_model(path)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
      raise TeacherError(f"{path} is neither a .keras/.h5 file nor a SavedModel directory")
    model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    return model if path.suffix == ".keras" else _one_tensor_in_and_out(model)
  except TeacherError:
    raise
  except Exception as e:  # Keras raises many types for unreadable files; name the file.
    if safe_mode and "safe_mode" in str(e):
      raise TeacherError(
          f"{path} holds a Lambda layer (Python code), which Keras safe mode refuses to load; "
          "if you trust the file, rerun with --unsafe_load (or rebuild it without Lambda "
          "layers)") from e
    raise TeacherError(f"cannot load {path}: {type(e).__name__}: {e}") from e


def _one_tensor_in_and_out(model: keras.Model) -> keras.Model:
  """`model`, taking and giving one tensor. A Keras 2 `.h5` file records a one-input model's
  input as a list ([image]): Keras 3 loads it so and warns at every call with a tensor
  ("The structure of `inputs` doesn't match the expected structure"). The same layers, rebuilt
  on the tensors themselves, compute the same outputs without the warning."""
  try:
    lists = isinstance(model.input, list) or isinstance(model.output, list)
  except (AttributeError, ValueError):  # Not a functional model: it has no recorded inputs.
    return model
  if not lists or len(model.inputs) != 1 or len(model.outputs) != 1:
    return model
  return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


def detect_output_kind(model: keras.Model) -> str:
  """"probabilities" if the last layer ends in sigmoid/softmax, "logits" if linear, else "auto"."""
  layer = _final_layer(model)
  if isinstance(layer, keras.layers.Softmax):
    return "probabilities"
  name = _activation_name(layer)
  if name in ("sigmoid", "softmax"):
    return "probabilities"
  if name == "linear":
    return "logits"
  return "auto"


# How a teacher's logits are obtained (`Teacher.logits_source`, recorded in its label cache):
#   model           the model outputs logits
#   pre_activation  a probability model's last sigmoid/softmax is skipped: its input, exactly
#   inverted        probabilities inverted in float64 (a SavedModel, whose layers are closed)
LOGITS_SOURCES = ("model", "pre_activation", "inverted")


@dataclasses.dataclass
class Teacher:
  """A loaded, checked teacher whose `logits` always returns logits.

  Attributes:
    entry: its manifest row.
    model: the network that runs (for a probability teacher whose last activation could be
      skipped, the network up to that activation).
    output: what the checkpoint outputs, resolved: "logits" or "probabilities".
    logits_source: how `logits` gets logits (see `LOGITS_SOURCES`).
  """

  entry: TeacherEntry
  model: keras.Model
  output: str
  logits_source: str = "model"
  _compiled: object = dataclasses.field(default=None, init=False, repr=False, compare=False)

  def logits(self, images: tf.Tensor) -> tf.Tensor:
    out = tf.cast(self.model(images, training=False), tf.float32)
    return probabilities_to_logits(out) if self.logits_source == "inverted" else out

  def compiled_logits(self, images: tf.Tensor) -> tf.Tensor:
    """`logits` as one traced graph, traced once per teacher (not once per labelling pass)."""
    if self._compiled is None:
      self._compiled = tf.function(self.logits, reduce_retracing=True)
    return self._compiled(images)

  def predict_logits(self, images: tf.data.Dataset) -> np.ndarray:
    """Logits for a dataset of image batches, through Keras' cached predict function."""
    out = self.model.predict(images, verbose=0).astype(np.float32)
    return probabilities_to_logits(out).numpy() if self.logits_source == "inverted" else out

  @property
  def models(self) -> list[keras.Model]:
    return [self.model]


@dataclasses.dataclass
class EnsembleTeacher:
  """Several loaded teachers acting as one: their logits combined by `combine_logits`."""

  entry: TeacherEntry
  members: list[Teacher]
  combine: str

  def logits(self, images: tf.Tensor) -> tf.Tensor:
    return combine_logits([m.logits(images) for m in self.members], self.combine)

  def predict_logits(self, images: tf.data.Dataset) -> np.ndarray:
    return np.asarray(combine_logits([m.predict_logits(images) for m in self.members],
                                     self.combine), np.float32)

  @property
  def models(self) -> list[keras.Model]:
    return [m.model for m in self.members]


def combine_logits(logits: Sequence, how: str):
  """An ensemble's logits from its members' (each [B, 1] or [B, K], same shape).

  "logits" averages the logits (a geometric mean of the members' odds); "probabilities"
  averages the sigmoid (one unit) or softmax probabilities and returns their logits (log-odds,
  or log-probabilities: a softmax of them gives the average back).

  Raises:
    ValueError: for an unknown `how`, no members, or members of different shapes.
  """
  if how not in ("logits", "probabilities"):
    raise ValueError(f"unknown ensemble combination {how!r}; expected 'logits' or 'probabilities'")
  if not len(logits):
    raise ValueError("an ensemble needs at least one member's logits")
  shapes = {tuple(np.shape(x)) for x in logits}
  if len(shapes) > 1:
    raise ValueError(f"ensemble members give logits of different shapes: {sorted(shapes)}")
  stacked = tf.stack([tf.cast(x, tf.float32) for x in logits])
  if how == "logits":
    return tf.reduce_mean(stacked, 0)
  wide = tf.cast(stacked, tf.float64)  # The mean probability keeps its tails in float64.
  if stacked.shape[-1] == 1:
    mean = tf.reduce_mean(tf.sigmoid(wide), 0)
    return tf.cast(_log_odds(mean, _FLOAT64_TINY, 1.0 - _FLOAT64_EPS), tf.float32)
  mean = tf.reduce_mean(tf.nn.softmax(wide, -1), 0)
  return tf.cast(tf.math.log(tf.maximum(mean, _FLOAT64_TINY)), tf.float32)


def make_ensemble(teacher_id: str, members: Sequence[TeacherEntry], combine: str) -> TeacherEntry:
  """An ensemble entry over `members` (all of one labelling scheme and split).

  Raises:
    TeacherError: for fewer than two members, or members of different schemes or splits.
  """
  members = tuple(sorted(members, key=lambda e: e.teacher_id))
  if len(members) < 2:
    raise TeacherError(f"ensemble {teacher_id!r} has {len(members)} member(s); it needs two or more")
  for field in ("labeling", "split_percent"):
    values = sorted({str(getattr(m, field)) for m in members})
    if len(values) > 1:
      raise TeacherError(f"ensemble {teacher_id!r} mixes teachers of {field} {', '.join(values)}; "
                         "its members must share a labelling scheme and split")
  def joined(field):
    return "+".join(sorted({getattr(m, field) for m in members if getattr(m, field)}))
  return TeacherEntry(teacher_id=teacher_id, labeling=members[0].labeling,
                      split_percent=members[0].split_percent, path="", encoder=joined("encoder"),
                      encoder_optimizer=joined("encoder_optimizer"), output="logits",
                      arch=joined("arch"), members=members, combine=combine)


# The widest range of probabilities a float32 output can hold: its smallest positive value (a
# subnormal) and its largest value below 1. Inverted, they bound the logits at about -103.3
# and +16.6; a logit beyond them reached the output as exactly 0 or 1 and cannot be recovered.
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)
FLOAT32_BELOW_ONE = float(1.0 - np.finfo(np.float32).epsneg)
_FLOAT64_TINY = float(np.finfo(np.float64).smallest_subnormal)
_FLOAT64_EPS = float(np.finfo(np.float64).epsneg)


def _log_odds(p, low: float, high: float):
  p = tf.clip_by_value(p, low, high)
  return tf.math.log(p) - tf.math.log1p(-p)


def probabilities_to_logits(probs: tf.Tensor) -> tf.Tensor:
  """Inverts sigmoid (one unit) or softmax (several; up to a constant per row) in float64.

  Probabilities are clipped to what float32 can hold (`FLOAT32_TINY`, `FLOAT32_BELOW_ONE`), so
  a sigmoid output of exactly 0 or 1 gives about -103.3 or +16.6 instead of an infinity; every
  representable probability inverts to its logit up to float32's rounding of the probability.
  Returns float32 logits.
  """
  p = tf.cast(probs, tf.float64)
  if probs.shape[-1] == 1:
    logits = _log_odds(p, FLOAT32_TINY, FLOAT32_BELOW_ONE)
  else:
    logits = tf.math.log(tf.clip_by_value(p, FLOAT32_TINY, 1.0))
  return tf.cast(logits, tf.float32)


def _activation_name(layer) -> str:
  return getattr(getattr(layer, "activation", None), "__name__", "")


def _final_layer(model):
  """The layer that makes a model's output, inside nested models too (None if it has none)."""
  layer = model.layers[-1] if getattr(model, "layers", None) else None
  while isinstance(layer, keras.Model) and getattr(layer, "layers", None):
    layer = layer.layers[-1]
  return layer


def skip_final_activation(model: keras.Model) -> keras.Model | None:
  """The same network without its final sigmoid/softmax, so it outputs exact logits; None
  where that cannot be done (a SavedModel wrapper, or a last layer of another kind).

  The last layer's activation is set to linear in place when it is a layer attribute (a Dense
  or convolution with `activation="sigmoid"`, an `Activation` layer; inside nested models
  too); a closing `Softmax` layer is cut off. Call it on a model loaded for this purpose only.
  """
  last = model.layers[-1] if getattr(model, "layers", None) else None
  if isinstance(last, keras.layers.Softmax):
    return keras.Model(model.inputs, last.input, name=model.name)
  owner = _final_layer(model)
  if _activation_name(owner) in ("sigmoid", "softmax"):
    owner.activation = keras.activations.linear
    return model
  return None


def load_teacher(entry: TeacherEntry, zoo_dir: str | pathlib.Path, *, image_shape: Sequence[int],
                 num_outputs: int, safe_mode: bool = True, sample: np.ndarray | None = None,
                 fold_batchnorm: bool = True) -> Teacher | EnsembleTeacher:
  """Loads one teacher (or each member of an ensemble) and checks it against the data before
  any training.

  Args:
    entry: its manifest row.
    zoo_dir: the zoo directory (relative paths resolve against it).
    image_shape: (H, W, C) of the data it will label.
    num_outputs: units the task needs (1 binary, K multiclass).
    safe_mode: Keras safe mode for `.keras` files.
    sample: a few data images; when given, the outputs are checked to be finite and, for
      declared logits, not to look like probabilities.
    fold_batchnorm: run an inference copy with the BatchNormalization layers folded into
      the convolutions before them (`inference.fold_batch_norm`: same outputs up to float
      rounding, checked on `sample`; a ResNet152 runs ~1.2x faster).

  Raises:
    TeacherError: naming the teacher, what it expects and what the data has.
  """
  if entry.members:
    return EnsembleTeacher(entry, [load_teacher(
        m, zoo_dir, image_shape=image_shape, num_outputs=num_outputs, safe_mode=safe_mode,
        sample=sample, fold_batchnorm=fold_batchnorm) for m in entry.members], entry.combine)
  path = entry.resolve(zoo_dir)
  try:
    model = load_model_file(path, safe_mode=safe_mode)
  except FileNotFoundError:
    raise TeacherError(f"teacher {entry.teacher_id!r}: no checkpoint at {path}; fix its path in "
                       f"{pathlib.Path(zoo_dir) / MANIFEST} or restore the file") from None
  except TeacherError as e:
    raise TeacherError(f"teacher {entry.teacher_id!r}: {e}") from None
  expected = tuple(model.inputs[0].shape[1:])
  data_shape = tuple(image_shape)
  if len(expected) != 3 or any(e is not None and e != d for e, d in zip(expected, data_shape)):
    raise TeacherError(
        f"teacher {entry.teacher_id!r} expects inputs of shape {_fmt(expected)} but the data has "
        f"{_fmt(data_shape)}; use data with the teacher's bands and size (or resize the data)")
  units = model.outputs[0].shape[-1]
  if units != num_outputs:
    raise TeacherError(
        f"teacher {entry.teacher_id!r} has {units} output unit(s); the task needs {num_outputs} "
        "(1 for binary, K for K classes): check the task flag or the teacher")
  detected = detect_output_kind(model)
  output = entry.output
  if output == "auto":
    if detected == "auto":
      raise TeacherError(f"teacher {entry.teacher_id!r}: cannot tell whether it outputs logits or "
                         "probabilities; set its 'output' column in the manifest")
    output = detected
  elif detected != "auto" and detected != output:
    raise TeacherError(
        f"teacher {entry.teacher_id!r} is declared to output {output} but its last layer gives "
        f"{detected}; fix the 'output' column in the manifest")
  raw = None
  if sample is not None:
    sample = sample[:16]
    raw = np.asarray(model(tf.constant(sample), training=False), np.float32)
    if not np.isfinite(raw).all():
      raise TeacherError(f"teacher {entry.teacher_id!r} gives NaN/inf outputs on the data; "
                         "check the checkpoint and the data's standardisation")
    # Only a model whose layers cannot be inspected (a SavedModel) is judged by its values.
    if detected == "auto" and output == "logits" and raw.size >= 8 and (
        (raw >= 0) & (raw <= 1)).all() and (
        num_outputs == 1 or np.allclose(raw.sum(-1), 1, atol=1e-3)):
      raise TeacherError(
          f"teacher {entry.teacher_id!r} is declared to output logits but all its outputs on "
          "the data lie in [0, 1] like probabilities; set its 'output' column to probabilities")
    if output == "probabilities":
      check_probabilities(entry, raw)
  logits_source = "model"
  if output == "probabilities":
    exact = skip_final_activation(model)
    if exact is not None:
      model, logits_source = exact, "pre_activation"
      if sample is not None:  # The folded copy below is checked against these logits.
        raw = np.asarray(model(tf.constant(sample), training=False), np.float32)
    else:
      logits_source = "inverted"
      log.warning("teacher %s outputs probabilities and its last activation cannot be skipped "
                  "(%s): its logits are inverted from them in float64, exact within [-103.3, "
                  "+16.6], the range float32 probabilities can hold; export it with logits "
                  "to avoid this", entry.teacher_id,
                  "a SavedModel" if path.is_dir() else f"last layer {model.layers[-1].name}")
  if fold_batchnorm:
    folded = inference.fold_batch_norm(model, sample, reference=raw)
    if folded.folded:
      log.info("teacher %s: %d BatchNormalization layers folded into the layers before them "
               "(outputs within %.1e of the checkpoint's)", entry.teacher_id, folded.folded,
               folded.deviation)
    model = folded.model
  return Teacher(entry=entry, model=model, output=output, logits_source=logits_source)


def check_probabilities(entry: TeacherEntry, outputs: np.ndarray) -> None:
  """Refuses a teacher declared to output probabilities whose outputs leave [0, 1].

  Raises:
    TeacherError: naming the teacher, how many outputs are outside and the fix.
  """
  outputs = np.asarray(outputs)
  outside = (outputs < 0) | (outputs > 1)
  if outside.any():
    raise TeacherError(
        f"teacher {entry.teacher_id!r} is declared to output probabilities but "
        f"{int(outside.sum())} of its {outputs.size} outputs on the data lie outside [0, 1] "
        f"(from {float(outputs.min()):.3g} to {float(outputs.max()):.3g}): it outputs logits. "
        "Set its 'output' column to logits in the zoo manifest")


def _fmt(shape: Sequence) -> str:
  return "x".join("?" if s is None else str(s) for s in shape)
