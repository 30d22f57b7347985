"""Inference-only copies of frozen networks: BatchNormalization folded into the layer before it.

A teacher only ever runs in inference mode, where a BatchNormalization layer is a fixed affine
map per channel, `gamma * (x - mean) / sqrt(var + eps) + beta`. When it directly follows a
linear convolution or dense layer whose output nothing else reads, that map can be folded into
the layer's kernel and bias, and the BatchNormalization dropped: the copy computes the same
function (up to float rounding) with one pass over every activation tensor less. Keras 3 runs
BatchNormalization as separate element-wise ops that TensorFlow's graph optimiser does not fuse
into the convolution, so on a ResNet152 teacher (155 foldable layers) this makes the forward
pass ~1.2x faster on a CPU (`python -m benchmarks.distill_online`; RESULTS.md).

The copy is checked against the original on sample images before it is used; a copy that
deviates (a layer this module does not understand) is discarded with a warning.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

log = logging.getLogger(__name__)

# Layers whose kernel's last axis is the output channel, so a per-channel scale folds into it.
# Exact types: Conv2DTranspose (kernel [.., out, in]) and depthwise/separable convolutions have
# other kernel layouts and are left alone.
_FOLDABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)

# A folded copy may differ from the original by float rounding only: the largest absolute
# difference of its outputs, over 1 + the largest absolute output.
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class FoldResult:
  """What `fold_batch_norm` returns.

  Attributes:
    model: the model to run: the folded copy, or the original where nothing was folded.
    folded: BatchNormalization layers folded away (0: `model` is the original).
    deviation: largest |copy - original| output on the check images, over 1 + max |original|
      (0.0 where nothing was folded).
  """

  model: keras.Model
  folded: int
  deviation: float = 0.0


@keras.saving.register_keras_serializable(package="simclr_distill")
class FoldedBatchNorm(keras.layers.Layer):
  """Stands where a folded BatchNormalization stood: passes its input through (and takes the
  `training`/`mask` arguments a BatchNormalization call was recorded with)."""

  def call(self, inputs, training=None, mask=None):
    del training, mask
    return inputs

  def compute_output_shape(self, input_shape):
    return input_shape


def _producer(layer: keras.layers.Layer):
  """The operation whose output is `layer`'s only input, or None."""
  if len(layer._inbound_nodes) != 1:  # Shared (called several times): not foldable.
    return None
  tensors = layer._inbound_nodes[0].input_tensors
  if len(tensors) != 1:
    return None
  history = getattr(tensors[0], "_keras_history", None)
  return None if history is None else history.operation


def _is_foldable_pair(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> bool:
  if type(layer) not in _FOLDABLE or not layer.built or not bn.built:
    return False
  if layer.activation is not keras.activations.linear:
    return False  # The normalisation acts after a non-linearity.
  if len(layer._inbound_nodes) != 1 or len(layer._outbound_nodes) != 1:
    return False  # Shared, or its output also feeds another layer.
  if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
    return False
  rank = len(layer.output.shape)
  if bn.axis not in (-1, rank - 1):
    return False  # Normalises another axis than the layer's output channels.
  return layer.kernel.shape[-1] == bn.moving_mean.shape[-1]


def _foldable_pairs(model: keras.Model, pairs: dict[int, tuple]) -> None:
  """Fills `pairs` with id(layer) -> (layer, bn) and id(bn) -> (layer, bn), nested models
  included."""
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      _foldable_pairs(layer, pairs)
    elif isinstance(layer, keras.layers.BatchNormalization):
      producer = _producer(layer)
      if producer is not None and _is_foldable_pair(producer, layer):
        pairs[id(producer)] = pairs[id(layer)] = (producer, layer)


def _folded_weights(layer, bn) -> list[np.ndarray]:
  """[kernel, bias] of `layer` followed by `bn` (inference mode) as one layer."""
  mean = np.asarray(bn.moving_mean, np.float64)
  scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
  if bn.gamma is not None:
    scale = scale * np.asarray(bn.gamma, np.float64)
  offset = np.zeros_like(mean) if bn.beta is None else np.asarray(bn.beta, np.float64)
  kernel = np.asarray(layer.kernel, np.float64)
  bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros_like(mean)
  dtype = layer.kernel.dtype
  return [(kernel * scale).astype(dtype), ((bias - mean) * scale + offset).astype(dtype)]


def fold_batch_norm(model: keras.Model, sample: np.ndarray | None = None, *,
                    reference: np.ndarray | None = None,
                    tolerance: float = TOLERANCE) -> FoldResult:
  """An inference-only copy of `model` with each foldable BatchNormalization folded into the
  convolution or dense layer before it.

  The original is not changed. Models that cannot be cloned (subclassed models, SavedModel
  wrappers) and models with nothing to fold come back as they are.

  Args:
    model: a functional or Sequential Keras model (nested ones included), used in inference
      mode only: the copy has no BatchNormalization statistics left to train.
    sample: images to check the copy on ([N, H, W, C], N >= 1); default: 4 seeded
      standard-normal images of the model's input shape (the pipeline's inputs are
      standardised).
    reference: `model`'s outputs on `sample`, where the caller has them already (a teacher's
      load checks run the same images), so the original is not run twice.
    tolerance: the largest accepted deviation (see `FoldResult.deviation`).

  Returns:
    A `FoldResult`; its `model` is the copy only if the copy passed the check.
  """
  pairs: dict[int, tuple] = {}
  try:
    _foldable_pairs(model, pairs)
  except (AttributeError, ValueError):
    return FoldResult(model, 0)
  if not pairs:
    return FoldResult(model, 0)
  cloned: list[tuple] = []

  def clone(layer):
    pair = pairs.get(id(layer))
    if pair is not None and layer is pair[1]:
      new = FoldedBatchNorm(name=layer.name)
    else:
      config = layer.get_config()
      if pair is not None:
        config["use_bias"] = True
      new = layer.__class__.from_config(config)
    cloned.append((layer, new))
    return new

  try:
    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
  except (TypeError, ValueError, NotImplementedError) as e:
    log.warning("cannot fold the BatchNormalization layers of %s (%s); running it as it is",
                model.name, e)
    return FoldResult(model, 0)
  for original, new in cloned:
    pair = pairs.get(id(original))
    if pair is None:
      new.set_weights(original.get_weights())
    elif original is pair[0]:
      new.set_weights(_folded_weights(*pair))
  if sample is None:
    _, *rest = model.inputs[0].shape
    shape = (4, *(32 if d is None else d for d in rest))
    sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    reference = None
  if reference is None:
    reference = model(sample, training=False)
  reference = np.asarray(reference, np.float64)
  got = np.asarray(copy(sample, training=False), np.float64)
  deviation = float(np.max(np.abs(got - reference)) / (1.0 + np.max(np.abs(reference))))
  if not np.isfinite(deviation) or deviation > tolerance:
    log.warning("folding the BatchNormalization layers of %s changed its outputs by %.3g (more "
                "than %.1g); running it as it is", model.name, deviation, tolerance)
    return FoldResult(model, 0)
  return FoldResult(copy, len(pairs) // 2, deviation)  # Each pair is keyed twice.
