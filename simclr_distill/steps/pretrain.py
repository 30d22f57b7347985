"""Stage 1: SimCLR pretraining of the study's encoders, then probes of each.

  python -m stages.pretrain --preset=demo --workdir=results/study_demo
  python -m stages.pretrain --preset=paper --data_dir=data/bigearthnet --workdir=W --encoders=BEN

For each selected encoder (`StudyConfig.encoders`; "none", the random-init ablation, has no
stage 1) this writes `<workdir>/pretrain/<name>/`: `simclr.keras` (image -> 128-d projection;
its layer "projection_512" is where the study's fine-tuning head attaches), `history.csv`,
`tensorboard/` (its loss and learning rate per epoch) and `config.json` (settings, and the
digests of its inputs and checkpoint), through the run executor (`training.executor.fit_run`:
a killed run resumes at its last step checkpoint; on a cluster only the chief writes). Then the
frozen encoder and a random-init one are probed on the validation lists (rows of stage
"pretrain"). A finished encoder is reused while its inputs are unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time

import keras
import tensorflow as tf

from simclr_distill import augment, checkpointing, fileio, probe as probe_lib, provenance
from simclr_distill import simclr, teacher_net
from simclr_distill.data import records, source
from simclr_distill.data import splits as splits_lib
from simclr_distill.study_config import PretrainConfig, ProbeConfig, StudyConfig
from simclr_distill.training import executor, progress, runtime

log = logging.getLogger(__name__)

PRETRAIN = "pretrain"  # <workdir>/pretrain/<encoder>/


def run(cfg: StudyConfig) -> list[teacher_net.Encoder]:
  """Stage 1 alone: pretrains (or resumes, or reuses) this shard's share of the selected
  encoders (`--num_shards` processes split them) and probes each.

  Raises:
    ValueError: for an unknown augmentation policy, an architecture the data cannot feed, or
      `--only` (it filters the runs of stages 2 and 3; `--encoders` chooses stage 1's).
  """
  if cfg.distill.only:
    raise ValueError(f"--only={cfg.distill.only} filters the training runs of stages 2 and 3; "
                     "stage 1 pretrains the encoders that --encoders (or --encoder) names")
  check_policy(cfg.pretrain.policy)
  data = source.open_data(cfg.distill)
  d = cfg.distill
  return pretrain_encoders(cfg, data, runtime.strategy_of(d),
                           specs=cfg.selected_encoders()[d.shard_index::d.num_shards])


def check_policy(name: str) -> None:
  """Raises ValueError for a pretraining policy the augmentation registry lacks."""
  if name not in augment.POLICIES:
    raise ValueError(f"pretrain policy {name!r} is not one of "
                     f"{', '.join(augment.POLICIES.names())} (--pretrain_policy)")


def pretrain_encoders(cfg: StudyConfig, data: records.PreparedData, strategy, *,
                      train: bool = True, specs=None) -> list[teacher_net.Encoder]:
  """Stage 1 for each selected encoder (skipping finished ones); returns them ready to fine-tune.

  Args:
    train: pretrain missing encoders; False only finds them (stages.finetune).
    specs: the `EncoderSpec`s to pretrain (default: all of `cfg.selected_encoders()`).

  Raises:
    FileNotFoundError: for a missing checkpoint (with `train` False, a missing pretraining).
  """
  encoders = []
  specs = cfg.selected_encoders() if specs is None else specs
  if train:
    progress.planned("encoder", sum(s.pretrained and not s.checkpoint for s in specs))
  for spec in specs:
    pcfg = spec.pretrain_config(cfg.pretrain)
    if not spec.pretrained:
      encoders.append(teacher_net.Encoder(name=spec.name, arch=pcfg.arch, width=pcfg.width,
                                          freeze=spec.freeze))
      continue
    if spec.checkpoint:
      checkpoint, pcfg = _given_checkpoint(cfg, spec, pcfg, data, probe=train)
    elif not train:
      checkpoint = cfg.workdir / PRETRAIN / spec.name / simclr.CHECKPOINT
      if not checkpoint.is_file():
        raise FileNotFoundError(
            f"encoder {spec.name} is not pretrained: no {checkpoint}; run `python -m "
            f"stages.pretrain --encoders={spec.name} --workdir={cfg.workdir}` (or stages.study), "
            "or give --encoder=NAME:checkpoint=PATH")
    else:
      own = data if spec.data_dir is None else records.PreparedData.open(
          spec.data_dir, bands=cfg.distill.data.bands or None, image_size=cfg.distill.data.image_size,
          standardize=cfg.distill.data.standardize)
      if own.image_shape != data.image_shape:
        raise ValueError(f"encoder {spec.name}: its data {spec.data_dir} has images of "
                         f"{own.image_shape}, the study's {data.image_shape}; prepare both alike")
      train_cfg = cfg.distill.train
      finished = cfg.workdir / PRETRAIN / spec.name / simclr.CHECKPOINT
      before = finished.stat().st_mtime_ns if finished.is_file() else None
      begin = time.perf_counter()
      # An encoder pretrained on other data (unlabelled scene patches, say) is probed on the
      # study's labelled splits, like every other encoder and the random-init network.
      checkpoint = run_pretraining(
          pcfg, own, cfg.workdir, strategy=strategy, checkpoint=checkpointing.CheckpointPolicy(
              train_cfg.checkpoint_steps, train_cfg.checkpoint_minutes),
          probe=cfg.probe_config() if own is data else None, preset=cfg.distill.preset,
          retrain_stale=cfg.distill.retrain_stale)
      if own is not data and cfg.probe and runtime.is_writer(strategy):
        probe_pretraining(pcfg, data, cfg.workdir, checkpoint, cfg.probe_config(),
                          global_batch=pcfg.batch_size * strategy.num_replicas_in_sync,
                          preset=cfg.distill.preset, retrain_stale=cfg.distill.retrain_stale)
      reused = before is not None and finished.is_file() and finished.stat().st_mtime_ns == before
      progress.done("encoder", None if reused else time.perf_counter() - begin)
    encoders.append(teacher_net.Encoder(name=spec.name, optimizer=spec.optimizer,
                                        checkpoint=str(checkpoint), arch=pcfg.arch,
                                        width=pcfg.width, freeze=spec.freeze))
  return encoders


def _given_checkpoint(cfg: StudyConfig, spec, pcfg: PretrainConfig, data: records.PreparedData,
                      *, probe: bool) -> tuple[pathlib.Path, PretrainConfig]:
  """An encoder pretrained elsewhere (`--encoder=NAME:checkpoint=F`): its path, and its
  architecture as the stage-1 config.json beside it records (probed unless `probe` is False)."""
  checkpoint = pathlib.Path(spec.checkpoint)
  if not checkpoint.exists():
    raise FileNotFoundError(f"encoder {spec.name}: no checkpoint at {checkpoint}")
  made_here = checkpoint.parent / executor.CONFIG  # Written by stage 1 beside its checkpoint.
  own = fileio.read_json(made_here).get("pretrain") if made_here.is_file() else None
  if own:
    pcfg = dataclasses.replace(pcfg, arch=own["arch"], width=own.get("width"))
  if probe and cfg.probe and checkpoint.is_file():
    probe_pretraining(pcfg, data, cfg.workdir, checkpoint, cfg.probe_config(), global_batch=0,
                      preset=cfg.distill.preset, settings={"checkpoint": fileio.digest(checkpoint)},
                      retrain_stale=cfg.distill.retrain_stale)
  return checkpoint, pcfg


def run_pretraining(cfg: PretrainConfig, data: records.PreparedData, workdir: str | pathlib.Path,
                    *, strategy: tf.distribute.Strategy | None = None,
                    checkpoint: checkpointing.CheckpointPolicy = checkpointing.CheckpointPolicy(),
                    probe: ProbeConfig | None = ProbeConfig(), preset: str = "",
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
  if probe is not None and runtime.is_writer(strategy):  # The chief writes the rows.
    probe_pretraining(cfg, data, workdir, path, probe, global_batch=cfg.batch_size *
                      strategy.num_replicas_in_sync, preset=preset, retrain_stale=retrain_stale)
  return path


def _pool_inputs(data: records.PreparedData) -> dict[str, str]:
  """What the pretraining pool depends on: the data and every scheme's test list."""
  digests = provenance.split_digests(data, data.schemes)
  return provenance.inputs_of(data, [k for k in digests if k.endswith("/" + splits_lib.TEST)],
                              digests)


def _reusable_pretraining(out: pathlib.Path, inputs: dict[str, str], retrain_stale: bool,
                          writer: bool) -> bool:
  """Whether `out` holds a finished pretraining that may be reused (see `run_pretraining`),
  given the current digests of its `inputs` (`_pool_inputs`); a stale or corrupt one is moved
  to `superseded/` (by the writer) and trained again."""
  checkpoint_path = out / simclr.CHECKPOINT
  if not checkpoint_path.is_file():
    return False
  recorded = fileio.read_json(out / executor.CONFIG).get(provenance.KEY) if (
      out / executor.CONFIG).is_file() else None
  if recorded is None:
    return True  # Finished before pretraining recorded its inputs: not verifiable.
  before, now = recorded["inputs"], inputs
  changed = [provenance.describe(k) + " changed" for k in sorted(before) if now.get(k) != before[k]]
  corrupt = provenance.file_digest(checkpoint_path) != recorded["outputs"].get(simclr.CHECKPOINT)
  if not changed and not corrupt:
    return True
  if changed and not retrain_stale:
    raise provenance.StaleRunsError(provenance.stale_message(
        out.parent.parent, [provenance.Verdict(f"{PRETRAIN}/{out.name}", "stale", tuple(changed))],
        "--retrain_stale", kept=f"{PRETRAIN}/{out.name}/{provenance.SUPERSEDED}/"))
  why = "; ".join(changed) or f"{simclr.CHECKPOINT} does not match its recorded digest"
  if writer:  # The checkpoint first: without it the pretraining counts as unfinished.
    target = provenance.supersede_dir(out, first=simclr.CHECKPOINT)
    log.warning("pretraining %s: %s; it is trained again (its old files are in %s)", out.name,
                why, target)
  return False


def probe_pretraining(cfg: PretrainConfig, data: records.PreparedData, workdir, path: pathlib.Path,
                      probe: ProbeConfig, *, global_batch: int, preset: str = "",
                      settings: dict | None = None, retrain_stale: bool = False) -> None:
  """The probes of a pretrained encoder and of a random-init network of its architecture (the
  latter once per architecture, width and seed), each skipped when done. `settings` identify
  the encoder (default: its pretraining config)."""
  settings = settings or dataclasses.asdict(cfg)
  common = dict(data=data, workdir=workdir, arch=cfg.arch, config=probe, preset=preset,
                code_version=provenance.code_version(), retrain_stale=retrain_stale)
  probe_lib.probe_encoder(lambda: keras.models.load_model(path, compile=False),
                          encoder=cfg.name, encoder_optimizer=cfg.optimizer,
                          settings=settings, history=path.parent / "history.csv",
                          global_batch=global_batch, **common)

  def random_init() -> keras.Model:
    keras.utils.set_random_seed(cfg.seed)
    return simclr.build_simclr_model(cfg.arch, data.image_shape, width=cfg.width)

  probe_lib.probe_encoder(random_init, encoder=probe_lib.RANDOM_INIT, encoder_optimizer="",
                          settings={"arch": cfg.arch, "width": cfg.width, "seed": cfg.seed},
                          **common)


def _pretrain(cfg: PretrainConfig, data: records.PreparedData, workdir: str | pathlib.Path,
              strategy: tf.distribute.Strategy, policy: checkpointing.CheckpointPolicy,
              retrain_stale: bool = False) -> pathlib.Path:
  out = pathlib.Path(workdir) / PRETRAIN / cfg.name
  checkpoint_path = out / simclr.CHECKPOINT
  writer = runtime.is_writer(strategy)  # False on a cluster's other workers: they write nothing.
  inputs = _pool_inputs(data)  # What this pretraining reads, as it starts.
  if _reusable_pretraining(out, inputs, retrain_stale, writer):
    return checkpoint_path
  out.mkdir(parents=True, exist_ok=True)
  ids = simclr.pretraining_pool(data)
  global_batch = cfg.batch_size * strategy.num_replicas_in_sync
  if len(ids) < global_batch:
    raise ValueError(f"the pretraining pool has {len(ids)} examples, fewer than one global batch")
  keras.utils.set_random_seed(cfg.seed)
  steps = len(ids) // global_batch
  with strategy.scope():
    network = simclr.build_simclr_model(cfg.arch, data.image_shape, width=cfg.width)
    model = simclr.SimCLR(network, cfg.temperature)
    # SGD decays its rate by a cosine over the whole run, as the study's code did.
    model.compile(optimizer=runtime.build_optimizer(
        cfg.optimizer, cfg.learning_rate, schedule="cosine" if cfg.optimizer == "sgd" else "constant",
        total_steps=steps * cfg.epochs))
  zeros = tf.zeros((1, *data.image_shape))
  model((zeros, zeros))  # Builds every variable before a restore.
  settings = {"pretrain": dataclasses.asdict(cfg), "pool": len(ids),
              "replicas": strategy.num_replicas_in_sync, "data": data.fingerprint()}
  if writer:
    fileio.write_json(out / executor.CONFIG, settings)
  fit = executor.fit_run(
      out, model, lambda: checkpointing.training_variables(model),
      lambda skip: simclr.make_view_pairs(data, ids, batch_size=global_batch, seed=cfg.seed,
                                          policy=cfg.policy, skip_batches=skip),
      label=f"pretrain {cfg.name}", epochs=cfg.epochs, steps_per_epoch=steps, policy=policy,
      writer=writer)
  if fit.nonfinite:
    raise ValueError(f"pretraining {cfg.name} diverged: its loss became NaN/inf by epoch "
                     f"{fit.epochs_run}; lower --pretrain learning rate or check the data, "
                     f"then delete {out} to restart")
  if writer:  # The network, then what it was trained on and the digest of what it wrote.
    with fileio.atomic_path(checkpoint_path, suffix=".keras") as tmp:
      network.save(tmp)
    fileio.write_json(out / executor.CONFIG, {**settings, provenance.KEY: {
        "inputs": inputs,
        "outputs": {simclr.CHECKPOINT: provenance.file_digest(checkpoint_path)}}})
  executor.finish_run(out, fit, writer)
  rate = fit.checkpoint.steps_trained / max(fit.seconds, 1e-9)
  log.info("pretrained %s: %d epochs on %d examples in %s (%.3g steps/s, %.0f images/s) -> %s",
           cfg.name, fit.epochs_run, len(ids), progress.duration(fit.seconds), rate,
           rate * global_batch, checkpoint_path)
  return checkpoint_path
