"""The stage-1 model: a SimCLR network trained with NT-Xent on two views of each example.

The model is the study's: an encoder from the architecture registry (global average pooled),
then the projection head Dense 1024 relu -> Dense 512 relu -> Dense 128. Two views of each
example are made in the input pipeline (`augment.make_views`, stateless seeds drawn from a
seeded random stream, so each epoch sees new views and a seed repeats a run). The NT-Xent loss
takes its negatives from the GLOBAL batch: each replica gathers every replica's projections
(`contrastive.gather_global`), as SimCLR does on TPU pods.

`steps.pretrain` trains it into `<workdir>/pretrain/<name>/simclr.keras` (image -> 128-d
projection; its layer "projection_512" is where the study's fine-tuning head attaches).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from simclr_distill import augment, contrastive, keras_compat, models
from simclr_distill.data import pipeline, records
from simclr_distill.data import splits as splits_lib

CHECKPOINT = "simclr.keras"
PROJECTION_LAYER = "projection_512"


def build_simclr_model(arch: str, input_shape, *, width: int | None = None) -> keras.Model:
  """Encoder + the study's projection head (1024 relu, 512 relu, 128), image -> projection."""
  models.check_input_size(arch, input_shape)
  spec = models.ARCHITECTURES.get(arch)
  inputs = keras.Input(shape=tuple(input_shape), name="image")
  features = spec.build_features(inputs, width)
  if len(features.shape) == 4:
    features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
  x = keras.layers.Dense(1024, activation="relu", name="projection_1024")(features)
  x = keras.layers.Dense(512, activation="relu", name=PROJECTION_LAYER)(x)
  outputs = keras.layers.Dense(128, name="projection_128", dtype="float32")(x)
  return keras.Model(inputs, outputs, name=f"simclr_{arch}")


class SimCLR(keras_compat.ClusterSafeModel):
  """Trains `network` with NT-Xent on pairs of views; batches are (view1, view2)."""

  def __init__(self, network: keras.Model, temperature: float, **kwargs):
    super().__init__(name="simclr", **kwargs)
    self.network = network
    self.temperature = temperature

  def call(self, views, training=False):
    view1, view2 = views
    return self.network(view1, training=training), self.network(view2, training=training)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    z1, z2 = y_pred
    loss = contrastive.nt_xent_loss(
        z1, z2, temperature=self.temperature, z1_all=contrastive.gather_global(z1),
        z2_all=contrastive.gather_global(z2), replica_id=contrastive.replica_index())
    # Each replica's loss is 1/replicas of the global mean, as Keras' own losses are.
    return loss / tf.distribute.get_strategy().num_replicas_in_sync


def make_view_pairs(data: records.PreparedData, ids, *, batch_size: int, seed: int,
                    policy: str, skip_batches: int = 0) -> tf.data.Dataset:
  """Endless (view1, view2) batches: shuffle -> repeat -> augment with fresh seeds -> batch;
  with `skip_batches`, the same stream less its first batches (a resumed run's position)."""
  images = pipeline.sized(data, ids).map(lambda ex: ex["image"], num_parallel_calls=tf.data.AUTOTUNE)
  stream = pipeline.shuffled(images, size=len(ids), seed=seed)
  # A seeded random stream after repeat: new views every epoch, the same views for a seed.
  seeds = tf.data.Dataset.random(seed=seed).batch(2).map(lambda s: tf.cast(s % (2**31 - 1), tf.int32))
  pairs = tf.data.Dataset.zip(stream, seeds).skip(skip_batches * batch_size).map(
      lambda image, s: augment.make_views(image, s, policy=policy),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return pairs.map(lambda v1, v2: ((v1, v2),)).batch(
      batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def pretraining_pool(data: records.PreparedData) -> list[str]:
  """The study's stage-1 pool: every example except the union of the schemes' test lists."""
  test = set()
  for scheme in data.schemes:
    test.update(data.splits(scheme)[splits_lib.TEST])
  return [i for i in data.ids() if i not in test]
