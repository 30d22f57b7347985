"""Stage 1: SimCLR pretraining of an encoder on an unlabelled stream.

The model is the study's: an encoder from the architecture registry (global average pooled),
then the projection head Dense 1024 relu -> Dense 512 relu -> Dense 128. Two views of each
example are made in the input pipeline (`augment.make_views`, stateless seeds drawn from a
seeded random stream, so each epoch sees new views and a seed repeats a run). The NT-Xent loss
takes its negatives from the GLOBAL batch: each replica gathers every replica's projections
(`contrastive.gather_global`), as SimCLR does on TPU pods.

Writes `<workdir>/pretrain/<name>/`: `simclr.keras` (image -> 128-d projection; its layer
"projection_512" is where the study's fine-tuning head attaches), `history.csv`, `config.json`,
and `backup/` while training (a killed run resumes at its last epoch).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import time

import keras
import pandas as pd
import tensorflow as tf

from simclr_distill import augment, checkpointing, config as config_lib, contrastive, fileio, models
from simclr_distill import probe as probe_lib, provenance
from simclr_distill.data import pipeline, records
from simclr_distill.data import splits as splits_lib

log = logging.getLogger(__name__)

CHECKPOINT = "simclr.keras"
PROJECTION_LAYER = "projection_512"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """One pretraining run.

  Attributes:
    name: the pretrained encoder's name (the zoo's `encoder` column), e.g. BEN.
    arch: encoder architecture (registry name); width applies to the small ones.
    optimizer: "adam" or "sgd" (SGD with momentum 0.9 and cosine decay, as the study's code).
    learning_rate: peak learning rate.
    temperature: NT-Xent temperature.
    batch_size: per-replica batch (the global batch, and so the negatives, grow with replicas).
    epochs: passes over the pool.
    policy: augmentation policy ("study": two of nine; "simclr": the standard one).
    seed: seeds views, shuffling and initialisation.
  """

  name: str = "demo"
  arch: str = "cnn"
  width: int | None = None
  optimizer: str = "adam"
  learning_rate: float = 5e-4
  temperature: float = 0.1
  batch_size: int = 32
  epochs: int = 50
  policy: str = "study"
  seed: int = 0

  def __post_init__(self):
    import math

    config_lib._check_choice("optimizer", self.optimizer, config_lib.OPTIMIZERS)
    config_lib._check(math.isfinite(self.temperature) and self.temperature > 0,
                      f"temperature={self.temperature} must be > 0 and finite")
    config_lib._check(self.batch_size >= 2, "batch_size must be >= 2 (NT-Xent needs negatives)")
    config_lib._check(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
    config_lib._check(math.isfinite(self.learning_rate) and self.learning_rate > 0,
                      f"learning_rate={self.learning_rate} must be > 0 and finite")
    config_lib._check(self.policy in augment.POLICIES,
                      f"pretrain policy {self.policy!r} is not one of "
                      f"{', '.join(augment.POLICIES.names())} (--pretrain_policy)")


PRESETS = {
    # The study: ResNet152 on BigEarthNet, batch 32, 50 epochs, temperature 0.1, Adam 5e-4.
    "paper": PretrainConfig(name="BEN", arch="ResNet152", optimizer="adam", learning_rate=5e-4,
                            temperature=0.1, batch_size=32, epochs=50),
    # The digits demo on CPU: a small CNN, large batches for enough negatives, and views made
    # for 8x8 digits ("affine": small orientation-keeping warps, contrast, noise). Chosen on the
    # digits' validation lists (never the test lists): with the study's two-of-nine views the
    # SGD encoder's NT-Xent stayed at chance (5.537 -> 5.541 over 30 epochs, ln 255 = 5.541)
    # and the Adam encoder's linear probe (3% split, val_100) scored below raw pixels; with
    # these views, both losses fall (5.35 -> 3.95 Adam, 5.53 -> 4.04 SGD at 0.03) and the
    # probes beat raw pixels.
    "demo": PretrainConfig(name="digits_adam", arch="cnn", width=32, optimizer="adam",
                           learning_rate=1e-3, temperature=0.5, batch_size=128, epochs=60,
                           policy="affine"),
    "smoke": PretrainConfig(name="digits_adam", arch="cnn", width=16, optimizer="adam",
                            learning_rate=1e-3, temperature=0.5, batch_size=128, epochs=2,
                            policy="affine"),
}


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


class SimCLR(keras.Model):
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


def run_pretraining(cfg: PretrainConfig, data: records.PreparedData, workdir: str | pathlib.Path,
                    *, strategy: tf.distribute.Strategy | None = None,
                    checkpoint: checkpointing.CheckpointPolicy = checkpointing.CheckpointPolicy(),
                    probe: probe_lib.ProbeConfig | None = probe_lib.ProbeConfig(), preset: str = "",
                    retrain_stale: bool = False) -> pathlib.Path:
  """Pretrains (or resumes, or skips when finished) one encoder; returns its checkpoint path.

  The training state is checkpointed per `checkpoint` and at every epoch end in
  `<workdir>/pretrain/<name>/`; a killed run resumes there when called again. Then, unless
  `probe` is None, the frozen encoder and a random-init network of the same architecture are
  probed on the validation lists (`probe.probe_encoder`; results rows of stage "pretrain").

  A finished pretraining is reused only while the data and the test lists that shaped its pool
  are unchanged and its checkpoint matches the digest recorded in its config.json.

  Raises:
    ValueError: for an empty pool or an architecture that cannot take the data's input size.
    provenance.StaleRunsError: for a finished pretraining whose inputs changed (unless
      `retrain_stale`: it is trained again, the old files kept in `superseded/`).
  """
  strategy = strategy or tf.distribute.get_strategy()
  path = _pretrain(cfg, data, workdir, strategy, checkpoint, retrain_stale=retrain_stale)
  if probe is not None and strategy.extended.should_checkpoint:  # The chief writes the rows.
    probe_pretraining(cfg, data, workdir, path, probe, global_batch=cfg.batch_size *
                      strategy.num_replicas_in_sync, preset=preset, retrain_stale=retrain_stale)
  return path


def _pool_inputs(data: records.PreparedData) -> dict[str, str]:
  """What the pretraining pool depends on: the data and every scheme's test list."""
  digests = provenance.split_digests(data, data.schemes)
  return provenance.inputs_of(data, [k for k in digests if k.endswith("/" + splits_lib.TEST)],
                              digests)


def _reusable_pretraining(out: pathlib.Path, data: records.PreparedData,
                          retrain_stale: bool) -> bool:
  """Whether `out` holds a finished pretraining that may be reused (see `run_pretraining`)."""
  checkpoint_path = out / CHECKPOINT
  if not checkpoint_path.is_file():
    return False
  recorded = fileio.read_json(out / "config.json").get(provenance.KEY) if (
      out / "config.json").is_file() else None
  if recorded is None:
    return True  # Finished before pretraining recorded its inputs: not verifiable.
  before, now = recorded["inputs"], _pool_inputs(data)
  changed = [provenance.describe(k) + " changed" for k in sorted(before) if now.get(k) != before[k]]
  corrupt = provenance.file_digest(checkpoint_path) != recorded["outputs"].get(CHECKPOINT)
  if not changed and not corrupt:
    return True
  if changed and not retrain_stale:
    raise provenance.StaleRunsError(provenance.stale_message(
        out.parent.parent, [provenance.Verdict(f"pretrain/{out.name}", "stale", tuple(changed))],
        "--retrain_stale", kept=f"pretrain/{out.name}/{provenance.SUPERSEDED}/"))
  why = "; ".join(changed) or f"{CHECKPOINT} does not match its recorded digest"
  stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S.%fZ")
  target = out / provenance.SUPERSEDED / stamp
  target.mkdir(parents=True)
  for p in sorted(out.iterdir(), key=lambda p: p.name != CHECKPOINT):
    if p.name != provenance.SUPERSEDED:
      shutil.move(str(p), str(target / p.name))
  log.warning("pretraining %s: %s; it is trained again (its old files are in %s)", out.name, why,
              target)
  return False


def probe_pretraining(cfg: PretrainConfig, data: records.PreparedData, workdir, path: pathlib.Path,
                      probe: probe_lib.ProbeConfig, *, global_batch: int, preset: str = "",
                      settings: dict | None = None, retrain_stale: bool = False) -> None:
  """The probes of a pretrained encoder and of a random-init network of its architecture (the
  latter once per architecture, width and seed), each skipped when done. `settings` identify
  the encoder (default: its pretraining config)."""
  from simclr_distill.distill import code_version

  settings = settings or dataclasses.asdict(cfg)
  common = dict(data=data, workdir=workdir, arch=cfg.arch, config=probe, preset=preset,
                code_version=code_version(), retrain_stale=retrain_stale)
  probe_lib.probe_encoder(lambda: keras.models.load_model(path, compile=False),
                          encoder=cfg.name, encoder_optimizer=cfg.optimizer,
                          settings=settings, history=path.parent / "history.csv",
                          global_batch=global_batch, **common)

  def random_init() -> keras.Model:
    keras.utils.set_random_seed(cfg.seed)
    return build_simclr_model(cfg.arch, data.image_shape, width=cfg.width)

  probe_lib.probe_encoder(random_init, encoder=probe_lib.RANDOM_INIT, encoder_optimizer="",
                          settings={"arch": cfg.arch, "width": cfg.width, "seed": cfg.seed},
                          **common)


def _pretrain(cfg: PretrainConfig, data: records.PreparedData, workdir: str | pathlib.Path,
              strategy: tf.distribute.Strategy, checkpoint: checkpointing.CheckpointPolicy,
              retrain_stale: bool = False) -> pathlib.Path:
  out = pathlib.Path(workdir) / "pretrain" / cfg.name
  checkpoint_path = out / CHECKPOINT
  if _reusable_pretraining(out, data, retrain_stale):
    return checkpoint_path
  out.mkdir(parents=True, exist_ok=True)
  ids = pretraining_pool(data)
  if len(ids) < cfg.batch_size * strategy.num_replicas_in_sync:
    raise ValueError(f"the pretraining pool has {len(ids)} examples, fewer than one global batch")
  keras.utils.set_random_seed(cfg.seed)
  global_batch = cfg.batch_size * strategy.num_replicas_in_sync
  steps = len(ids) // global_batch
  with strategy.scope():
    network = build_simclr_model(cfg.arch, data.image_shape, width=cfg.width)
    model = SimCLR(network, cfg.temperature)
    if cfg.optimizer == "sgd":
      schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps * cfg.epochs)
      optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    else:
      optimizer = keras.optimizers.Adam(cfg.learning_rate)
    model.compile(optimizer=optimizer)
  zeros = tf.zeros((1, *data.image_shape))
  model((zeros, zeros))  # Builds every variable before a restore.
  writer = bool(strategy.extended.should_checkpoint)  # False on non-chief workers.
  state = checkpointing.StepCheckpoint(out, lambda: checkpointing.training_variables(model),
                                       checkpoint, writer=writer)
  saved = state.saved_position()
  if writer:
    fileio.align_history(out / "history.csv", saved.epoch if saved else None)
  fileio.write_json(out / "config.json", {"pretrain": dataclasses.asdict(cfg), "pool": len(ids),
                                          "replicas": strategy.num_replicas_in_sync,
                                          "data": data.fingerprint()})
  start = time.perf_counter()
  checkpointing.resumable_fit(
      model, lambda skip: make_view_pairs(data, ids, batch_size=global_batch, seed=cfg.seed,
                                          policy=cfg.policy, skip_batches=skip),
      checkpoint=state, epochs=cfg.epochs, steps_per_epoch=steps,
      callbacks=[*([keras.callbacks.CSVLogger(str(out / "history.csv"), append=True)]
                   if writer else []),
                 keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: log.info(
                     "pretrain %s epoch %d/%d: loss=%.4f", cfg.name, e + 1, cfg.epochs,
                     logs["loss"]))])
  if state.position.nonfinite:
    raise ValueError(f"pretraining {cfg.name} diverged: its loss became NaN/inf by epoch "
                     f"{state.position.epoch}; lower --pretrain learning rate or check the data, "
                     f"then delete {out} to restart")
  with fileio.atomic_path(checkpoint_path, suffix=".keras") as tmp:
    network.save(tmp)
  if writer:  # What it was trained on, and the digest of what it wrote (see run_pretraining).
    settings = fileio.read_json(out / "config.json")
    fileio.write_json(out / "config.json", {**settings, provenance.KEY: {
        "inputs": _pool_inputs(data), "outputs": {CHECKPOINT: provenance.file_digest(checkpoint_path)}}})
  state.delete()
  log.info("pretrained %s on %d examples in %.0f s -> %s", cfg.name, len(ids),
           time.perf_counter() - start, checkpoint_path)
  return checkpoint_path
