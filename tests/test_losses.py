"""Tests for simclr_distill.losses against plain NumPy formulas (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from simclr_distill import losses

RTOL = 1e-5
B, K = 8, 5


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def np_log_sigmoid(x):
  """Stable log(sigmoid(x)), for references at extreme logits."""
  return -np.logaddexp(0.0, -x)


def ref_sigmoid_soft(t, s, temperature, kind):
  pt, ps = np_sigmoid(t / temperature), np_sigmoid(s / temperature)
  if kind == "kl":
    loss = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
  else:
    loss = -(pt * np.log(ps) + (1 - pt) * np.log(1 - ps))
  return loss * temperature**2


def ref_softmax_soft(t, s, temperature, kind):
  pt, ps = np_softmax(t / temperature), np_softmax(s / temperature)
  if kind == "kl":
    loss = np.sum(pt * np.log(pt / ps), axis=-1)
  else:
    loss = -np.sum(pt * np.log(ps), axis=-1)
  return loss * temperature**2


def ref_supervised(labels, s, task):
  if task == "binary":
    p = np_sigmoid(s)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
  return -np.log(np_softmax(s)[np.arange(len(labels)), labels])


def ref_hard_labels(t, task):
  return (t > 0).astype(np.float64) if task == "binary" else np.argmax(t, axis=-1)


def ref_teacher_loss(t, s, task, kind, temperature):
  if kind == "hard":
    return ref_supervised(ref_hard_labels(t, task), s, task)
  soft = ref_sigmoid_soft if task == "binary" else ref_softmax_soft
  return soft(t, s, temperature, kind.removeprefix("soft_"))


def random_batch(task, seed, labelled=0.5):
  """Teacher and student logits, labels with garbage (-1) where unlabelled, and the mask."""
  rng = np.random.default_rng(seed)
  shape = (B,) if task == "binary" else (B, K)
  t, s = rng.normal(0, 3, shape), rng.normal(0, 3, shape)
  mask = (rng.random(B) < labelled).astype(np.float64)
  mask[0], mask[-1] = 1.0, 0.0  # At least one of each.
  labels = rng.integers(0, 2 if task == "binary" else K, B)
  garbage = np.where(mask > 0, labels, -1)
  return t, s, labels, garbage, mask


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("kind", ["kl", "xent"])
def test_sigmoid_soft_target_loss_matches_numpy(kind, temperature):
  t, s, *_ = random_batch("binary", seed=0)
  got = losses.sigmoid_soft_target_loss(t, s, temperature=temperature, kind=kind)
  assert got.shape == (B,)
  np.testing.assert_allclose(got, ref_sigmoid_soft(t, s, temperature, kind), rtol=RTOL)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("kind", ["kl", "xent"])
def test_softmax_soft_target_loss_matches_numpy(kind, temperature):
  t, s, *_ = random_batch("multiclass", seed=1)
  got = losses.softmax_soft_target_loss(t, s, temperature=temperature, kind=kind)
  assert got.shape == (B,)
  np.testing.assert_allclose(got, ref_softmax_soft(t, s, temperature, kind), rtol=RTOL)


def test_temperature_scales_by_t_squared():
  # At T = 4 the loss is 16x the plain KL of the tempered probabilities; without the T**2
  # factor this would be off by exactly 16.
  t, s, *_ = random_batch("binary", seed=2)
  got = losses.sigmoid_soft_target_loss(t, s, temperature=4.0)
  np.testing.assert_allclose(got / 16.0, ref_sigmoid_soft(t / 4, s / 4, 1.0, "kl"), rtol=RTOL)


@pytest.mark.parametrize("task", losses.TASKS)
def test_soft_target_loss_dispatches_on_task(task):
  t, s, *_ = random_batch(task, seed=3)
  got = losses.soft_target_loss(t, s, task=task, temperature=2.0, kind="xent")
  np.testing.assert_allclose(got, ref_teacher_loss(t, s, task, "soft_xent", 2.0), rtol=RTOL)


def test_hard_pseudo_labels_binary_rounds_half_down():
  t = np.array([-3.0, 0.0, -0.0, 1e-6, 2.0, -1e-6], np.float32)
  got = losses.hard_pseudo_labels(t, task="binary")
  assert got.dtype == tf.float32
  np.testing.assert_array_equal(got, [0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
  # [B, 1] gives the same [B] labels.
  np.testing.assert_array_equal(losses.hard_pseudo_labels(t[:, None], task="binary"), got)


def test_hard_pseudo_labels_multiclass_is_argmax():
  t, *_ = random_batch("multiclass", seed=4)
  got = losses.hard_pseudo_labels(t, task="multiclass")
  assert got.dtype == tf.int32
  np.testing.assert_array_equal(got, np.argmax(t, axis=-1))


@pytest.mark.parametrize("task", losses.TASKS)
def test_supervised_loss_matches_numpy(task):
  _, s, labels, *_ = random_batch(task, seed=5)
  labels = labels.astype(np.float64) if task == "binary" else labels
  got = losses.supervised_loss(labels, s, task=task)
  assert got.shape == (B,)
  np.testing.assert_allclose(got, ref_supervised(labels, s, task), rtol=RTOL)


@pytest.mark.parametrize("task", losses.TASKS)
def test_hard_label_loss_matches_numpy(task):
  t, s, *_ = random_batch(task, seed=6)
  got = losses.hard_label_loss(t, s, task=task)
  np.testing.assert_allclose(got, ref_supervised(ref_hard_labels(t, task), s, task), rtol=RTOL)


def test_binary_b_and_b1_shapes_agree():
  # A [B] tensor next to a [B, 1] one must not broadcast to [B, B].
  t, s, labels, garbage, mask = random_batch("binary", seed=7)
  col = lambda x: x[:, None]
  for fn in (losses.sigmoid_soft_target_loss,
             lambda a, b: losses.hard_label_loss(a, b, task="binary")):
    flat = fn(t, s)
    for a, b in ((col(t), s), (t, col(s)), (col(t), col(s))):
      got = fn(a, b)
      assert got.shape == (B,)
      np.testing.assert_allclose(got, flat, rtol=RTOL)
  flat = losses.supervised_loss(labels.astype(float), s, task="binary")
  np.testing.assert_allclose(
      losses.supervised_loss(col(labels.astype(float)), col(s), task="binary"), flat, rtol=RTOL)
  flat = losses.distillation_loss(t, s, garbage, mask, task="binary", kind="soft_kl", alpha=0.5)
  got = losses.distillation_loss(col(t), col(s), col(garbage), col(mask), task="binary",
                                 kind="soft_kl", alpha=0.5)
  np.testing.assert_allclose(got, flat, rtol=RTOL)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("kind", losses.LOSS_KINDS)
@pytest.mark.parametrize("task", losses.TASKS)
def test_distillation_loss_matches_numpy(task, kind, temperature, alpha):
  t, s, labels, garbage, mask = random_batch(task, seed=8)
  distill = np.mean(ref_teacher_loss(t, s, task, kind, temperature))
  sup_per_example = ref_supervised(labels, s, task)
  supervised = np.sum(mask * sup_per_example) / np.sum(mask)
  args = (t, s, garbage, mask)
  kw = dict(task=task, kind=kind, temperature=temperature)
  got_distill, got_supervised = losses.distillation_loss_terms(*args, **kw)
  np.testing.assert_allclose(got_distill, distill, rtol=RTOL)
  np.testing.assert_allclose(got_supervised, supervised, rtol=RTOL)
  np.testing.assert_allclose(losses.distillation_loss(*args, **kw, alpha=alpha),
                             alpha * supervised + (1 - alpha) * distill, rtol=RTOL)


@pytest.mark.parametrize("task", losses.TASKS)
def test_all_unlabelled_batch_has_zero_supervised_term(task):
  t, s, *_ = random_batch(task, seed=9)
  labels = np.full(B, -1)  # Garbage everywhere, and no example is labelled.
  mask = np.zeros(B)
  distill, supervised = losses.distillation_loss_terms(t, s, labels, mask, task=task,
                                                       kind="hard")
  assert float(supervised) == 0.0
  np.testing.assert_allclose(distill, np.mean(ref_teacher_loss(t, s, task, "hard", 1.0)),
                             rtol=RTOL)
  total = losses.distillation_loss(t, s, labels, mask, task=task, kind="hard", alpha=0.5)
  np.testing.assert_allclose(total, 0.5 * distill, rtol=RTOL)


@pytest.mark.parametrize("task, garbage_value", [("binary", np.nan), ("binary", -1.0),
                                                 ("multiclass", -1), ("multiclass", 99)])
def test_garbage_labels_under_zero_mask_do_not_leak(task, garbage_value):
  t, s, labels, _, mask = random_batch(task, seed=10)
  dtype = np.float64 if task == "binary" else np.int64
  garbage = np.where(mask > 0, labels, garbage_value).astype(dtype)
  student = tf.Variable(s)
  with tf.GradientTape() as tape:
    total = losses.distillation_loss(t, student, garbage, mask, task=task, kind="soft_kl",
                                     alpha=0.5)
  grad = tape.gradient(total, student)
  clean = losses.distillation_loss(t, s, labels.astype(dtype), mask, task=task, kind="soft_kl",
                                   alpha=0.5)
  np.testing.assert_allclose(total, clean, rtol=RTOL)
  assert np.all(np.isfinite(grad))


EXTREME = [1e4, 80.0]


@pytest.mark.parametrize("big", EXTREME)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_sigmoid_soft_target_loss_extreme_logits(big, temperature):
  t = np.array([big, -big, big, -big, big, 0.0], np.float32)
  s = np.array([-big, big, big, -big, 0.0, -big], np.float32)
  tt, ss = t.astype(np.float64) / temperature, s.astype(np.float64) / temperature
  # Stable references: KL = sum_y p_t(y) (log p_t(y) - log p_s(y)), using 0 * log 0 = 0.
  log_pt, log_1m_pt = np_log_sigmoid(tt), np_log_sigmoid(-tt)
  pt = np.exp(log_pt)
  log_ps, log_1m_ps = np_log_sigmoid(ss), np_log_sigmoid(-ss)
  xent = -(pt * log_ps + (1 - pt) * log_1m_ps) * temperature**2
  kl = (pt * (log_pt - log_ps) + (1 - pt) * (log_1m_pt - log_1m_ps)) * temperature**2

  got_kl = np.asarray(losses.sigmoid_soft_target_loss(t, s, temperature, kind="kl"))
  got_xent = np.asarray(losses.sigmoid_soft_target_loss(t, s, temperature, kind="xent"))
  assert np.all(np.isfinite(got_kl)) and np.all(np.isfinite(got_xent))
  assert np.all(got_kl >= 0)
  np.testing.assert_array_equal(got_kl[2:4], 0.0)  # Equal extreme logits.
  np.testing.assert_allclose(got_kl, kl, rtol=RTOL, atol=1e-6 * big * temperature)
  np.testing.assert_allclose(got_xent, xent, rtol=RTOL, atol=1e-6 * big * temperature)
  # Opposite saturated logits: the student gives the teacher's sure class log p = -big / T.
  np.testing.assert_allclose(got_kl[:2], big * temperature, rtol=RTOL)


@pytest.mark.parametrize("big", EXTREME)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_softmax_soft_target_loss_extreme_logits(big, temperature):
  t = np.array([[big, -big, 0.0], [-big, big, big], [big, -big, 0.0]], np.float32)
  s = np.array([[-big, big, 0.0], [big, -big, -big], [big, -big, 0.0]], np.float32)
  got_kl = np.asarray(losses.softmax_soft_target_loss(t, s, temperature, kind="kl"))
  got_xent = np.asarray(losses.softmax_soft_target_loss(t, s, temperature, kind="xent"))
  assert np.all(np.isfinite(got_kl)) and np.all(np.isfinite(got_xent))
  assert np.all(got_kl >= 0)
  assert got_kl[2] == 0.0
  # Row 0: the teacher is sure of class 0, to which the student gives log p = -2 big / T.
  np.testing.assert_allclose(got_kl[0], 2 * big * temperature, rtol=RTOL)
  np.testing.assert_allclose(got_xent[0], 2 * big * temperature, rtol=RTOL)
  # Row 1: the teacher splits 50/50 between classes 1 and 2, both at log p = -2 big / T for the
  # student: KL = log 2 + 2 big / T (times T**2).
  np.testing.assert_allclose(got_kl[1], (np.log(0.5) + 2 * big / temperature) * temperature**2,
                             rtol=RTOL)


def test_kl_is_nonnegative_and_zero_for_equal_logits():
  rng = np.random.default_rng(11)
  t = rng.normal(0, 5, (1000, K)).astype(np.float32)
  near = t + rng.normal(0, 1e-6, t.shape).astype(np.float32)
  for task, tt, nn in (("binary", t[:, 0], near[:, 0]), ("multiclass", t, near)):
    for temperature in (1.0, 4.0):
      assert np.all(np.asarray(losses.soft_target_loss(tt, nn, task=task,
                                                       temperature=temperature)) >= 0)
      np.testing.assert_array_equal(
          losses.soft_target_loss(tt, tt, task=task, temperature=temperature), 0.0)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("kind", losses.LOSS_KINDS)
@pytest.mark.parametrize("task", losses.TASKS)
def test_gradients_finite_for_extreme_logits(task, kind, temperature):
  big = np.float32(1e4)
  if task == "binary":
    t = np.array([big, -big, big, -big, 0.0], np.float32)
    s = np.array([-big, big, big, -big, big], np.float32)
  else:
    t = np.array([[big, -big, 0.0], [-big, big, big], [0.0, 0.0, -big]], np.float32)
    s = np.array([[-big, big, 0.0], [big, -big, -big], [0.0, 0.0, -big]], np.float32)
  labels = np.zeros(len(t), np.float32 if task == "binary" else np.int32)
  mask = np.ones(len(t), np.float32)
  student, teacher = tf.Variable(s), tf.Variable(t)
  with tf.GradientTape(persistent=True) as tape:
    total = losses.distillation_loss(teacher, student, labels, mask, task=task, kind=kind,
                                     temperature=temperature, alpha=0.5)
    soft_only = losses.distillation_loss(teacher, student, labels, mask, task=task,
                                         kind=kind, temperature=temperature)
  grad = tape.gradient(total, student).numpy()
  assert np.isfinite(float(total))
  assert np.all(np.isfinite(grad))
  assert np.any(grad != 0)
  assert tape.gradient(total, teacher) is None  # The teacher sits under stop_gradient.
  if kind == "soft_kl" and task == "binary":
    # Examples 2 and 3 match the teacher exactly: the KL is at its minimum, gradient 0.
    np.testing.assert_array_equal(tape.gradient(soft_only, student).numpy()[2:4], 0.0)


def test_sigmoid_xent_gradient_value_at_saturation():
  # d/ds of -(p_t log sigmoid(s/T) + (1 - p_t) log sigmoid(-s/T)) * T**2 = T (sigmoid(s/T) - p_t).
  s = tf.Variable(np.array([-1e4, 0.0], np.float32))
  t = np.array([1e4, 0.0], np.float32)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(losses.sigmoid_soft_target_loss(t, s, temperature=4.0, kind="xent"))
  np.testing.assert_allclose(tape.gradient(loss, s), [-4.0, 0.0], rtol=RTOL)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=-0.1), r"alpha must be in \[0, 1\], got -0.1"),
    (dict(alpha=1.5), r"alpha must be in \[0, 1\], got 1.5"),
    (dict(alpha=float("nan")), r"alpha must be in \[0, 1\], got nan"),
    (dict(temperature=0.0), r"temperature must be > 0, got 0.0"),
    (dict(temperature=-2.0), r"temperature must be > 0, got -2.0"),
    (dict(kind="soft"), r"unknown loss kind 'soft'; expected one of 'hard', 'soft_kl', "),
    (dict(kind="kl"), r"unknown loss kind 'kl'"),
    (dict(task="regression"), r"unknown task 'regression'; expected one of 'binary', "),
])
def test_distillation_loss_rejects_bad_arguments(kwargs, match):
  t, s, _, garbage, mask = random_batch("binary", seed=12)
  args = dict(task="binary", kind="soft_kl") | kwargs
  with pytest.raises(ValueError, match=match):
    losses.distillation_loss(t, s, garbage, mask, **args)


def test_other_functions_reject_bad_arguments():
  t, s, *_ = random_batch("binary", seed=13)
  with pytest.raises(ValueError, match=r"unknown soft-target kind 'js'; expected one of 'kl'"):
    losses.sigmoid_soft_target_loss(t, s, kind="js")
  with pytest.raises(ValueError, match=r"temperature must be > 0"):
    losses.softmax_soft_target_loss(t[:, None], s[:, None], temperature=0.0)
  with pytest.raises(ValueError, match=r"unknown task 'binray'"):
    losses.soft_target_loss(t, s, task="binray")
  with pytest.raises(ValueError, match=r"unknown task 'multi'"):
    losses.hard_pseudo_labels(t, task="multi")
  with pytest.raises(ValueError, match=r"binary logits must have shape \[B\] or \[B, 1\], got "
                                       r"\(4, 2\)"):
    losses.supervised_loss(np.zeros(4), np.zeros((4, 2)), task="binary")
