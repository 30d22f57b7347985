"""SimCLR-S2's multispectral augmentations and the policies that combine them.

Every op is a per-example function `op(image, seed, **params) -> image` on a float32 image of
shape [H, W, C] with any band count C (10 for BigEarthNet, 1 for digits). Randomness comes only
from `seed`, an integer tensor of shape [2] fed to `tf.random.stateless_*` ops, so an op gives
the same output for the same seed eagerly and inside `tf.data.Dataset.map` (the pattern of
google-research/simclr's `data_util.py`, made stateless). Outputs keep the input's shape and are
float32. Images are expected standardised per band (mean 0, std 1), which is what the additive
parameters (brightness 0.4, speckle +-5) are scaled for.

The nine ops of the study are registered in `AUGMENTATIONS`; the two policies, each
`policy(image, seed) -> image`, in `POLICIES`:

  view1, view2 = make_views(image, seed, policy="study")
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable, Sequence

import tensorflow as tf

from simclr_distill.registry import Registry

Augmentation = Callable[..., tf.Tensor]

AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")
POLICIES: Registry[Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = Registry("augmentation policy")

# The study banned 9 of the 36 pairs (the worst quarter by fine-tuned F1) but never published
# which ones, so nothing is banned by default and the policy takes the banned list as config.
STUDY_BANNED_PAIRS: tuple[frozenset[str], ...] = ()

_BLUR_SIZE = 5


def _as_image(image) -> tf.Tensor:
  """Converts `image` to a float32 [H, W, C] tensor.

  Raises:
    TypeError: for an integer image; the ops' parameters assume standardised floats, so raw
      digital numbers must be converted by the data pipeline, not silently cast here.
    ValueError: if the image is not of rank 3.
  """
  image = tf.convert_to_tensor(image)
  if not image.dtype.is_floating:
    raise TypeError(f"augmentations expect a float image, got {image.dtype.name}; "
                    "standardise it to float32 first")
  if image.shape.rank != 3:
    raise ValueError(f"augmentations expect one image [H, W, C], got shape {image.shape}")
  return tf.cast(image, tf.float32)


def _as_seed(seed) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed, dtype_hint=tf.int32)
  if seed.dtype not in (tf.int32, tf.int64):
    raise TypeError(f"seed must be an int32 or int64 tensor of shape [2], got {seed.dtype.name}")
  seed.shape.assert_is_compatible_with([2])
  return seed


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _uniform(seed: tf.Tensor, low: float, high: float, shape=()) -> tf.Tensor:
  return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=tf.float32)


def _check_range(what: str, low: float, high: float, lowest: float | None = None,
                 highest: float | None = None) -> None:
  if not low <= high:
    raise ValueError(f"{what} range must have low <= high, got ({low!r}, {high!r})")
  if lowest is not None and low < lowest:
    raise ValueError(f"{what} range must start at >= {lowest}, got {low!r}")
  if highest is not None and high > highest:
    raise ValueError(f"{what} range must end at <= {highest}, got {high!r}")


def _crop_and_resize(image: tf.Tensor, seed: tf.Tensor, area: tuple[float, float],
                     aspect_ratio: tuple[float, float]) -> tf.Tensor:
  """Crops a random box and resizes it back to the image's size, bilinearly.

  The box covers a fraction ~U(area) of the image with width/height ratio log-uniform in
  `aspect_ratio`; a side longer than the image is clipped to it. Boxes are in
  `tf.image.crop_and_resize`'s normalised coordinates, so area 1 returns the image unchanged.
  """
  _check_range("area", *area, lowest=0.0, highest=1.0)
  if not area[0] > 0:
    raise ValueError(f"area range must start above 0, got {area[0]!r}")
  _check_range("aspect_ratio", *aspect_ratio, lowest=0.0)
  if not aspect_ratio[0] > 0:
    raise ValueError(f"aspect_ratio range must start above 0, got {aspect_ratio[0]!r}")
  u = _uniform(seed, 0.0, 1.0, shape=[4])
  scale = area[0] + (area[1] - area[0]) * u[0]
  log_low, log_high = math.log(aspect_ratio[0]), math.log(aspect_ratio[1])
  ratio = tf.exp(log_low + (log_high - log_low) * u[1])
  height = tf.minimum(tf.sqrt(scale / ratio), 1.0)
  width = tf.minimum(tf.sqrt(scale * ratio), 1.0)
  top = u[2] * (1.0 - height)
  left = u[3] * (1.0 - width)
  box = tf.stack([top, left, top + height, left + width])[tf.newaxis]
  size = tf.shape(image)[:2]
  out = tf.image.crop_and_resize(image[tf.newaxis], box, tf.zeros([1], tf.int32), size,
                                 method="bilinear")[0]
  return tf.ensure_shape(out, image.shape)


def _adjust_contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
  return (image - mean) * factor + mean


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, size: int = _BLUR_SIZE) -> tf.Tensor:
  """Blurs each band with a size x size gaussian, padding by mirroring the border.

  SYMMETRIC padding (edge pixel repeated, like scipy's "reflect") rather than zeros, so borders
  are not darkened towards 0; it needs H, W >= size // 2.
  """
  offsets = tf.range(size, dtype=tf.float32) - (size - 1) / 2
  kernel_1d = tf.exp(-tf.square(offsets) / (2.0 * tf.square(sigma)))
  kernel_1d /= tf.reduce_sum(kernel_1d)
  kernel = tf.tensordot(kernel_1d, kernel_1d, axes=0)[:, :, tf.newaxis, tf.newaxis]
  # Bands become the batch, so one single-channel kernel blurs any band count independently.
  bands = tf.transpose(image, [2, 0, 1])[..., tf.newaxis]
  half = size // 2
  bands = tf.pad(bands, [[0, 0], [half, half], [half, half], [0, 0]], mode="SYMMETRIC")
  blurred = tf.nn.conv2d(bands, kernel, strides=1, padding="VALID")
  return tf.ensure_shape(tf.transpose(blurred[..., 0], [1, 2, 0]), image.shape)


@AUGMENTATIONS.register("shift")
def shift(image, seed, *, max_shift: int = 12) -> tf.Tensor:
  """Rolls the image by a random offset in [-max_shift, max_shift] along each spatial axis.

  Pixels leaving one edge wrap around to the other (`tf.roll`), so the values are permuted,
  never invented.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    max_shift: The largest offset in pixels, per axis.

  Returns:
    The rolled float32 image, shape [H, W, C].

  Raises:
    ValueError: if `max_shift` is negative.
  """
  if max_shift < 0:
    raise ValueError(f"max_shift must be >= 0, got {max_shift!r}")
  image, seed = _as_image(image), _as_seed(seed)
  offsets = tf.random.stateless_uniform([2], seed, minval=-max_shift, maxval=max_shift + 1,
                                        dtype=tf.int32)
  return tf.roll(image, offsets, axis=[0, 1])


@AUGMENTATIONS.register("zoom")
def zoom(image, seed, *, area: tuple[float, float] = (0.5, 1.0),
         aspect_ratio: tuple[float, float] = (1.0, 1.0)) -> tf.Tensor:
  """Zooms in: crops a random box and resizes it back to H x W bilinearly.

  The study gives no range. The default keeps at least half the image (area fraction
  U(0.5, 1), at most a 1.41x zoom) so a 120 px patch keeps most of its fields, and keeps the
  aspect ratio, so it is a zoom, not a stretch.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    area: Range of the box's area as a fraction of the image, within (0, 1].
    aspect_ratio: Range of the box's width/height ratio, drawn log-uniformly.

  Returns:
    The zoomed float32 image, shape [H, W, C].

  Raises:
    ValueError: for an empty or out-of-bounds range.
  """
  return _crop_and_resize(_as_image(image), _as_seed(seed), area, aspect_ratio)


@AUGMENTATIONS.register("rotation")
def rotation(image, seed) -> tf.Tensor:
  """Rotates by a random multiple of 90 degrees.

  A square image turns by k * 90 degrees, k uniform in {0, 1, 2, 3}. A quarter turn would swap
  H and W of a non-square image, so there k is drawn from {0, 2} (0 or 180 degrees) and the
  shape is always kept.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].

  Returns:
    The rotated float32 image, shape [H, W, C].
  """
  image, seed = _as_image(image), _as_seed(seed)
  k = tf.random.stateless_uniform([], seed, minval=0, maxval=4, dtype=tf.int32)
  height, width = image.shape[0], image.shape[1]
  if height is None or width is None:
    shape = tf.shape(image)
    k = tf.where(tf.equal(shape[0], shape[1]), k, 2 * (k % 2))
  elif height != width:
    k = 2 * (k % 2)
  return tf.ensure_shape(tf.image.rot90(image, k), image.shape)


@AUGMENTATIONS.register("flip")
def flip(image, seed) -> tf.Tensor:
  """Flips left-right and, independently, up-down, each with probability 0.5.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].

  Returns:
    The flipped float32 image, shape [H, W, C].
  """
  image, seed = _as_image(image), _as_seed(seed)
  lr_seed, ud_seed = _split(seed, 2)
  image = tf.image.stateless_random_flip_left_right(image, lr_seed)
  return tf.image.stateless_random_flip_up_down(image, ud_seed)


@AUGMENTATIONS.register("brightness")
def brightness(image, seed, *, max_delta: float = 0.4) -> tf.Tensor:
  """Adds one delta ~ U(-max_delta, max_delta) to every value of every band.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    max_delta: The largest shift, in the units of the (standardised) image.

  Returns:
    The shifted float32 image, shape [H, W, C].

  Raises:
    ValueError: if `max_delta` is negative.
  """
  if max_delta < 0:
    raise ValueError(f"max_delta must be >= 0, got {max_delta!r}")
  image, seed = _as_image(image), _as_seed(seed)
  return image + _uniform(seed, -max_delta, max_delta)


@AUGMENTATIONS.register("contrast")
def contrast(image, seed, *, factor: tuple[float, float] = (0.6, 1.4)) -> tf.Tensor:
  """Scales each band's deviation from its own mean by one factor ~ U(factor).

  This is `tf.image.adjust_contrast` written out for any band count: every band keeps its
  spatial mean; one factor is shared by all bands, as it is by RGB channels.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    factor: Range of the contrast factor.

  Returns:
    The adjusted float32 image, shape [H, W, C].

  Raises:
    ValueError: for an empty range or one reaching below 0.
  """
  _check_range("factor", *factor, lowest=0.0)
  image, seed = _as_image(image), _as_seed(seed)
  return _adjust_contrast(image, _uniform(seed, *factor))


@AUGMENTATIONS.register("gain")
def gain(image, seed, *, max_gain: float = 0.5) -> tf.Tensor:
  """Multiplies the image by (1 + g), g ~ U(-max_gain, max_gain).

  The study calls this "gamma" with "gain in U(-0.5, 0.5)". A gamma curve x ** gamma is
  undefined for the negative values of standardised bands (and not monotone around 0 if
  applied to |x|), so the op keeps the part that is well defined for any real-valued band: a
  multiplicative sensor gain, which changes every band's spread around 0 by the same factor.
  g = 0 is the identity; the factor stays positive for max_gain < 1.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    max_gain: The largest |g|, within [0, 1).

  Returns:
    The scaled float32 image, shape [H, W, C].

  Raises:
    ValueError: if `max_gain` is outside [0, 1).
  """
  if not 0 <= max_gain < 1:
    raise ValueError(f"max_gain must be in [0, 1) so the factor stays positive, got {max_gain!r}")
  image, seed = _as_image(image), _as_seed(seed)
  return image * (1.0 + _uniform(seed, -max_gain, max_gain))


@AUGMENTATIONS.register("blur")
def blur(image, seed, *, sigma: tuple[float, float] = (0.1, 2.0)) -> tf.Tensor:
  """Blurs every band with a 5x5 gaussian kernel of sigma ~ U(sigma).

  Bands are blurred independently (a depthwise convolution); the border is padded by
  mirroring, so a constant image stays constant. Needs H, W >= 2.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    sigma: Range of the kernel's standard deviation in pixels, above 0.

  Returns:
    The blurred float32 image, shape [H, W, C].

  Raises:
    ValueError: for an empty range or one not above 0.
  """
  _check_range("sigma", *sigma, lowest=0.0)
  if not sigma[0] > 0:
    raise ValueError(f"sigma range must start above 0, got {sigma[0]!r}")
  image, seed = _as_image(image), _as_seed(seed)
  return _gaussian_blur(image, _uniform(seed, *sigma))


@AUGMENTATIONS.register("speckle")
def speckle(image, seed, *, max_fraction: float = 0.02, value: float = 5.0) -> tf.Tensor:
  """Sets up to `max_fraction` of the pixels to +value or -value (salt and pepper).

  A fraction f ~ U(0, max_fraction) is drawn and exactly floor(f * H * W) distinct pixels are
  hit, so the 2% bound holds for every draw (a per-pixel Bernoulli would only hold it on
  average). A hit pixel is set to the same +value or -value (sign drawn per pixel) in all of
  its bands, like a saturated or dead detector pixel; on 8x8 digits that is at most 1 pixel.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    max_fraction: The largest fraction of pixels hit, within [0, 1].
    value: The magnitude written, in the units of the (standardised) image.

  Returns:
    The speckled float32 image, shape [H, W, C].

  Raises:
    ValueError: if `max_fraction` is outside [0, 1].
  """
  if not 0 <= max_fraction <= 1:
    raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction!r}")
  image, seed = _as_image(image), _as_seed(seed)
  fraction_seed, pick_seed, sign_seed = _split(seed, 3)
  shape = tf.shape(image)
  num_pixels = shape[0] * shape[1]
  fraction = _uniform(fraction_seed, 0.0, max_fraction)
  num_hit = tf.cast(tf.floor(fraction * tf.cast(num_pixels, tf.float32)), tf.int32)
  # The rank of each pixel in a random order: the num_hit lowest ranks are distinct pixels.
  rank = tf.argsort(tf.argsort(tf.random.stateless_uniform([num_pixels], pick_seed)))
  hit = tf.reshape(rank < num_hit, [shape[0], shape[1], 1])
  sign = tf.random.stateless_uniform([shape[0], shape[1], 1], sign_seed) < 0.5
  noise = tf.where(sign, value, -value)
  return tf.where(hit, noise, image)


def _validate_pairs(names: Sequence[str], banned_pairs: Iterable[Iterable[str]],
                    registry: Registry[Augmentation]) -> list[tuple[str, str]]:
  """Returns the allowed unordered pairs of distinct names, in a fixed order.

  Raises:
    ValueError: for unknown or repeated names, malformed banned pairs, or no allowed pair.
  """
  names = tuple(names)
  known = registry.names()
  unknown = [name for name in names if name not in registry]
  if unknown:
    raise ValueError(f"unknown augmentations {unknown}; known: {', '.join(known)}")
  if len(set(names)) != len(names):
    raise ValueError(f"augmentation names must be distinct, got {list(names)}")
  banned = set()
  for pair in banned_pairs:
    pair = frozenset([pair] if isinstance(pair, str) else pair)
    if len(pair) != 2:
      raise ValueError(f"a banned pair must name two distinct augmentations, got {sorted(pair)}")
    unknown = sorted(name for name in pair if name not in registry)
    if unknown:
      raise ValueError(f"banned pair names unknown augmentations {unknown}; "
                       f"known: {', '.join(known)}")
    banned.add(pair)
  allowed = [pair for pair in itertools.combinations(names, 2) if frozenset(pair) not in banned]
  if not allowed:
    raise ValueError(f"no pair of distinct augmentations from {list(names)} is left after "
                     f"banning {sorted(sorted(pair) for pair in banned)}; ban fewer pairs or "
                     "allow more augmentations")
  return allowed


@POLICIES.register("study")
def two_random_augmentations(image, seed, *,
                             names: Sequence[str] = ("shift", "zoom", "rotation", "flip",
                                                     "brightness", "contrast", "gain", "blur",
                                                     "speckle"),
                             banned_pairs: Iterable[Iterable[str]] = (),
                             augmentations: Registry[Augmentation] | None = None) -> tf.Tensor:
  """The study's policy: applies a random allowed pair of distinct augmentations.

  The unordered pair is uniform among the pairs of `names` not in `banned_pairs`, and the two
  ops run in a random order (a fair coin), since they do not commute (gain after brightness
  scales the delta; speckle before blur smears the +-5). `seed` is split into three: the first
  part picks the pair and order, the second seeds the op applied first, the third the op
  applied second, each called with its default parameters. The allowed pairs are fixed when the
  function is traced; a table of them feeds two `tf.switch_case`s over `names`, so a graph holds
  2 * len(names) op branches rather than one per ordered pair.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    names: The augmentations to draw from, distinct registered names.
    banned_pairs: Unordered pairs never applied together, e.g. `[("blur", "zoom")]`; see
      `STUDY_BANNED_PAIRS`.
    augmentations: The registry the names are looked up in; `AUGMENTATIONS` by default.

  Returns:
    The augmented float32 image, shape [H, W, C].

  Raises:
    ValueError: if `names` or `banned_pairs` name unknown augmentations (the message lists the
      known ones), `names` repeats a name, or no allowed pair is left.
  """
  registry = AUGMENTATIONS if augmentations is None else augmentations
  names = tuple(names)
  allowed = _validate_pairs(names, banned_pairs, registry)
  image, seed = _as_image(image), _as_seed(seed)
  ops = [registry.get(name) for name in names]
  index = {name: i for i, name in enumerate(names)}
  table = tf.constant([[index[a], index[b]] for a, b in allowed], tf.int32)

  pick_seed, first_seed, second_seed = _split(seed, 3)
  pair_seed, order_seed = _split(pick_seed, 2)
  row = tf.random.stateless_uniform([], pair_seed, minval=0, maxval=len(allowed), dtype=tf.int32)
  swap = tf.random.stateless_uniform([], order_seed, minval=0, maxval=2, dtype=tf.int32)
  pair = table[row]
  first, second = pair[swap], pair[1 - swap]

  def apply(op_index: tf.Tensor, x: tf.Tensor, op_seed: tf.Tensor) -> tf.Tensor:
    branches = [lambda op=op: tf.ensure_shape(op(x, op_seed), x.shape) for op in ops]
    return tf.switch_case(op_index, branches)

  out = apply(second, apply(first, image, first_seed), second_seed)
  return tf.ensure_shape(out, image.shape)


@POLICIES.register("simclr")
def simclr_standard(image, seed, *, strength: float = 0.5,
                    area: tuple[float, float] = (0.08, 1.0)) -> tf.Tensor:
  """The standard SimCLR policy (Chen et al., 2020), adapted to standardised multispectral bands.

  In order: a random crop-resize (area U(0.08, 1), width/height log-uniform in [3/4, 4/3],
  bilinear), a left-right flip with probability 0.5 (SimCLR flips left-right only), a colour
  jitter with probability 0.8, and the 5x5 gaussian blur (sigma U(0.1, 2)) with probability
  0.5. The jitter keeps the two parts of SimCLR's colour jitter that mean the same for any band
  count: brightness (additive delta U(-0.8 s, 0.8 s), SimCLR v1's form, which suits data
  centred on 0) and per-band contrast (factor U(1 - 0.8 s, 1 + 0.8 s)). Saturation, hue and
  random greyscale are defined for RGB only and are left out. Additive brightness and
  mean-preserving contrast commute, so SimCLR's random order of the jitter ops is moot. With the
  default strength s = 0.5 the jitter ranges are the study's own (delta 0.4, contrast 0.6-1.4).

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    strength: SimCLR's colour-jitter strength s, >= 0.
    area: Range of the crop's area fraction.

  Returns:
    The augmented float32 image, shape [H, W, C].

  Raises:
    ValueError: if `strength` is negative or `area` is not a range within (0, 1].
  """
  if strength < 0:
    raise ValueError(f"strength must be >= 0, got {strength!r}")
  image, seed = _as_image(image), _as_seed(seed)
  (crop_seed, flip_seed, jitter_gate, brightness_seed, contrast_seed, blur_gate,
   blur_seed) = _split(seed, 7)
  x = _crop_and_resize(image, crop_seed, area, (3 / 4, 4 / 3))
  x = tf.image.stateless_random_flip_left_right(x, flip_seed)
  jitter = 0.8 * strength

  def color_jitter() -> tf.Tensor:
    y = x + _uniform(brightness_seed, -jitter, jitter)
    return _adjust_contrast(y, _uniform(contrast_seed, max(0.0, 1.0 - jitter), 1.0 + jitter))

  x = tf.cond(_uniform(jitter_gate, 0.0, 1.0) < 0.8, color_jitter, lambda: x)
  x = tf.cond(_uniform(blur_gate, 0.0, 1.0) < 0.5,
              lambda: _gaussian_blur(x, _uniform(blur_seed, 0.1, 2.0)), lambda: x)
  return tf.ensure_shape(x, image.shape)


def _crop_flip(image, seed, area: tuple[float, float]) -> tf.Tensor:
  image, seed = _as_image(image), _as_seed(seed)
  crop_seed, flip_seed = _split(seed, 2)
  x = _crop_and_resize(image, crop_seed, area, (3 / 4, 4 / 3))
  return tf.ensure_shape(tf.image.stateless_random_flip_left_right(x, flip_seed), image.shape)


@POLICIES.register("inception_crop")
def inception_crop(image, seed) -> tf.Tensor:
  """Inception crop (area U(0.08, 1), aspect log-uniform in [3/4, 4/3], resized back) and a
  left-right flip: the views of Beyer et al.'s function matching, before mixup."""
  return _crop_flip(image, seed, (0.08, 1.0))


