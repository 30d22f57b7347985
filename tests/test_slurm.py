"""The SLURM launcher: scripts and shards (no cluster needed), then the whole smoke study on the
real single-node cluster that `make slurm` starts (Debian's slurm-wlm; skipped with the reason
where it does not answer): a chain that completes exactly once and equal to the local study
while its tasks are killed and requeued, and a chain whose failing task cancels its
dependants and makes --wait exit non-zero."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from simclr_distill.cluster import environment, slurm

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _command(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
  for name in [n for n in env if n.startswith("SLURM_")]:
    del env[name]
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                        capture_output=True, timeout=timeout)


def _scripts(workdir: pathlib.Path) -> dict[str, str]:
  (chain,) = (workdir / slurm.SLURM_DIR).iterdir()
  return {p.stem: p.read_text() for p in chain.iterdir() if p.is_file()}


# ---- shards from the environment ------------------------------------------------------------------

def test_a_slurm_array_task_is_its_shard_counted_from_the_array_minimum():
  env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
  shard = environment.environment_shard(env)
  assert (shard.index, shard.count) == (2, 4)
  assert environment.environment_shard({}) is None
  with pytest.raises(ValueError, match="differs from this SLURM array's 4 tasks"):
    environment.environment_shard(env, num_shards=3)
  with pytest.raises(ValueError, match="not one of 4 consecutive tasks"):
    environment.environment_shard({**env, "SLURM_ARRAY_TASK_ID": "9"})


def test_a_kubernetes_indexed_job_needs_its_completions_count():
  with pytest.raises(ValueError, match="give --num_shards=<the Job's completions>"):
    environment.environment_shard({"JOB_COMPLETION_INDEX": "2"})
  shard = environment.environment_shard({"JOB_COMPLETION_INDEX": "2"}, num_shards=3)
  assert (shard.index, shard.count) == (2, 3)
  with pytest.raises(ValueError, match="not below --num_shards=2"):
    environment.environment_shard({"JOB_COMPLETION_INDEX": "2"}, num_shards=2)


def test_the_stages_take_their_shard_from_the_environment_unless_told_otherwise():
  env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "4"}

  def config(*args, extra=env):
    proc = subprocess.run([sys.executable, "-m", "stages.distill", "--preset=smoke",
                           "--print_config", *args], cwd=ROOT, text=True, capture_output=True,
                          env={**os.environ, **extra}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "shard" in line or
                "work_queue" in line)

  assert config() == {"shard_index": "1", "num_shards": "4", "work_queue": "false"}
  assert config("--shard_index=0", "--num_shards=2")["shard_index"] == "0"
  assert config("--work_queue")["num_shards"] == "1"  # A work-queue worker takes no shard.
  k8s = {"JOB_COMPLETION_INDEX": "2"}
  assert config("--num_shards=3", extra=k8s)["shard_index"] == "2"


# ---- scripts ----------------------------------------------------------------------------------------

def test_per_job_settings_parse_a_default_and_job_overrides():
  assert slurm.per_job("12:00:00,pretrain=48:00:00") == {"*": "12:00:00", "pretrain": "48:00:00"}
  assert slurm.per_job(["--qos=long", "distill=--constraint=a100"]) == {
      "*": "--qos=long", "distill": "--constraint=a100"}
  resources = slurm.apply(slurm.CPU_RESOURCES, "gpus", slurm.per_job("1,report=0", int))
  assert resources["distill"].gpus == 1 and resources["report"].gpus == 0
  with pytest.raises(ValueError, match="'x' is not a valid value"):
    slurm.per_job("distill=x", int)


def test_the_study_is_a_chain_each_job_after_what_it_reads():
  config = slurm.SlurmConfig()
  counts = {"pretrain": 3, "finetune": 36, "label": 36, "distill": 180, "baseline": 120}
  jobs = {j.name: j for j in slurm.plan_study(["--preset=paper"], counts, config, python="py")}
  assert list(jobs) == list(slurm.STUDY_JOBS)
  assert jobs["distill"].after == ("label",) and jobs["baseline"].after == ("prepare",)
  assert jobs["report"].after == ("distill", "baseline")
  assert jobs["pretrain"].tasks == 2 and "--work_queue" not in jobs["pretrain"].command
  assert "--work_queue" in jobs["distill"].command and "--steps=distill" in jobs["distill"].command
  # An external zoo: no stage 1 or 2; labelling waits for the data alone.
  jobs = {j.name: j for j in slurm.plan_study(
      [], {**counts, "pretrain": 0, "finetune": 0}, config, python="py")}
  assert "pretrain" not in jobs and jobs["label"].after == ("prepare",)


def test_dry_run_of_the_paper_preset_prints_gpu_scripts_and_submits_nothing(tmp_path):
  proc = _command("stages.study", "--preset=paper", f"--workdir={tmp_path}", "--launcher=slurm",
                  "--dry_run", "--slurm_partition=gpu,report=cpu", "--slurm_account=lab",
                  "--slurm_time=2:00:00,pretrain=48:00:00", "--slurm_throttle=distill=8",
                  "--slurm_extra=--qos=long", "--slurm_extra=distill=--constraint=a100",
                  "--slurm_setup=module load cuda")
  assert proc.returncode == 0, proc.stderr
  assert "would stop at once" in proc.stderr  # No BigEarthNet here: said, not hidden.
  scripts = _scripts(tmp_path)
  assert sorted(scripts) == sorted([*slurm.STUDY_JOBS, "submit"])
  assert "nothing submitted" in proc.stdout and scripts["distill"] in proc.stdout
  distill, pretrain, report = scripts["distill"], scripts["pretrain"], scripts["report"]
  assert "#SBATCH --array=0-29%8" in distill and "#SBATCH --gpus-per-task=1" in distill
  assert "#SBATCH --constraint=a100" in distill and "#SBATCH --qos=long" in report
  assert "#SBATCH --array=0-2\n" in pretrain and "#SBATCH --time=48:00:00" in pretrain
  assert "#SBATCH --partition=cpu" in report and "--gpus-per-task" not in report
  assert "#SBATCH --account=lab" in report and "module load cuda" in distill
  assert "#SBATCH --signal=B:USR1@120" in distill and "#SBATCH --requeue" in distill
  assert "--steps=distill --work_queue" in distill and "--launcher" not in distill
  assert ("--dependency=afterok:$job_distill:$job_baseline --kill-on-invalid-dep=yes report.sbatch"
          in scripts["submit"])


def test_a_single_stage_with_shards_is_one_array_of_that_many_tasks(tmp_path):
  proc = _command("stages.distill", "--preset=smoke", f"--workdir={tmp_path}",
                  "--launcher=slurm", "--dry_run", "--num_shards=3")
  assert proc.returncode == 0, proc.stderr
  script = _scripts(tmp_path)["distill"]
  assert "#SBATCH --array=0-2\n" in script and "--num_shards=3" in script
  assert "--work_queue" not in script and "--shard_index" not in script


def test_launcher_flags_without_the_launcher_are_refused():
  proc = _command("stages.study", "--preset=smoke", "--dry_run")
  assert proc.returncode == 2 and "--dry_run goes with --launcher=slurm" in proc.stderr


# ---- the real cluster --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
  if shutil.which("sbatch") is None:
    pytest.skip("SLURM is not installed: `make slurm` installs and starts a local cluster (root "
                "or sudo)")
  proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
  if proc.returncode != 0 or not re.search(r"idle|mixed|alloc", proc.stdout):
    pytest.skip(f"no SLURM cluster answers (sinfo: {proc.stderr.strip() or proc.stdout.strip()}): "
                "`make slurm` starts one")


def _launch(workdir: pathlib.Path, *args: str) -> subprocess.Popen:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
  return subprocess.Popen([sys.executable, "-m", "stages.study", "--preset=smoke",
                           f"--workdir={workdir}", "--launcher=slurm", "--wait", *args],
                          cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)


def _squeue(*args: str) -> list[list[str]]:
  out = subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True).stdout
  return [line.split() for line in out.splitlines() if line.strip()]


def _release_requeued(seen: dict[str, float]) -> None:
  """SLURM holds a requeued task back for about two minutes (its begin time); start it after
  a few seconds instead. (Sooner, slurmd may still hold the task's revoked credential and
  refuse to launch it: "Job credential revoked", and the task fails.)"""
  now = time.monotonic()
  for task, reason in _squeue("-t", "PD", "-o", "%i %r"):
    if reason == "BeginTime" and now - seen.setdefault(task, now) > 5:
      subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], capture_output=True)
      del seen[task]


def _stage_pids(workdir: pathlib.Path, step: str) -> list[int]:
  """The Python processes of the chain's tasks running `step`."""
  pids = []
  for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
      argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
      continue
    if b"stages.study" in argv and f"--workdir={workdir}".encode() in argv and (
        f"--steps={step}".encode() in argv):
      pids.append(int(proc.name))
  return pids


