"""Stage 2: fine-tune pretrained SimCLR encoders into the teacher zoo stage 3 reads.

A teacher is the pretrained network (encoder + projection head) cut at its 512-unit projection
layer, then the study's head: Dense 256 elu -> Dropout 0.5 -> Dense 256 elu -> Dropout 0.5 ->
Dense 1 (logits; the study's sigmoid is applied by whoever reads them). It trains with Adam
5e-5 on a label split, early-stops on validation AUC with the best weights restored, and is
scored on the scheme's test list like every other run (`stage=finetune` in the results table).

`freeze` decides what trains:
  * "none": everything, as the study's code did;
  * "encoder": only the new head (the pretrained network frozen), as the study's text says;
  * "blocks:N": the first N blocks of the encoder frozen, the rest and the head trained.
Blocks are the architecture's own units, read from its layer names: a ResNet's stem and each
residual block (`conv2_block1`, ...), Xception's `blockK`, InceptionV3's `mixedK` modules (its
stem goes with `mixed0`), the small CNN's `cnn_blockK`, ResNet-18's stem and blocks, the MLP's
dense layers.

Finished teachers are copied into the zoo (`<zoo>/<teacher_id>.keras`) and listed in its
`manifest.csv` with their provenance: the run, the pretraining checkpoint, the freeze, the seed,
the best epoch and the test F1.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import shutil
from typing import Sequence

import keras

from simclr_distill import config as config_lib, fileio, pretrain, provenance
from simclr_distill import teachers as teachers_lib

log = logging.getLogger(__name__)

HEAD_UNITS = (256, 256)
RANDOM_INIT = "none"  # The encoder name of a teacher fine-tuned from random weights.


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """Stage-2 training of every teacher.

  Attributes:
    freeze: "none", "encoder" or "blocks:N" (see the module docstring).
    learning_rate: Adam's learning rate (the study: 5e-5).
    batch_size: per-replica batch size.
    epochs: maximum epochs.
    min_steps_per_epoch: an epoch is one pass over the labelled split or this many steps,
      whichever is more (0: one pass; a 3% split of 30 examples is one step).
    patience: early-stopping patience on `monitor` (the study: 25 on validation AUC).
    monitor: early-stopping metric ("val_auc" maximised; a name ending in "loss" minimised).
    dropout: the head's dropout rate.
    seeds: one teacher per seed; seed 0 is named `<encoder>-<scheme>-<pct>`, others add `-s<seed>`.
  """

  freeze: str = "none"
  learning_rate: float = 5e-5
  batch_size: int = 32
  epochs: int = 50
  min_steps_per_epoch: int = 0
  patience: int = 25
  monitor: str = "val_auc"
  dropout: float = 0.5
  seeds: tuple[int, ...] = (0,)

  def __post_init__(self):
    import math

    object.__setattr__(self, "freeze", parse_freeze(self.freeze))
    config_lib._check(math.isfinite(self.learning_rate) and self.learning_rate > 0,
                      f"finetune.learning_rate={self.learning_rate} must be > 0 and finite")
    config_lib._check(self.batch_size >= 1, "finetune.batch_size must be >= 1")
    config_lib._check(self.epochs >= 1, "finetune.epochs must be >= 1")
    config_lib._check(self.min_steps_per_epoch >= 0, "finetune.min_steps_per_epoch must be >= 0")
    config_lib._check(self.patience >= 1, "finetune.patience must be >= 1")
    config_lib._check(self.monitor in config_lib.MONITORS
                      and self.monitor not in config_lib.DISTILL_MONITORS,
                      f"finetune.monitor (--finetune_monitor)={self.monitor!r} is not one of "
                      f"{', '.join(m for m in config_lib.MONITORS if m not in config_lib.DISTILL_MONITORS)}")
    config_lib._check(0.0 <= self.dropout < 1.0, f"finetune.dropout={self.dropout} must be in [0, 1)")
    config_lib._check(len(self.seeds) > 0, "finetune.seeds is empty; give at least one seed")


def parse_freeze(value: str | int) -> str:
  """Normalises a freeze choice: "none", "encoder", "blocks:N" or a bare N -> "blocks:N".

  Raises:
    ValueError: for anything else, listing the choices.
  """
  text = str(value).strip()
  if text in ("none", "encoder"):
    return text
  match = re.fullmatch(r"(?:blocks:)?(\d+)", text)
  if not match:
    raise ValueError(f"freeze={value!r} is not one of: none (train everything), encoder (train "
                     "only the head), N or blocks:N (freeze the encoder's first N blocks)")
  return "none" if int(match.group(1)) == 0 else f"blocks:{int(match.group(1))}"


# ---- Encoder blocks ----------------------------------------------------------------------------

# A layer's block: a named block or stage prefix, a numbered stem unit, an Inception module.
# InceptionV3's inner concatenations (`mixed9_0`) are not module boundaries.
_BLOCK_KEY = re.compile(r"^(.*?block\d+|.*?stem|conv\d+|pool\d+|mixed\d+(?=$)|post|mlp_dense\d+)(?:_|$)")
_ENCODER_END = ("pool", "projection_1024")


def encoder_layers(model: keras.Model) -> list[keras.layers.Layer]:
  """The layers of a SimCLR network (or a teacher built on one) before its pooling/projection."""
  layers = []
  for layer in model.layers:
    if layer.name in _ENCODER_END:
      return layers
    if not isinstance(layer, keras.layers.InputLayer):
      layers.append(layer)
  raise ValueError(f"model {model.name!r} has no layer named {' or '.join(_ENCODER_END)}; it is "
                   "not a SimCLR network from stage 1 (pretrain.build_simclr_model)")


def encoder_blocks(model: keras.Model) -> list[tuple[str, list[keras.layers.Layer]]]:
  """The encoder's blocks in order, as (name, layers), keeping only blocks with weights.

  Unnamed layers (Keras' auto names such as `add_3` or `conv2d_7`) join the block before them,
  except before an Inception `mixedK` concatenation, whose branches they are.
  """
  blocks: list[tuple[str, list]] = []
  pending: list = []
  for layer in encoder_layers(model):
    match = _BLOCK_KEY.match(layer.name)
    if not match:
      pending.append(layer)
      continue
    key = match.group(1)
    if key.startswith("mixed"):
      members = pending + [layer]
    else:
      if blocks:
        blocks[-1][1].extend(pending)
      elif pending:
        blocks.append(("stem", pending))
      members = [layer]
    pending = []
    if blocks and blocks[-1][0] == key:
      blocks[-1][1].extend(members)
    else:
      blocks.append((key, members))
  if pending:
    if blocks:
      blocks[-1][1].extend(pending)
    else:
      blocks.append(("stem", pending))
  return [(name, layers) for name, layers in blocks if any(l.weights for l in layers)]


def apply_freeze(model: keras.Model, freeze: str) -> list[str]:
  """Freezes part of a teacher in place; returns the frozen blocks' (or layers') names.

  Raises:
    ValueError: for a freeze asking for more blocks than the encoder has.
  """
  freeze = parse_freeze(freeze)
  if freeze == "none":
    return []
  if freeze == "encoder":
    frozen = []
    for layer in model.layers:
      if layer.name == "finetune_dense1":
        break
      layer.trainable = False
      frozen.append(layer.name)
    return frozen
  count = int(freeze.split(":")[1])
  blocks = encoder_blocks(model)
  if count > len(blocks):
    raise ValueError(f"freeze={freeze}: the encoder has only {len(blocks)} blocks "
                     f"({', '.join(name for name, _ in blocks)}); freeze at most {len(blocks)} "
                     "or use --freeze=encoder")
  for _, layers in blocks[:count]:
    for layer in layers:
      layer.trainable = False
  return [name for name, _ in blocks[:count]]


# ---- The teacher model -------------------------------------------------------------------------


def attach_head(network: keras.Model, *, num_outputs: int = 1, dropout: float = 0.5,
                name: str = "teacher") -> keras.Model:
  """The study's fine-tuning head on a SimCLR network's 512-unit projection layer.

  Raises:
    ValueError: if the network has no `projection_512` layer.
  """
  try:
    features = network.get_layer(pretrain.PROJECTION_LAYER).output
  except ValueError:
    raise ValueError(f"{network.name!r} has no layer {pretrain.PROJECTION_LAYER!r}: fine-tuning "
                     "attaches to the 512-unit projection layer of a stage-1 network") from None
  x = features
  for i, units in enumerate(HEAD_UNITS, start=1):
    x = keras.layers.Dense(units, activation="elu", name=f"finetune_dense{i}")(x)
    if dropout > 0:
      x = keras.layers.Dropout(dropout, name=f"finetune_dropout{i}")(x)
  logits = keras.layers.Dense(num_outputs, dtype="float32", name="logits")(x)
  return keras.Model(network.inputs[0], logits, name=name)


def build_teacher(checkpoint: str | pathlib.Path | None, *, arch: str, input_shape,
                  width: int | None, num_outputs: int, dropout: float, freeze: str,
                  safe_mode: bool = True, seed: int | None = None) -> keras.Model:
  """A teacher to fine-tune: the pretrained network at `checkpoint` (None: a randomly
  initialised one of `arch`) with the study's head, partly frozen per `freeze`.

  With `seed`, the global random state is reset to it after the checkpoint is loaded (loading
  draws from it), so the head starts from the same weights whichever encoder it sits on: the
  teachers of one seed differ only by their encoder.

  Raises:
    ValueError: for a checkpoint whose input does not match the data, or a bad freeze.
  """
  if checkpoint is None:
    network = pretrain.build_simclr_model(arch, input_shape, width=width)
  else:
    network = teachers_lib.load_model_file(checkpoint, safe_mode=safe_mode)
    expected = tuple(network.inputs[0].shape[1:])
    if expected != tuple(input_shape):
      raise ValueError(f"encoder {checkpoint} takes {expected} inputs but the data is "
                       f"{tuple(input_shape)}; fine-tune on data prepared like its pretraining data")
  if seed is not None:
    keras.utils.set_random_seed(seed)
  model = attach_head(network, num_outputs=num_outputs, dropout=dropout,
                      name=f"teacher_{network.name}")
  apply_freeze(model, freeze)
  return model


# ---- Encoders and the zoo ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Encoder:
  """A pretrained encoder ready to fine-tune (or `RANDOM_INIT`, with no checkpoint); `freeze`
  overrides the stage's freeze for its teachers (None: the stage's)."""

  name: str
  optimizer: str = ""
  checkpoint: str | None = None
  arch: str = ""
  width: int | None = None
  freeze: str | None = None

  @property
  def digest(self) -> str:
    return fileio.digest(self.checkpoint) if self.checkpoint else ""


def publish_teacher(zoo_dir: str | pathlib.Path, run, row: dict, checkpoint: pathlib.Path,
                    encoder: Encoder) -> teachers_lib.TeacherEntry:
  """Copies a finished stage-2 run's model into the zoo and lists it, with its provenance."""
  zoo_dir = pathlib.Path(zoo_dir)
  tid = run.axes()["teacher_id"]
  with fileio.atomic_path(zoo_dir / f"{tid}.keras", suffix=".keras") as tmp:
    shutil.copyfile(checkpoint, tmp)
  entry = teachers_lib.TeacherEntry(
      teacher_id=tid, encoder=run.encoder, encoder_optimizer=run.encoder_optimizer,
      labeling=run.labeling, split_percent=run.split_percent, path=f"{tid}.keras",
      output="logits", arch=run.arch, provenance={
          "source_run": run.run_id, "digest": provenance.file_digest(zoo_dir / f"{tid}.keras"),
          # Relative to the zoo's parent (the study's workdir), so a moved workdir stays whole.
          "pretrain_checkpoint": fileio.relative_to(encoder.checkpoint, zoo_dir.parent)
                                 if encoder.checkpoint else "",
          "pretrain_digest": run.encoder_digest,
          "freeze": run.freeze, "seed": str(run.seed), "best_epoch": str(row.get("best_epoch", "")),
          "test_f1": f"{row.get('f1', float('nan')):.4f}", "code_version": row.get("code_version", ""),
          "created_at": row.get("finished_at", "")})
  previous = {e.teacher_id: e for e in teachers_lib.read_zoo(zoo_dir)} if (
      zoo_dir / teachers_lib.MANIFEST).is_file() else {}
  if tid in previous and previous[tid].provenance.get("source_run", run.run_id) != run.run_id:
    log.warning("zoo %s: teacher %s (from run %s) is replaced by run %s; use another --zoo_dir "
                "to keep teachers of other settings", zoo_dir, tid,
                previous[tid].provenance.get("source_run"), run.run_id)
  teachers_lib.add_to_zoo(zoo_dir, [entry])
  return entry


def pretrained_encoders(workdir: str | pathlib.Path, names: Sequence[str] = ()) -> list[Encoder]:
  """The encoders stage 1 finished in `workdir/pretrain/` (all, or those named).

  Raises:
    FileNotFoundError: for a named encoder that has no finished checkpoint.
  """
  root = pathlib.Path(workdir) / "pretrain"
  found = {}
  for checkpoint in sorted(root.glob(f"*/{pretrain.CHECKPOINT}")):
    settings = fileio.read_json(checkpoint.parent / "config.json")["pretrain"]
    found[checkpoint.parent.name] = Encoder(
        name=checkpoint.parent.name, optimizer=settings["optimizer"], checkpoint=str(checkpoint),
        arch=settings["arch"], width=settings.get("width"))
  missing = [n for n in names if n not in found and n != RANDOM_INIT]
  if missing:
    raise FileNotFoundError(
        f"no finished pretraining for encoder(s) {', '.join(missing)} under {root} (found: "
        f"{', '.join(found) or 'none'}); run stages.pretrain --name=... first, or stages.study")
  return [found[n] for n in names if n in found] if names else list(found.values())