@POLICIES.register("mild_crop")
def mild_crop(image, seed) -> tf.Tensor:
  """The same with crops of at least half the image (area U(0.5, 1)): for tiny images such as
  the 8x8 digits, where an 8% crop keeps a few pixels."""
  return _crop_flip(image, seed, (0.5, 1.0))


def _affine_warp(image: tf.Tensor, angle, scale, shear, shift_y, shift_x) -> tf.Tensor:
  """Warps `image` by rotation `angle` and shear `shear` (radians), zoom `scale` and a shift in
  pixels, all about the image centre, bilinearly, with zeros outside the image.

  The forward map is x -> R(angle) Sh(shear) S(scale) (x - c) + c + shift (x = (col, row));
  `ImageProjectiveTransformV3` wants the inverse, from each output pixel to where it reads.
  """
  height, width = image.shape[0], image.shape[1]
  cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
  # Forward matrix A = R @ [[1, tan], [0, 1]] @ scale.
  a, b = cos * scale, (cos * tan - sin) * scale
  c, d = sin * scale, (sin * tan + cos) * scale
  det = a * d - b * c
  m00, m01, m10, m11 = d / det, -b / det, -c / det, a / det
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  ox, oy = cx + shift_x, cy + shift_y
  transform = tf.stack([m00, m01, cx - m00 * ox - m01 * oy,
                        m10, m11, cy - m10 * ox - m11 * oy, 0.0, 0.0])[tf.newaxis]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[tf.newaxis], transforms=transform,
      output_shape=tf.constant([height, width], tf.int32), fill_value=0.0,
      interpolation="BILINEAR", fill_mode="CONSTANT")[0]
  return tf.ensure_shape(out, image.shape)