def _training(workdir: pathlib.Path, stage: str) -> bool:
  """Whether a run of `stage` has a step checkpoint and no result yet (mid-training)."""
  return any(not (state.parent / "result.json").exists()
             for state in workdir.glob(f"runs/{stage}-*/training_state.npz"))


def _logs(workdir: pathlib.Path, job: str) -> str:
  return "\n".join(p.read_text() for p in sorted(workdir.glob(f"slurm/*/logs/{job}-*.out")))


@pytest.mark.slow
def test_the_smoke_study_on_slurm_survives_kills_and_requeues_and_equals_the_local_one(
    cluster, smoke_study, tmp_path):
  """The smoke study as a chain of array jobs, with --wait, while two faults land mid-training:
  SLURM requeues the running stage-2 tasks (`scontrol requeue`: SIGTERM, the run checkpoints,
  the task is requeued) and every stage-3 worker is killed with `kill -9` (each task requeues
  itself with `scontrol requeue`). The chain still ends; every run is in the table exactly
  once, with the same F1 (every measured column) as the local `stages.study --preset=smoke`."""
  from benchmarks import same_results

  workdir = tmp_path / "study"
  proc = _launch(workdir)
  requeued, killed, held = [], [], {}
  deadline = time.monotonic() + 900
  while proc.poll() is None:
    assert time.monotonic() < deadline, "the chain did not end in 15 minutes"
    _release_requeued(held)
    if not requeued and _training(workdir, "finetune"):
      chain = json.loads(next(workdir.glob("slurm/*/submitted.json")).read_text())
      running = [t for t, s in _squeue("-j", chain["jobs"]["finetune"]["id"], "-o", "%i %T")
                 if s == "RUNNING"]
      for task in running:
        subprocess.run(["scontrol", "requeue", task], check=True, capture_output=True)
      requeued += running
    if not killed and _training(workdir, "distill"):
      killed = _stage_pids(workdir, "distill")
      for pid in killed:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
  out = proc.stdout.read()
  assert proc.returncode == 0, out[-3000:]
  assert "every task of the chain finished" in out
  assert requeued and killed, (requeued, killed)

  finetune, distill = _logs(workdir, "finetune"), _logs(workdir, "distill")
  assert "stopped by SIGTERM after checkpointing the training run" in finetune, finetune[-3000:]
  assert "attempt 2" in finetune and "attempt 2" in distill
  assert "exit status 137: requeueing" in distill, distill[-3000:]
  assert "resuming from" in finetune + distill
  statuses = {p.name: p.read_text().strip() for p in workdir.glob("slurm/*/status/*")}
  assert statuses and set(statuses.values()) == {"0"}, statuses

  table = pd.read_parquet(workdir / "results.parquet")
  assert table["run_id"].is_unique
  local, _ = smoke_study
  assert same_results.main(["same_results", str(workdir), str(local)]) == 0


