"""Student architectures by name, and the heads that turn their features into logits.

Every architecture is registered in `ARCHITECTURES` under the name configs and the study's `arch`
column use. `build_model` joins an architecture's feature extractor to a head:

  model = build_model("ResNet50", (120, 120, 10), num_outputs=19)

Models are functional `keras.Model`s made only of built-in Keras layers (no custom classes, no
`Lambda`), so a saved `.keras` file loads with plain `keras.models.load_model` in a process that
never imports this package. Outputs are logits: the caller applies sigmoid or softmax.

The five paper students come from `keras.applications` (random init, any band count). The small
students (`mlp`, `cnn`, `resnet18`) let the whole pipeline run on CPU and on digits-sized inputs;
for them `width` is the number of units or filters of the first layer, later layers scale from it.
"""

from __future__ import annotations

import dataclasses
import numbers
import pathlib
from typing import Callable, Sequence

import keras
import numpy as np

from simclr_distill.registry import Registry

HEADS = ("study", "pooled")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
  """How to build one architecture's feature extractor.

  Attributes:
    name: The registry name, also the study's `arch` column value.
    build_features: Maps (input tensor, width) to a feature map (rank 4) or vector (rank 2).
      `width` is None for the architecture's default.
    min_size: Smallest input height and width the architecture accepts.
    paper: Whether this is one of the five SimCLR-S2 students.
    description: One line for `--helpfull` and the docs.
    default_width: The width used when none is given; None where width is not adjustable.
  """

  name: str
  build_features: Callable[[keras.KerasTensor, int | None], keras.KerasTensor]
  min_size: int
  paper: bool
  description: str
  default_width: int | None = None
  application: Callable[..., keras.Model] | None = None
  imagenet_file: str | None = None


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture")


def _register(spec: ArchSpec) -> ArchSpec:
  return ARCHITECTURES.register(spec.name)(spec)


# ---- Paper students (keras.applications) -----------------------------------------------------


def _application_features(application: Callable[..., keras.Model]):
  """Wraps a `keras.applications` constructor as a `build_features` function."""

  def build_features(x: keras.KerasTensor, width: int | None) -> keras.KerasTensor:
    del width  # build_model rejects a width for these.
    # Passing only `input_tensor` (not `input_shape`) keeps the application's layers in our
    # graph, so the saved model is one flat functional model. It also skips Keras's "expects 1 or
    # 3 input channels" warning for multispectral inputs; the size check is ours
    # (check_input_size), because without `input_shape` Keras checks nothing.
    backbone = application(include_top=False, weights=None, input_tensor=x)
    return backbone.output

  return build_features


for _name, _application, _min_size, _weights in (
    # Keras's documented minimums. Xception and the ResNets happen to build a little below them,
    # but these are the sizes the implementations promise, so they are the contract here.
    # The last column is the file name under which Keras caches the ImageNet weights.
    ("Xception", keras.applications.Xception, 71, "xception"),
    ("InceptionV3", keras.applications.InceptionV3, 75, "inception_v3"),
    ("ResNet50", keras.applications.ResNet50, 32, "resnet50"),
    ("ResNet101V2", keras.applications.ResNet101V2, 32, "resnet101v2"),
    ("ResNet152", keras.applications.ResNet152, 32, "resnet152"),
):
  _register(
      ArchSpec(
          name=_name,
          build_features=_application_features(_application),
          min_size=_min_size,
          paper=True,
          description=f"keras.applications.{_name}, random init, any band count",
          application=_application,
          imagenet_file=f"{_weights}_weights_tf_dim_ordering_tf_kernels_notop.h5",
      )
  )
del _name, _application, _min_size, _weights


# ---- Small students --------------------------------------------------------------------------


