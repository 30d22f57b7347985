"""The stage-2 teacher network: a pretrained SimCLR network with the study's head, partly frozen.

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

How it trains (stage 2's settings) is `study_config.FinetuneConfig`; `steps.finetune` trains and
publishes the teachers.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import keras

from simclr_distill import fileio, simclr
from simclr_distill import teachers as teachers_lib
from simclr_distill.study_config import parse_freeze


HEAD_UNITS = (256, 256)


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
                   "not a SimCLR network from stage 1 (simclr.build_simclr_model)")


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
    features = network.get_layer(simclr.PROJECTION_LAYER).output
  except ValueError:
    raise ValueError(f"{network.name!r} has no layer {simclr.PROJECTION_LAYER!r}: fine-tuning "
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
    network = simclr.build_simclr_model(arch, input_shape, width=width)
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