@pytest.mark.slow
def test_a_failing_task_cancels_its_dependants_and_wait_exits_non_zero(cluster, tmp_path):
  workdir = tmp_path / "study"
  workdir.mkdir()
  (workdir / "pretrain").write_text("a file where stage 1 writes its directory")
  proc = _launch(workdir, "--nobaseline", "--noreferences")
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 1, out[-3000:]
  assert "pretrain task 0: exit status 2" in out, out[-3000:]
  for job in ("finetune", "label", "distill", "report"):
    assert f"{job} task 0: did not finish" in out, out[-3000:]
  chain = json.loads(next(workdir.glob("slurm/*/submitted.json")).read_text())["jobs"]
  assert not _squeue("-j", ",".join(v["id"] for v in chain.values()))  # Nothing left pending.
  state = subprocess.run(["scontrol", "show", "job", chain["distill"]["id"]],
                         capture_output=True, text=True).stdout
  assert "JobState=CANCELLED" in state and "DependencyNeverSatisfied" in state, state
  assert not (workdir / "results.parquet").exists() or not len(
      pd.read_parquet(workdir / "results.parquet").query("stage == 'distill'"))


# ---- one model over several workers ------------------------------------------------------------------

def test_a_slurm_step_of_several_tasks_is_a_multi_worker_cluster():
  from simclr_distill.training import runtime

  env = {"SLURM_JOB_ID": "4321", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4",
         "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
  resolver = runtime.cluster_resolver(env)
  base = 15000 + 8 * (4321 % 5000)
  assert resolver.cluster_spec().as_dict() == {"worker": [
      f"gpu07:{base}", f"gpu07:{base + 1}", f"gpu08:{base}", f"gpu08:{base + 1}"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 3)
  assert runtime.cluster_resolver({**env, "TF_CONFIG": "{}"}) is None  # TF_CONFIG wins.
  assert runtime.cluster_resolver({}) is None
  with pytest.raises(ValueError, match="launch the command with `srun`"):
    runtime.cluster_resolver({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"})


@pytest.mark.slow
def test_srun_trains_one_run_over_two_workers_with_the_stage_command(cluster, tmp_path):
  """`srun` of a stage with --strategy=multi_worker: the two tasks form one cluster (from
  SLURM's variables), train the run together (2 replicas) and only the chief writes its row."""
  import socket

  try:
    socket.gethostbyname(socket.gethostname())
  except OSError:
    pytest.skip(f"this machine's name {socket.gethostname()!r} does not resolve: the workers "
                "find each other by the node names SLURM gives")
  script = tmp_path / "job.sh"
  script.write_text(f"""#!/bin/bash
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --output={tmp_path}/out.txt
export TF_CPP_MIN_LOG_LEVEL=3 CUDA_VISIBLE_DEVICES=
srun {sys.executable} -m stages.baseline --preset=smoke --workdir={tmp_path}/w \\
    --only=arch=mlp,split_percent=10 --strategy=multi_worker --collective_timeout=120 --epochs=2
""")
  proc = subprocess.run(["sbatch", "--wait", f"--chdir={ROOT}", str(script)], capture_output=True,
                        text=True, timeout=600)
  out = (tmp_path / "out.txt").read_text()
  assert proc.returncode == 0, out[-3000:]
  assert len(re.findall(r"\[baseline 1/1\] baseline-mlp-basic-10-\S+: ok", out)) == 2, out[-3000:]
  table = pd.read_parquet(tmp_path / "w" / "results.parquet")
  assert len(table) == 1 and int(table["replicas"].iloc[0]) == 2
