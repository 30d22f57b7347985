"""Tests for simclr_distill.contrastive against a plain NumPy NT-Xent (float64).

The distributed tests run MirroredStrategy over the two logical CPUs that conftest.py creates.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from simclr_distill.contrastive import gather_global, nt_xent_loss, replica_index

RTOL = 1e-9  # float64 throughout, so only summation order separates library and reference.
B = 6


def ref_nt_xent(z1, z2, temperature):
  """NT-Xent as the SimCLR paper writes it, over the 2N concatenated views."""
  n = len(z1)
  z = np.concatenate([z1, z2], axis=0).astype(np.float64)
  z = z / np.sqrt(np.sum(z**2, axis=1, keepdims=True))
  sim = (z @ z.T) / temperature
  losses = []
  for i in range(2 * n):
    positive = i + n if i < n else i - n
    others = np.delete(sim[i], i)  # The anchor is never its own candidate.
    m = others.max()
    log_denominator = m + np.log(np.sum(np.exp(others - m)))
    losses.append(log_denominator - sim[i, positive])
  return np.mean(losses)


def random_views(rng, n, d, noise=0.5):
  """Two correlated views: a shared signal plus independent noise, as augmentations give."""
  base = rng.normal(size=(n, d))
  return base + noise * rng.normal(size=(n, d)), base + noise * rng.normal(size=(n, d))


@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
  return mirrored_strategy


@pytest.mark.parametrize("d", [8, 128])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_numpy_reference(temperature, d):
  rng = np.random.default_rng(int(temperature * 10) + d)
  z1, z2 = random_views(rng, B, d)
  got = nt_xent_loss(tf.constant(z1), tf.constant(z2), temperature=temperature)
  assert got.dtype == tf.float64
  np.testing.assert_allclose(got.numpy(), ref_nt_xent(z1, z2, temperature), rtol=RTOL)


def test_float32_and_half_precision_inputs_match_reference():
  z1, z2 = random_views(np.random.default_rng(0), B, 16)
  want = ref_nt_xent(z1, z2, 0.2)
  for dtype in (tf.float32, tf.float16, tf.bfloat16):
    got = nt_xent_loss(tf.constant(z1, dtype), tf.constant(z2, dtype), temperature=0.2)
    assert got.dtype == tf.float32
    # Half precision rounds the inputs themselves, hence the looser tolerance there.
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5 if dtype == tf.float32 else 5e-2)


def test_rows_are_normalised_inside():
  z1, z2 = random_views(np.random.default_rng(1), B, 8)
  scales = np.random.default_rng(2).uniform(0.01, 100.0, size=(B, 1))
  np.testing.assert_allclose(nt_xent_loss(z1 * scales, z2 / scales, temperature=0.5).numpy(),
                             nt_xent_loss(z1, z2, temperature=0.5).numpy(), rtol=RTOL)


def test_identical_views_with_orthogonal_negatives_beat_random_views():
  temperature = 0.5
  z = np.eye(B, 8)  # Identical views; every other example orthogonal to the anchor.
  aligned = nt_xent_loss(z, z, temperature=temperature).numpy()
  # Each anchor: the positive scores 1/T, the 2B - 2 negatives score 0.
  want = np.log(np.exp(1 / temperature) + 2 * B - 2) - 1 / temperature
  np.testing.assert_allclose(aligned, want, rtol=RTOL)
  rng = np.random.default_rng(3)
  unrelated = nt_xent_loss(rng.normal(size=(B, 8)), rng.normal(size=(B, 8)),
                           temperature=temperature).numpy()
  assert aligned < unrelated


def test_finite_at_small_temperature():
  # Noisy views, so that the loss is not ~1e-12 and a relative comparison means something.
  z1, z2 = random_views(np.random.default_rng(4), B, 32, noise=3.0)
  for dtype in (tf.float64, tf.float32):
    got = nt_xent_loss(tf.constant(z1, dtype), tf.constant(z2, dtype), temperature=0.01)
    assert np.isfinite(got.numpy())
  # Logits of +-100 would overflow a naive exp; the reference stays in log space too.
  np.testing.assert_allclose(nt_xent_loss(z1, z2, temperature=0.01).numpy(),
                             ref_nt_xent(z1, z2, 0.01), rtol=RTOL)


def test_finite_for_large_norm_inputs_with_finite_gradients():
  z1, z2 = random_views(np.random.default_rng(5), B, 16)
  want = nt_xent_loss(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32),
                      temperature=0.1).numpy()
  # 1e20 squared overflows float32, so a plain sum-of-squares norm would give inf / inf = NaN.
  big1 = tf.constant(z1 * 1e20, tf.float32)
  big2 = tf.constant(z2 * 1e20, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch([big1, big2])
    got = nt_xent_loss(big1, big2, temperature=0.1)
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
  for g in tape.gradient(got, [big1, big2]):
    assert np.all(np.isfinite(g.numpy()))


def test_global_batch_halves_average_to_full_batch_loss():
  temperature = 0.2
  z1, z2 = random_views(np.random.default_rng(6), 2 * B, 16)
  full = nt_xent_loss(z1, z2, temperature=temperature).numpy()
  halves = [
      nt_xent_loss(z1[r * B:(r + 1) * B], z2[r * B:(r + 1) * B], temperature=temperature,
                   z1_all=z1, z2_all=z2, replica_id=r).numpy()
      for r in (0, 1)
  ]
  np.testing.assert_allclose(np.mean(halves), full, rtol=RTOL)
  # The same holds with replica_id as a tensor, as replica_index() returns under a strategy.
  second = nt_xent_loss(z1[B:], z2[B:], temperature=temperature, z1_all=z1, z2_all=z2,
                        replica_id=tf.constant(1))
  np.testing.assert_allclose(second.numpy(), halves[1], rtol=RTOL)
  # The negatives really are global: the second half on its own is a different loss, and so
  # is pointing it at the first half's rows.
  local_only = nt_xent_loss(z1[B:], z2[B:], temperature=temperature).numpy()
  wrong_offset = nt_xent_loss(z1[B:], z2[B:], temperature=temperature, z1_all=z1, z2_all=z2,
                              replica_id=0).numpy()
  assert abs(local_only - halves[1]) > 1e-3
  assert abs(wrong_offset - halves[1]) > 1e-3


def test_helpers_outside_a_strategy_are_identity_and_zero():
  z = tf.constant(np.arange(6.0).reshape(3, 2))
  assert gather_global(z) is z
  assert replica_index() == 0


def test_helpers_in_cross_replica_context_are_identity_and_zero(strategy):
  z = tf.constant(np.arange(6.0).reshape(3, 2))
  with strategy.scope():
    assert gather_global(z) is z
    assert replica_index() == 0


def _split(strategy, *arrays):
  """Per-replica halves of each [2B, ...] array, replica r getting rows r*B:(r+1)*B."""
  def value_fn(ctx):
    r = ctx.replica_id_in_sync_group
    return tuple(tf.constant(a[r * B:(r + 1) * B]) for a in arrays)
  return strategy.experimental_distribute_values_from_function(value_fn)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_mirrored_strategy_loss_and_input_gradients_match_single_device(strategy, compiled):
  temperature = 0.2
  z1, z2 = random_views(np.random.default_rng(7), 2 * B, 16)

  def replica_fn(z1_local, z2_local):
    with tf.GradientTape() as tape:
      tape.watch([z1_local, z2_local])
      loss = nt_xent_loss(z1_local, z2_local, temperature=temperature,
                          z1_all=gather_global(z1_local), z2_all=gather_global(z2_local),
                          replica_id=replica_index())
    return (loss, replica_index(), *tape.gradient(loss, [z1_local, z2_local]))

  step = lambda inputs: strategy.run(replica_fn, args=inputs)
  if compiled:
    step = tf.function(step)
  results = step(_split(strategy, z1, z2))
  losses, ids, g1, g2 = (
      [t.numpy() for t in strategy.experimental_local_results(x)] for x in results)
  assert ids == [0, 1]

  a, b = tf.constant(z1), tf.constant(z2)
  with tf.GradientTape() as tape:
    tape.watch([a, b])
    full = nt_xent_loss(a, b, temperature=temperature)
  want_g1, want_g2 = (g.numpy() for g in tape.gradient(full, [a, b]))

  np.testing.assert_allclose(np.mean(losses), full.numpy(), rtol=RTOL)
  # all_gather's gradient sums over replicas, so each replica's gradient of its own loss is
  # R = 2 times the gradient of the replica-averaged (= full-batch) loss for its rows.
  got_g1, got_g2 = np.concatenate(g1) / 2, np.concatenate(g2) / 2
  for got, want in ((got_g1, want_g1), (got_g2, want_g2)):
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 1e-6
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


def test_mirrored_strategy_variable_gradients_match_single_device(strategy):
  """The training case: a shared projection, per-replica losses scaled by 1/R, summed grads."""
  temperature = 0.1
  rng = np.random.default_rng(8)
  h1, h2 = random_views(rng, 2 * B, 12)
  kernel = rng.normal(size=(12, 8))
  with strategy.scope():
    w = tf.Variable(kernel)

  @tf.function
  def step(inputs):
    def replica_fn(h1_local, h2_local):
      with tf.GradientTape() as tape:
        z1, z2 = h1_local @ w, h2_local @ w
        loss = nt_xent_loss(z1, z2, temperature=temperature, z1_all=gather_global(z1),
                            z2_all=gather_global(z2), replica_id=replica_index())
        scaled = loss / strategy.num_replicas_in_sync
      return loss, tape.gradient(scaled, w)
    loss, grad = strategy.run(replica_fn, args=inputs)
    return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None))

  loss, grad = step(_split(strategy, h1, h2))

  w_single = tf.Variable(kernel)
  with tf.GradientTape() as tape:
    full = nt_xent_loss(h1 @ w_single, h2 @ w_single, temperature=temperature)
  want = tape.gradient(full, w_single).numpy()
  np.testing.assert_allclose(loss.numpy(), full.numpy(), rtol=RTOL)
  assert np.abs(want).max() > 1e-6
  np.testing.assert_allclose(grad.numpy(), want, rtol=1e-7, atol=1e-12)


_Z = np.ones((4, 3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature.*0.0"),
    (dict(temperature=-0.5), "temperature.*-0.5"),
    (dict(temperature=float("nan")), "temperature.*nan"),
    (dict(temperature=float("inf")), "temperature.*inf"),
    (dict(z2=np.ones((4, 5))), r"z1 and z2.*\(4, 3\) and \(4, 5\)"),
    (dict(z2=np.ones((3, 3))), r"z1 and z2.*\(4, 3\) and \(3, 3\)"),
    (dict(z1=np.ones(4), z2=np.ones(4)), r"z1 must have shape \[B, D\].*\(4,\)"),
    (dict(z1_all=np.ones((8, 3))), "only z1_all"),
    (dict(z2_all=np.ones((8, 3))), "only z2_all"),
    (dict(z1_all=np.ones((8, 3)), z2_all=np.ones((4, 3))), r"z1_all and z2_all.*\(8, 3\)"),
    (dict(z1_all=np.ones((8, 5)), z2_all=np.ones((8, 5))), "feature size 5"),
    (dict(z1_all=np.ones((6, 3)), z2_all=np.ones((6, 3))), r"\(6 rows\).*B=4"),
    (dict(z1_all=np.ones((8, 3)), z2_all=np.ones((8, 3)), replica_id=2), "replica_id=2"),
    (dict(replica_id=1), "replica_id=1"),
    (dict(replica_id=-1), "replica_id must be >= 0, got -1"),
    (dict(replica_id=0.0), "replica_id must be an integer, got 0.0"),
    (dict(replica_id=tf.constant(0.0)), "replica_id must be an integer"),
])
def test_bad_arguments_raise(kwargs, match):
  args = {"z1": _Z, "z2": _Z, **kwargs}
  with pytest.raises(ValueError, match=match):
    nt_xent_loss(args.pop("z1"), args.pop("z2"), **args)
