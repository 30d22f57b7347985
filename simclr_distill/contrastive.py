"""SimCLR's contrastive objective (NT-Xent) with negatives drawn from the global batch.

`nt_xent_loss` is a pure function of projections and scalars. Under a `tf.distribute` strategy
the caller gathers the global batch with `gather_global` and passes its replica's position
with `replica_index`, inside the replica function (`strategy.run`, or a Keras `train_step`
under `strategy.scope()`):

  z1_all, z2_all = gather_global(z1), gather_global(z2)
  loss = nt_xent_loss(z1, z2, temperature=0.1, z1_all=z1_all, z2_all=z2_all,
                      replica_id=replica_index())

Gradients: `ReplicaContext.all_gather`'s gradient (TF 2.21, `distribute_lib.py`) all-reduces
(SUM) the upstream gradient across replicas and hands each replica the slice of its own rows.
Each replica's gradient of its own loss therefore already carries what the other replicas'
losses owe to its rows through their negatives. Scaling each replica's loss by 1 /
num_replicas (as Keras' `scale_loss_for_distribution` does) and summing variable gradients
across replicas (what optimizers do under a strategy) gives exactly the gradient of the
full-batch loss on one device.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

# Stands in for -inf on the anchor's own similarity: exp() of it underflows to exactly 0 in
# float32, and unlike -inf it cannot turn into NaN (inf - inf) inside the softmax.
_MASK_VALUE = -1e9


def _check_temperature(temperature: float) -> None:
  if not (temperature > 0 and math.isfinite(temperature)):  # `not >` also rejects NaN.
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_pair(name1: str, z1: tf.Tensor, name2: str, z2: tf.Tensor) -> None:
  if z1.shape.rank != 2:
    raise ValueError(f"{name1} must have shape [B, D], got {tuple(z1.shape)}")
  if not z1.shape.is_compatible_with(z2.shape):
    raise ValueError(
        f"{name1} and {name2} must have the same shape, got {tuple(z1.shape)} and "
        f"{tuple(z2.shape)}")


def _check_replica_id(replica_id, local_b: int | None, global_n: int | None) -> None:
  """Checks what is known before running: a replica id fixed at trace time and static sizes.

  MirroredStrategy's `replica_id_in_sync_group` is a constant tensor, so even inside
  `tf.function` its value is usually known here.
  """
  is_integer = (tf.is_tensor(replica_id) and replica_id.dtype.is_integer) or (
      isinstance(replica_id, numbers.Integral) and not isinstance(replica_id, bool))
  if not is_integer:
    raise ValueError(f"replica_id must be an integer, got {replica_id!r}")
  replicas = None
  if local_b is not None and global_n is not None:
    if local_b == 0 or global_n % local_b:
      raise ValueError(f"the global batch ({global_n} rows) must be a positive multiple of "
                       f"the local batch B={local_b}")
    replicas = global_n // local_b
  r = tf.get_static_value(replica_id)
  if r is not None and r < 0:
    raise ValueError(f"replica_id must be >= 0, got {int(r)}")
  if r is not None and replicas is not None and r >= replicas:
    raise ValueError(f"replica_id={int(r)} is outside the global batch: {global_n} rows hold "
                     f"{replicas} replicas of B={local_b}")

def _l2_normalize(z: tf.Tensor) -> tf.Tensor:
  """Unit-norm rows that stay finite for huge inputs.

  The sum of squares overflows float32 for entries past ~1e19, so rows are first divided by
  their largest magnitude; that changes nothing mathematically (normalisation is
  scale-invariant) and keeps the squares in range. All-zero rows stay zero.
  """
  scale = tf.reduce_max(tf.abs(z), axis=1, keepdims=True)
  z = tf.math.divide_no_nan(z, scale)
  return tf.math.l2_normalize(z, axis=1)


def _compute_dtype(dtype: tf.DType) -> tf.DType:
  # A softmax over thousands of logits of size 1/T is too coarse in half precision, so mixed
  # precision projections are promoted; float64 stays float64 for exact tests.
  return tf.float64 if dtype == tf.float64 else tf.float32


def nt_xent_loss(z1, z2, *, temperature: float = 0.1, z1_all=None, z2_all=None,
                 replica_id=0):
  """SimCLR's NT-Xent loss for this replica's anchors against the global batch.

  Rows are L2-normalised, so similarities are cosines. Every example contributes two anchors,
  z1[i] and z2[i]. The anchor z1[i] is scored against all rows of z2_all and z1_all (2N
  candidates for a global batch of N): its positive is its other view, z2_all[r*B + i], its
  own similarity is masked out, and the remaining 2N - 2 rows are negatives. Symmetrically
  for z2[i]. Each anchor's term is the softmax cross-entropy of its cosines / temperature with
  the positive as label; the result is the mean over this replica's 2B anchors.

  Args:
    z1: [B, D] projections of the first view of this replica's examples.
    z2: [B, D] projections of the second view of the same examples, in the same order.
    temperature: A finite Python float > 0 that divides the cosine similarities.
    z1_all: [N, D] first-view projections of the global batch (N = B * num_replicas, this
      replica's rows at offset replica_id * B), e.g. `gather_global(z1)`. None uses z1 (a
      single replica); z1_all and z2_all are given together or not at all.
    z2_all: [N, D] second-view projections of the global batch, rows aligned with z1_all.
    replica_id: This replica's index (a Python int or scalar integer tensor such as
      `replica_index()`), which locates its rows in z1_all / z2_all.

  Returns:
    A scalar tensor: float32, or float64 for float64 inputs (half-precision inputs are
    computed in float32). With several replicas it is this replica's share only; the
    caller averages over replicas (e.g. divides by num_replicas before gradients are summed,
    as Keras' distribution scaling does).

  Raises:
    ValueError: for a non-positive or non-finite temperature, z1 / z2 or z1_all / z2_all
      that are not rank 2 or differ in shape, only one of z1_all / z2_all given, a feature
      size that differs between local and global arrays, a global batch whose size is not a
      multiple of B, a replica_id that is not an integer, or one whose value is known when
      the function is called (a Python int or constant tensor) and is negative or points
      past the global batch.
  """
  _check_temperature(temperature)
  z1, z2 = tf.convert_to_tensor(z1), tf.convert_to_tensor(z2)
  _check_pair("z1", z1, "z2", z2)
  if (z1_all is None) != (z2_all is None):
    raise ValueError("give both z1_all and z2_all, or neither (got only "
                     f"{'z1_all' if z2_all is None else 'z2_all'})")
  if z1_all is None:
    z1_all, z2_all = z1, z2
  else:
    z1_all, z2_all = tf.convert_to_tensor(z1_all), tf.convert_to_tensor(z2_all)
    _check_pair("z1_all", z1_all, "z2_all", z2_all)
    if not z1.shape[1:].is_compatible_with(z1_all.shape[1:]):
      raise ValueError(f"z1_all has feature size {z1_all.shape[1]}, z1 has {z1.shape[1]}")
  _check_replica_id(replica_id, z1.shape[0], z1_all.shape[0])

  dtype = _compute_dtype(z1.dtype)
  z1, z2, z1_all, z2_all = (_l2_normalize(tf.cast(z, dtype)) for z in (z1, z2, z1_all, z2_all))

  b = tf.shape(z1)[0]
  n = tf.shape(z1_all)[0]
  # Column of each local row in the global arrays: the positive in the cross-view block and
  # the anchor itself in the same-view block.
  labels = tf.range(b) + tf.cast(replica_id, tf.int32) * b
  is_self = tf.one_hot(labels, n, on_value=True, off_value=False, dtype=tf.bool)

  def anchor_losses(anchors, other_view_all, same_view_all):
    cross = tf.matmul(anchors, other_view_all, transpose_b=True) / temperature
    same = tf.matmul(anchors, same_view_all, transpose_b=True) / temperature
    same = tf.where(is_self, tf.constant(_MASK_VALUE, dtype), same)
    # The positive sits in the cross block, whose columns come first, so its label is its
    # global row index.
    logits = tf.concat([cross, same], axis=1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

  loss_1 = anchor_losses(z1, z2_all, z1_all)
  loss_2 = anchor_losses(z2, z1_all, z2_all)
  return tf.reduce_mean(tf.concat([loss_1, loss_2], axis=0))


def gather_global(z):
  """Concatenates `z` over all replicas along axis 0, in replica order.

  Call it inside the replica function (`strategy.run`, or a Keras `train_step` under
  `strategy.scope()`), on every replica and in the same order: `all_gather` is a collective
  and hangs if one replica skips it. Gradients flow back to each replica's own rows (see the
  module docstring for how they add up across replicas).

  Args:
    z: [B, ...] this replica's tensor; every replica's must have the same shape.

  Returns:
    [B * num_replicas, ...] with replica r's rows at offset r * B, or `z` itself with a single
    replica or outside a replica context.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return z
  return ctx.all_gather(z, axis=0)


def replica_index():
  """This replica's id in its sync group: a scalar int32 tensor under a strategy, else 0.

  Returns:
    `replica_id_in_sync_group` of the current replica context, or 0 outside any (e.g. in a
    strategy's cross-replica context).
  """
  ctx = tf.distribute.get_replica_context()
  return 0 if ctx is None else ctx.replica_id_in_sync_group
