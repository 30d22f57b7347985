"""Tests for simclr_distill.augment.

Every op and policy is run eagerly and inside `Dataset.map` with the same seeds (big_vision's
trick), and the value checks run on the outputs of both.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from simclr_distill import augment
from simclr_distill.registry import Registry

OPS = ("shift", "zoom", "rotation", "flip", "brightness", "contrast", "gain", "blur", "speckle")
SHAPES = [(8, 8, 1), (32, 32, 10)]
ALL_PAIRS = [frozenset(pair) for pair in itertools.combinations(OPS, 2)]


def _fn(name):
  return augment.POLICIES.get(name) if name in augment.POLICIES else augment.AUGMENTATIONS.get(name)


def _image(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _seeds(n, offset=0):
  return np.stack([np.arange(n) + offset, np.full(n, 17)], axis=1).astype(np.int32)


def _run_both(fn, image, seeds):
  """Runs fn per seed eagerly and in Dataset.map; checks they agree and returns the eager ones."""
  eager = [fn(image, seed) for seed in seeds]
  for out in eager:
    assert out.dtype == tf.float32 and tuple(out.shape) == image.shape
  eager = np.stack([out.numpy() for out in eager])
  constant = tf.constant(image)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(lambda seed: fn(constant, seed))
  assert dataset.element_spec.shape == image.shape
  mapped = np.stack([out.numpy() for out in dataset])
  np.testing.assert_allclose(mapped, eager, rtol=1e-6, atol=1e-6)
  return eager


def test_registries_hold_the_study_ops_and_the_policies():
  assert augment.AUGMENTATIONS.names() == sorted(OPS)
  assert augment.POLICIES.names() == ["affine", "inception_crop", "mild_crop", "simclr", "study"]
  assert augment.POLICIES.get("study") is augment.two_random_augmentations
  assert augment.POLICIES.get("simclr") is augment.simclr_standard
  assert augment.STUDY_BANNED_PAIRS == ()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", OPS + ("study", "simclr", "affine"))
def test_eager_equals_map_deterministic_and_seeded(name, shape):
  fn, image = _fn(name), _image(shape)
  seeds = _seeds(20)
  outs = _run_both(fn, image, seeds)
  np.testing.assert_array_equal(fn(image, seeds[0]).numpy(), outs[0])
  assert any(not np.allclose(out, outs[0]) for out in outs[1:])
  assert any(not np.allclose(out, image) for out in outs)


def test_shift_is_a_roll_of_at_most_12_pixels():
  image = _image((32, 32, 10))
  for out in _run_both(augment.shift, image, _seeds(8)):
    rolls = [(dy, dx) for dy in range(-12, 13) for dx in range(-12, 13)
             if np.array_equal(np.roll(image, (dy, dx), axis=(0, 1)), out)]
    assert rolls


def test_flip_gives_the_four_flips_and_nothing_else():
  image = _image((8, 8, 3))
  candidates = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
  seen = set()
  for out in _run_both(augment.flip, image, _seeds(24)):
    matches = [i for i, c in enumerate(candidates) if np.array_equal(out, c)]
    assert len(matches) == 1
    seen.add(matches[0])
  assert seen == {0, 1, 2, 3}


def test_rotation_square_gives_the_four_rotations():
  image = _image((8, 8, 3))
  candidates = [np.rot90(image, k) for k in range(4)]
  seen = set()
  for out in _run_both(augment.rotation, image, _seeds(24)):
    matches = [k for k, c in enumerate(candidates) if np.array_equal(out, c)]
    assert len(matches) == 1
    seen.add(matches[0])
  assert seen == {0, 1, 2, 3}


def test_rotation_non_square_keeps_the_shape_with_0_or_180_degrees():
  image = _image((8, 12, 2))
  seen = set()
  for out in _run_both(augment.rotation, image, _seeds(16)):
    if np.array_equal(out, image):
      seen.add(0)
    else:
      np.testing.assert_array_equal(out, np.rot90(image, 2))
      seen.add(2)
  assert seen == {0, 2}


def test_brightness_adds_one_delta_of_at_most_0_4():
  image = _image((32, 32, 10))
  for out in _run_both(augment.brightness, image, _seeds(10)):
    delta = out - image
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-5)
    assert abs(delta.flat[0]) <= 0.4 + 1e-6
    assert abs(out.mean() - image.mean()) <= 0.4 + 1e-5


def test_contrast_keeps_band_means_and_scales_deviations():
  image = _image((32, 32, 10)) + np.arange(10, dtype=np.float32)
  mean = image.mean(axis=(0, 1), keepdims=True)
  for out in _run_both(augment.contrast, image, _seeds(10)):
    np.testing.assert_allclose(out.mean(axis=(0, 1), keepdims=True), mean, atol=1e-4)
    centred = image - mean
    factor = (out - mean).ravel() @ centred.ravel() / (centred.ravel() @ centred.ravel())
    assert 0.6 - 1e-6 <= factor <= 1.4 + 1e-6
    np.testing.assert_allclose(out, mean + factor * centred, atol=1e-4)


def test_gain_scales_by_one_plus_g_within_half():
  image = _image((32, 32, 10))
  for out in _run_both(augment.gain, image, _seeds(10)):
    factor = out.ravel() @ image.ravel() / (image.ravel() @ image.ravel())
    assert 0.5 - 1e-6 <= factor <= 1.5 + 1e-6
    np.testing.assert_allclose(out, factor * image, rtol=1e-5, atol=1e-6)


def test_blur_keeps_constants_and_blurs_bands_independently():
  constant = np.ones((8, 8, 4), np.float32) * np.array([-2.0, 0.0, 0.5, 3.25], np.float32)
  for out in _run_both(augment.blur, constant, _seeds(6)):
    np.testing.assert_allclose(out, constant, atol=1e-5)
  noisy = _image((32, 32, 2))
  noisy[..., 0] = 0.0
  ratios = []
  for out in _run_both(augment.blur, noisy, _seeds(6)):
    np.testing.assert_array_equal(out[..., 0], 0.0)
    ratios.append(out[..., 1].std() / noisy[..., 1].std())
  # Sigma near 0.1 leaves the image almost as it is; larger ones smooth white noise a lot.
  assert max(ratios) <= 1 + 1e-6 and min(ratios) < 0.7


def test_blur_of_an_impulse_is_a_normalised_symmetric_5x5_kernel():
  impulse = np.zeros((16, 16, 1), np.float32)
  impulse[8, 8, 0] = 1.0
  for out in _run_both(augment.blur, impulse, _seeds(6)):
    kernel = out[6:11, 6:11, 0]
    np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)  # Nothing outside the 5x5 support.
    np.testing.assert_allclose(kernel, kernel[::-1], atol=1e-6)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-6)
    assert kernel[2, 2] == kernel.max()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_speckle_hits_at_most_2_percent_of_pixels_with_plus_or_minus_5(shape):
  image = _image(shape)
  limit = int(0.02 * shape[0] * shape[1])
  values = set()
  for out in _run_both(augment.speckle, image, _seeds(20)):
    hit = np.any(out != image, axis=-1)
    assert hit.sum() <= limit
    for pixel in out[hit]:
      assert np.all(pixel == pixel[0]) and abs(pixel[0]) == 5.0
      values.add(float(pixel[0]))
  # An 8x8 image gets at most one hit pixel, too few draws to see both signs.
  assert values <= {-5.0, 5.0}
  if shape[0] >= 32:
    assert values == {-5.0, 5.0}
  else:
    assert values


def test_zoom_keeps_constants_and_interpolates_within_the_input_range():
  constant = np.full((8, 8, 3), 1.75, np.float32)
  for out in _run_both(augment.zoom, constant, _seeds(6)):
    np.testing.assert_allclose(out, constant, atol=1e-6)
  image = _image((32, 32, 10))
  for out in _run_both(augment.zoom, image, _seeds(6)):
    assert np.all(out.min(axis=(0, 1)) >= image.min(axis=(0, 1)) - 1e-5)
    assert np.all(out.max(axis=(0, 1)) <= image.max(axis=(0, 1)) + 1e-5)
  whole = augment.zoom(image, _seeds(1)[0], area=(1.0, 1.0))
  np.testing.assert_allclose(whole.numpy(), image, atol=1e-5)


def test_simclr_policy_on_a_constant_image_only_shifts_brightness():
  image = np.ones((16, 16, 10), np.float32) * np.linspace(-1, 1, 10, dtype=np.float32)
  deltas = []
  for out in _run_both(augment.simclr_standard, image, _seeds(12)):
    delta = out - image
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-5)
    assert abs(delta.flat[0]) <= 0.4 + 1e-5
    deltas.append(delta.flat[0])
  assert np.ptp(deltas) > 0


def _coding_registry(names):
  """Ops that append their 1-based index as a decimal digit, so outputs spell what ran in order."""
  registry = Registry("augmentation")
  for digit, name in enumerate(names, start=1):
    registry.register(name)(lambda image, seed, digit=digit: image * 10.0 + digit)
  return registry


def _applied_pairs(names, banned, n):
  registry = _coding_registry(names)

  def policy(image, seed):
    return augment.two_random_augmentations(image, seed, names=names, banned_pairs=banned,
                                            augmentations=registry)

  codes = _run_both(policy, np.zeros((2, 2, 1), np.float32), _seeds(n))
  ordered = []
  for code in codes:
    assert np.all(code == code.flat[0])
    first, second = divmod(int(round(float(code.flat[0]))), 10)
    ordered.append((names[first - 1], names[second - 1]))
  return ordered


def test_study_policy_draws_every_allowed_pair_in_both_orders_and_no_banned_one():
  banned = ALL_PAIRS[::4]  # 9 of the 36, like the study.
  ordered = _applied_pairs(OPS, banned, 400)
  unordered = {frozenset(pair) for pair in ordered}
  assert all(len(pair) == 2 for pair in unordered)
  assert unordered == set(ALL_PAIRS) - set(banned)
  assert {pair[0] for pair in ordered} == set(OPS)  # Each op is applied first at some point.
  counts = np.array([sum(frozenset(p) == pair for p in ordered) for pair in unordered])
  assert counts.min() >= 3 and counts.max() <= 35  # About 400 / 27 each.


def test_study_policy_with_one_allowed_pair_applies_only_that_pair():
  allowed = frozenset(("blur", "gain"))
  ordered = _applied_pairs(OPS, [pair for pair in ALL_PAIRS if pair != allowed], 40)
  assert set(ordered) == {("blur", "gain"), ("gain", "blur")}


def test_study_policy_with_real_ops_equals_the_allowed_pair_in_either_order():
  image = _image((16, 16, 3))
  allowed = frozenset(("gain", "brightness"))
  banned = [pair for pair in ALL_PAIRS if pair != allowed]
  seeds = _seeds(12)
  outs = _run_both(lambda x, s: augment.two_random_augmentations(x, s, banned_pairs=banned),
                   image, seeds)
  orders = set()
  for seed, out in zip(seeds, outs):
    _, first_seed, second_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    candidates = {
        "gain_first": augment.brightness(augment.gain(image, first_seed), second_seed),
        "brightness_first": augment.gain(augment.brightness(image, first_seed), second_seed),
    }
    matches = [k for k, c in candidates.items() if np.allclose(out, c.numpy(), atol=1e-6)]
    assert len(matches) == 1
    orders.add(matches[0])
  assert orders == {"gain_first", "brightness_first"}


def test_study_policy_rejects_bad_names_and_no_allowed_pair():
  image, seed = _image((8, 8, 1)), _seeds(1)[0]
  with pytest.raises(ValueError, match="no pair"):
    augment.two_random_augmentations(image, seed, banned_pairs=ALL_PAIRS)
  with pytest.raises(ValueError, match="no pair"):
    augment.two_random_augmentations(image, seed, names=("shift",))
  known = ", ".join(sorted(OPS))
  with pytest.raises(ValueError, match=f"unknown augmentations \\['hue'\\]; known: {known}"):
    augment.two_random_augmentations(image, seed, names=("shift", "hue"))
  with pytest.raises(ValueError, match=f"known: {known}"):
    augment.two_random_augmentations(image, seed, banned_pairs=[("shift", "hue")])
  with pytest.raises(ValueError, match="distinct"):
    augment.two_random_augmentations(image, seed, banned_pairs=[("shift", "shift")])
  with pytest.raises(ValueError, match="distinct"):
    augment.two_random_augmentations(image, seed, names=("shift", "flip", "shift"))


def test_ops_reject_integer_images_and_bad_parameters():
  seed = _seeds(1)[0]
  with pytest.raises(TypeError, match="float"):
    augment.flip(np.zeros((8, 8, 1), np.uint16), seed)
  with pytest.raises(ValueError, match="area"):
    augment.zoom(_image((8, 8, 1)), seed, area=(0.0, 1.0))
  with pytest.raises(ValueError, match="max_gain"):
    augment.gain(_image((8, 8, 1)), seed, max_gain=1.0)


@pytest.mark.parametrize("policy", ["study", "simclr"])
def test_make_views_gives_two_different_seeded_views(policy):
  image = _image((16, 16, 10))
  seed = _seeds(1)[0]
  view1, view2 = augment.make_views(image, seed, policy=policy)
  assert view1.shape == view2.shape == image.shape
  assert view1.dtype == view2.dtype == tf.float32
  assert not np.allclose(view1.numpy(), view2.numpy())
  seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  fn = augment.POLICIES.get(policy)
  np.testing.assert_array_equal(view1.numpy(), fn(image, seed1).numpy())
  np.testing.assert_array_equal(view2.numpy(), fn(image, seed2).numpy())
  dataset = tf.data.Dataset.from_tensors((image, seed)).map(
      lambda x, s: augment.make_views(x, s, policy=policy))
  mapped1, mapped2 = next(iter(dataset))
  np.testing.assert_allclose(mapped1.numpy(), view1.numpy(), atol=1e-6)
  np.testing.assert_allclose(mapped2.numpy(), view2.numpy(), atol=1e-6)


def test_make_views_passes_policy_options_and_rejects_unknown_policies():
  image = _image((8, 8, 1))
  seed = _seeds(1)[0]
  only = [pair for pair in ALL_PAIRS if pair != frozenset(("flip", "rotation"))]
  for view in augment.make_views(image, seed, banned_pairs=only):
    # flip and rotation only permute pixels.
    np.testing.assert_array_equal(np.sort(view.numpy(), axis=None), np.sort(image, axis=None))
  with pytest.raises(KeyError, match="known: affine, inception_crop, mild_crop, simclr, study"):
    augment.make_views(image, seed, policy="byol")


@pytest.mark.parametrize("name, smallest_area", [("inception_crop", 0.08), ("mild_crop", 0.5)])
def test_crop_policies_keep_the_shape_and_vary_with_the_seed(name, smallest_area):
  image = tf.random.stateless_uniform([16, 16, 3], [1, 2])
  policy = augment.POLICIES.get(name)
  views = [policy(image, tf.constant([s, 7])).numpy() for s in range(8)]
  assert all(v.shape == (16, 16, 3) and v.dtype == np.float32 for v in views)
  assert len({v.tobytes() for v in views}) == 8
  np.testing.assert_array_equal(policy(image, tf.constant([3, 7])).numpy(), views[3])
  # A crop's values lie within the image's range (bilinear resampling of a sub-box).
  assert all(v.min() >= image.numpy().min() - 1e-6 and v.max() <= image.numpy().max() + 1e-6
             for v in views)


def test_affine_warp_is_the_identity_a_shift_or_a_turn_about_the_centre():
  image = np.zeros((8, 8, 1), np.float32)
  image[2:5, 3, 0] = 1.0  # A vertical bar.
  warp = lambda *p: augment._affine_warp(tf.constant(image), *p).numpy()
  np.testing.assert_allclose(warp(0.0, 1.0, 0.0, 0.0, 0.0), image, atol=1e-6)
  shifted = warp(0.0, 1.0, 0.0, 1.0, 0.0)  # One row down.
  np.testing.assert_allclose(shifted[3:6, 3, 0], 1.0, atol=1e-6)
  assert shifted.sum() == pytest.approx(3.0)
  turned = warp(np.pi / 2, 1.0, 0.0, 0.0, 0.0)  # A quarter turn makes it horizontal.
  assert np.argwhere(turned[..., 0] > 0.5)[:, 0].tolist() == [3, 3, 3]


def test_affine_policy_keeps_a_digits_orientation_and_varies_with_the_seed():
  """The demo's views: small warps, never the study's flips, turns or wrap-around shifts, so
  a view of a digit overlaps the digit more than what those make of it."""
  from simclr_distill.data import digits

  _, images, _ = digits.load_digits_arrays()
  seven = images[7]
  policy = augment.POLICIES.get("affine")
  views = np.stack([policy(tf.constant(seven), tf.constant([s, 3])).numpy() for s in range(32)])
  assert len({v.tobytes() for v in views}) == 32
  np.testing.assert_array_equal(policy(tf.constant(seven), tf.constant([5, 3])).numpy(), views[5])
  def overlap(a, b):
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
  same = np.mean([overlap(v, seven) for v in views])
  # The study's ops: a mirror image, a half turn, a 4-pixel wrap-around shift (it allows 12).
  studys = [seven[:, ::-1], np.rot90(seven, 2), np.roll(seven, 4, axis=1)]
  assert same > 0.7 and all(same > overlap(t, seven) + 0.05 for t in studys)
  with pytest.raises(ValueError, match="noise must be >= 0"):
    augment.affine_policy(tf.constant(seven), tf.constant([1, 2]), noise=-1.0)