def affine(image, seed, *, rotation: float = 15.0, scale: tuple[float, float] = (0.85, 1.15),
           shear: float = 10.0, translate: float = 0.125) -> tf.Tensor:
  """A small random affine warp that keeps the image's orientation: rotation by
  U(-rotation, rotation) degrees, zoom by U(scale), shear by U(-shear, shear) degrees and a
  shift of U(-translate, translate) of the height and width, about the centre, bilinear, with
  zeros (the background of standardised or [0, 1] data) where the warp leaves the image.

  Unlike the study's rotation, flip and wrap-around shift, it never turns a shape into another
  one (a 6 into a 9, a shifted digit wrapping onto its other side): the right views for small
  images whose class is their shape, such as the 8x8 digits.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    rotation: The largest rotation, degrees.
    scale: Range of the zoom factor (> 1 enlarges).
    shear: The largest shear angle, degrees, below 90.
    translate: The largest shift as a fraction of the height and width.

  Returns:
    The warped float32 image, shape [H, W, C].

  Raises:
    ValueError: for a negative rotation, shift or shear, a shear of 90 degrees or more, or a
      zoom range that is empty or not above 0.
  """
  if rotation < 0 or translate < 0 or not 0 <= shear < 90:
    raise ValueError(f"rotation and translate must be >= 0 and shear in [0, 90), got "
                     f"{rotation!r}, {translate!r}, {shear!r}")
  _check_range("scale", *scale, lowest=0.0)
  if not scale[0] > 0:
    raise ValueError(f"scale range must start above 0, got {scale[0]!r}")
  image, seed = _as_image(image), _as_seed(seed)
  angle_seed, scale_seed, shear_seed, y_seed, x_seed = _split(seed, 5)
  degrees = math.pi / 180.0
  height, width = image.shape[0], image.shape[1]
  return _affine_warp(
      image, _uniform(angle_seed, -rotation, rotation) * degrees, _uniform(scale_seed, *scale),
      _uniform(shear_seed, -shear, shear) * degrees,
      _uniform(y_seed, -translate, translate) * height,
      _uniform(x_seed, -translate, translate) * width)