def _mlp_features(x: keras.KerasTensor, width: int | None) -> keras.KerasTensor:
  width = width or 256
  x = keras.layers.Flatten(name="mlp_flatten")(x)
  x = keras.layers.Dense(width, activation="relu", name="mlp_dense1")(x)
  return keras.layers.Dense(max(width // 2, 1), activation="relu", name="mlp_dense2")(x)


def _cnn_features(x: keras.KerasTensor, width: int | None) -> keras.KerasTensor:
  width = width or 32
  for block, filters in enumerate((width, 2 * width), start=1):
    for conv in (1, 2):
      x = keras.layers.Conv2D(
          filters, 3, padding="same", activation="relu", name=f"cnn_block{block}_conv{conv}"
      )(x)
    x = keras.layers.MaxPooling2D(2, name=f"cnn_block{block}_pool")(x)
  return x


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str):
  # No conv bias: the BatchNorm that follows has its own offset.
  x = keras.layers.Conv2D(
      filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
  )(x)
  return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = _conv_bn(x, filters, 1, stride, f"{name}_shortcut")
  y = _conv_bn(x, filters, 3, stride, f"{name}_1")
  y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
  y = _conv_bn(y, filters, 3, 1, f"{name}_2")
  y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
  return keras.layers.ReLU(name=f"{name}_out")(y)


def _resnet18_features(x: keras.KerasTensor, width: int | None) -> keras.KerasTensor:
  width = width or 64
  # CIFAR-style stem: a stride-1 3x3 conv and no max-pool, so 8x8 inputs keep spatial extent
  # until the last stage.
  x = _conv_bn(x, width, 3, 1, "resnet18_stem")
  x = keras.layers.ReLU(name="resnet18_stem_relu")(x)
  for stage, (multiplier, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
    for block in (1, 2):
      x = _basic_block(
          x, multiplier * width, stride if block == 1 else 1, f"resnet18_stage{stage}_block{block}"
      )
  return x


_register(
    ArchSpec(
        name="mlp",
        build_features=_mlp_features,
        min_size=1,
        paper=False,
        description="Flatten -> Dense(width) relu -> Dense(width // 2) relu; width 256",
        default_width=256,
    )
)
_register(
    ArchSpec(
        name="cnn",
        build_features=_cnn_features,
        min_size=4,
        paper=False,
        description="two blocks of [conv3x3 relu, conv3x3 relu, maxpool2] with width, 2*width "
        "filters; width 32",
        default_width=32,
    )
)
_register(
    ArchSpec(
        name="resnet18",
        build_features=_resnet18_features,
        min_size=8,
        paper=False,
        description="CIFAR-style ResNet-18 (3x3 stride-1 stem, no max-pool, BatchNorm), stage "
        "widths width..8*width; width 64",
        default_width=64,
    )
)


# ---- ImageNet initialisation -----------------------------------------------------------------

DEFAULT_IMAGENET_DIR = "~/.keras/models"  # Where keras.applications caches downloaded weights.


def imagenet_file(arch: str, imagenet_dir: str | None) -> pathlib.Path:
  """Where the ImageNet weights of a paper architecture are looked for (None: it has none)."""
  name = ARCHITECTURES.get(arch).imagenet_file
  return pathlib.Path(imagenet_dir or DEFAULT_IMAGENET_DIR).expanduser() / name if name else None


def imagenet_weights_path(arch: str, imagenet_dir: str | None) -> pathlib.Path:
  """The local ImageNet (no-top) weights file of a paper architecture.

  Raises:
    ValueError: for an architecture without ImageNet weights.
    FileNotFoundError: if the file is not there, saying how to get it.
  """
  spec = ARCHITECTURES.get(arch)
  if spec.imagenet_file is None:
    with_weights = [n for n in ARCHITECTURES.names() if ARCHITECTURES.get(n).imagenet_file]
    raise ValueError(f"{arch} has no ImageNet weights; the ImageNet baseline needs one of "
                     f"{', '.join(with_weights)}")
  path = imagenet_file(arch, imagenet_dir)
  if not path.is_file():
    raise FileNotFoundError(
        f"no ImageNet weights for {arch} at {path}; copy them there (on a machine with internet, "
        f"keras.applications.{arch}(weights='imagenet', include_top=False) downloads them to "
        f"{DEFAULT_IMAGENET_DIR}), point --imagenet_dir at them, or drop 'imagenet' from "
        "--baseline_inits")
  return path


def _adapt_first_kernel(kernel: np.ndarray, bands: int) -> np.ndarray:
  """An RGB kernel [k, k, 3, f] for `bands` input channels: the RGB filters on the first three
  bands (BigEarthNet records store B04, B03, B02 = R, G, B first), their mean on the others,
  scaled by 3 / bands so a layer's response keeps its scale (torchgeo and timm do the same)."""
  if bands == 3:
    return kernel
  mean = kernel.mean(axis=2, keepdims=True)
  extra = np.repeat(mean, max(bands - 3, 0), axis=2)
  adapted = np.concatenate([kernel[:, :, :min(bands, 3)], extra], axis=2)
  return (adapted * (3.0 / bands)).astype(kernel.dtype)


def load_imagenet_backbone(model: keras.Model, arch: str, weights_path: str | pathlib.Path) -> int:
  """Loads ImageNet weights into the backbone of a `build_model` model and freezes it.

  The weights are read into a 3-band copy of the architecture and copied layer by layer in
  build order; the first convolution is adapted to the model's band count. Returns the number
  of layers initialised.

  Raises:
    ValueError: if the file does not fit the architecture.
  """
  spec = ARCHITECTURES.get(arch)
  height, width, bands = model.inputs[0].shape[1:]
  try:
    reference = spec.application(include_top=False, weights=str(weights_path),
                                 input_shape=(height, width, 3))
  except Exception as e:  # Keras raises several types for a file of the wrong model.
    raise ValueError(f"{weights_path} is not a {arch} ImageNet no-top weights file ({e})") from e
  ours = [layer for layer in model.layers if layer.weights and not layer.name.startswith(("head_", "logits"))]
  theirs = [layer for layer in reference.layers if layer.weights]
  if len(ours) != len(theirs):
    raise ValueError(f"{arch}: {len(theirs)} weighted layers in the reference, {len(ours)} here")
  for target, source in zip(ours, theirs):
    values = source.get_weights()
    if values and values[0].ndim == 4 and values[0].shape[2] != target.get_weights()[0].shape[2]:
      values[0] = _adapt_first_kernel(values[0], int(bands))
    target.set_weights(values)
    target.trainable = False
  return len(ours)


# ---- Public API ------------------------------------------------------------------------------


def architecture_names(paper: bool | None = None) -> list[str]:
  """Returns the registered architecture names, sorted.

  Args:
    paper: True for only the five SimCLR-S2 students, False for only the others, None for all.
  """
  return [
      name
      for name in ARCHITECTURES.names()
      if paper is None or ARCHITECTURES.get(name).paper == paper
  ]


def _is_int(value: object) -> bool:
  # bool is an int subclass, but True is never a sensible size or count; numpy ints are fine.
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _validate_input_shape(input_shape: object) -> tuple[int, int, int]:
  try:
    dims = tuple(input_shape)
  except TypeError:
    dims = ()
  if isinstance(input_shape, str) or len(dims) != 3 or not all(_is_int(d) and d > 0 for d in dims):
    raise ValueError(
        f"input_shape must be three positive ints (height, width, bands), got {input_shape!r}"
    )
  return tuple(int(d) for d in dims)


def check_input_size(arch: str, input_shape: Sequence[int]) -> None:
  """Checks that `arch` accepts inputs of `input_shape`, without building anything.

  Args:
    arch: A registered architecture name.
    input_shape: (height, width, bands).

  Raises:
    KeyError: if `arch` is not registered (the message lists the known names).
    ValueError: if `input_shape` is not three positive ints, or is smaller than the
      architecture's minimum; the message names the architectures that would accept it.
  """
  spec = ARCHITECTURES.get(arch)
  height, width, bands = _validate_input_shape(input_shape)
  if min(height, width) >= spec.min_size:
    return
  accepting = [
      name
      for name in ARCHITECTURES.names()
      if ARCHITECTURES.get(name).min_size <= min(height, width)
  ]
  raise ValueError(
      f"{arch} needs inputs of at least {spec.min_size}x{spec.min_size} pixels, got "
      f"{height}x{width}x{bands}. Resize the data or choose an architecture that accepts "
      f"inputs of this size: {', '.join(accepting)}."
  )


def _study_head(x: keras.KerasTensor, dropout: float) -> keras.KerasTensor:
  # The SimCLR-S2 student head: a flattened feature map through three ELU layers.
  x = keras.layers.Flatten(name="head_flatten")(x)
  for units in (1024, 512, 256):
    x = keras.layers.Dense(units, activation="elu", name=f"head_dense{units}")(x)
    # The study drops out after the first two dense layers only.
    if units != 256 and dropout > 0:
      x = keras.layers.Dropout(dropout, name=f"head_dropout{units}")(x)
  return x


def _pooled_head(x: keras.KerasTensor, dropout: float) -> keras.KerasTensor:
  if len(x.shape) == 4:
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
  if dropout > 0:
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
  return x


_HEAD_BUILDERS = {"study": _study_head, "pooled": _pooled_head}


def build_model(
    arch: str,
    input_shape: Sequence[int],
    num_outputs: int = 1,
    *,
    head: str = "study",
    dropout: float = 0.25,
    width: int | None = None,
    name: str | None = None,
) -> keras.Model:
  """Builds a student: the architecture's features followed by a head that emits logits.

  Args:
    arch: A registered architecture name (see `architecture_names()`).
    input_shape: (height, width, bands), channels last; any band count.
    num_outputs: Logit units: 1 for a binary task, K for K classes or K labels.
    head: "study" (Flatten -> Dense 1024/512/256 elu, dropout after the first two) or "pooled"
      (global average pooling -> dropout -> Dense).
    dropout: Dropout rate in [0, 1); 0 leaves the Dropout layers out.
    width: Units or filters of the first layer of a small architecture (mlp 256, cnn 32,
      resnet18 64 by default); must be None for the paper architectures.
    name: Model name; defaults to f"{arch}_student".

  Returns:
    A functional `keras.Model` with input layer "image" and a float32, activation-free
    output layer "logits" of `num_outputs` units. All weights are trainable.

  Raises:
    KeyError: if `arch` is not registered.
    ValueError: for a bad input_shape, an input below the architecture's minimum size, an
      unknown head, num_outputs < 1, dropout outside [0, 1), or an invalid width.
  """
  spec = ARCHITECTURES.get(arch)
  check_input_size(arch, input_shape)
  if head not in HEADS:
    raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
  if not _is_int(num_outputs) or num_outputs < 1:
    raise ValueError(f"num_outputs must be an int >= 1, got {num_outputs!r}")
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
  if width is not None:
    if spec.default_width is None:
      adjustable = [n for n in ARCHITECTURES.names() if ARCHITECTURES.get(n).default_width]
      raise ValueError(
          f"{arch} has a fixed width, got width={width!r}; leave width unset or choose one of "
          f"{', '.join(adjustable)}"
      )
    if not _is_int(width) or width < 1:
      raise ValueError(f"width must be a positive int, got {width!r}")
    width = int(width)  # Keras layers reject numpy ints.

  inputs = keras.Input(shape=_validate_input_shape(input_shape), name="image")
  features = spec.build_features(inputs, width)
  x = _HEAD_BUILDERS[head](features, float(dropout))
  # float32 even under a mixed-precision policy: losses on float16 logits lose precision.
  logits = keras.layers.Dense(int(num_outputs), activation=None, dtype="float32", name="logits")(x)
  return keras.Model(inputs, logits, name=name or f"{arch}_student")