@POLICIES.register("affine")
def affine_policy(image, seed, *, noise: float = 0.1,
                  contrast_range: tuple[float, float] = (0.7, 1.3)) -> tf.Tensor:
  """Views for small shape images (the digits demo): a small `affine` warp, a contrast factor
  U(contrast_range) about the image's mean, and gaussian noise of standard deviation `noise`.

  Tuned on the digits' validation lists (SimCLR with a small CNN): the study's two-of-nine
  policy rolls an 8x8 digit by up to 12 pixels, turns and flips it, and sets pixels to +-5, so
  its views of one digit share little but their ink; with these views the frozen encoder's
  k-NN and linear probes beat raw pixels.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2].
    noise: Standard deviation of the additive noise, in the image's units.
    contrast_range: Range of the contrast factor.

  Returns:
    The augmented float32 image, shape [H, W, C].

  Raises:
    ValueError: for a negative noise or a bad contrast range.
  """
  if noise < 0:
    raise ValueError(f"noise must be >= 0, got {noise!r}")
  _check_range("contrast_range", *contrast_range, lowest=0.0)
  image, seed = _as_image(image), _as_seed(seed)
  warp_seed, contrast_seed, noise_seed = _split(seed, 3)
  x = affine(image, warp_seed)
  mean = tf.reduce_mean(x)
  x = (x - mean) * _uniform(contrast_seed, *contrast_range) + mean
  x = x + noise * tf.random.stateless_normal(tf.shape(x), noise_seed)
  return tf.ensure_shape(x, image.shape)


def make_views(image, seed, policy: str = "study", **kwargs) -> tuple[tf.Tensor, tf.Tensor]:
  """Makes SimCLR's two independently augmented views of one example.

  Args:
    image: A float [H, W, C] image.
    seed: An int32 tensor of shape [2]; split in two, one part per view.
    policy: A name registered in `POLICIES`.
    **kwargs: Passed to the policy, e.g. `banned_pairs` for "study".

  Returns:
    (view1, view2), float32 tensors of the image's shape.

  Raises:
    KeyError: for an unknown policy, listing the known ones.
  """
  fn = POLICIES.get(policy)
  seed1, seed2 = _split(_as_seed(seed), 2)
  return fn(image, seed1, **kwargs), fn(image, seed2, **kwargs)
