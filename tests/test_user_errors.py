"""A careless user's commands: each bad input ends with exit status 2 and a message naming the
path or value and what to do, never a traceback, and loses nothing already finished.

Every test runs the real stage command in a subprocess. Flag errors fail while parsing, before
TensorFlow is imported (a fraction of a second); the rest fail before any training.
"""

import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile

import pytest

from simclr_distill import fileio, results, study_config
from simclr_distill import config as config_lib
from simclr_distill.data import digits

pytestmark = pytest.mark.faults

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("prepare", "pretrain", "finetune", "label", "distill", "baseline", "study", "results",
          "dashboard")


def _stage(module: str, *args: str, cwd: pathlib.Path = ROOT, timeout: float = 180):
  """Runs `python -m <module> <args>`; returns (exit status, stdout and stderr together)."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
         "PYTHONPATH": str(ROOT)}
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
  return proc.returncode, proc.stdout


def _refused(module: str, *args: str, expected: str | tuple[str, ...], **kwargs) -> str:
  """Runs a command that must be refused: exit status 2, each `expected` text in its output,
  no traceback. Returns the output."""
  code, out = _stage(module, *args, **kwargs)
  assert code == 2, f"exit status {code}:\n{out[-3000:]}"
  assert "Traceback" not in out, out[-3000:]
  for text in (expected,) if isinstance(expected, str) else expected:
    assert text in out, f"{text!r} not in:\n{out[-3000:]}"
  return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("user_errors") / "data", num_shards=2,
                               percents=(100,))


def _copy(data, tmp_path) -> pathlib.Path:
  import shutil
  return pathlib.Path(shutil.copytree(data.root, tmp_path / "data"))


def _finished_workdir(tmp_path) -> tuple[pathlib.Path, bytes]:
  """A workdir holding one finished run: (workdir, the bytes of its result.json)."""
  workdir = tmp_path / "work"
  results.write_row(workdir, {"run_id": "finished", "stage": "baseline", "status": "ok", "f1": 0.5})
  return workdir, results.row_path(workdir, "finished").read_bytes()


def _intact(workdir: pathlib.Path, row: bytes) -> None:
  """The finished run is untouched and no other run folder appeared."""
  assert results.row_path(workdir, "finished").read_bytes() == row
  assert [p.name for p in (workdir / results.RUNS).iterdir()] == ["finished"]


SMOKE = ("--preset=smoke", "--split_percents=100")


# ---- 1. Exit statuses: flags that do not parse ----------------------------------------------------

@pytest.mark.parametrize("module,flag,expected", [
    ("stages.distill", "--batch_size=abc", "--batch_size=abc"),
    ("stages.baseline", "--bogus=1", "Unknown command line flag 'bogus'"),
    ("stages.study", "--preset=bogus", "bogus"),
    ("stages.baseline", "--strategy=bogus", "bogus"),
    ("stages.dashboard", "--port=eighty", "--port=eighty"),
    ("stages.prepare", "--source=archive", "--output_dir must have a value"),  # A required flag.
])
def test_flags_that_do_not_parse_exit_2_naming_the_flag(tmp_path, module, flag, expected):
  out = _refused(module, flag, cwd=tmp_path, expected=(expected, "--help"))
  assert out.startswith("error: ") and "FATAL" not in out
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", STAGES)
def test_help_still_works_and_exits_0(name):
  code, out = _stage(f"stages.{name}", "--help")
  assert code == 0 and "Traceback" not in out, out[-2000:]
  assert f"python -m stages.{name}" in out  # The module docstring's run command.


def test_config_values_that_break_an_invariant_still_exit_2(tmp_path):
  _refused("stages.baseline", f"--workdir={tmp_path}", "--preset=smoke", "--archs=NoSuchNet",
           expected="NoSuchNet")
  assert not (tmp_path / results.RUNS).exists()


# ---- 2. Positional arguments --------------------------------------------------------------------

@pytest.mark.parametrize("name", STAGES)
def test_a_flag_without_its_dashes_is_refused_before_anything_runs(tmp_path, name):
  # Run from an empty directory: the default workdirs (results/...) would appear in it.
  args = ["preset=smoke", f"workdir={tmp_path / 'w'}"]
  if name == "prepare":
    args.insert(0, f"--output_dir={tmp_path / 'prepared'}")
  has_preset = name not in ("prepare", "results", "dashboard")
  _refused(f"stages.{name}", *args, cwd=tmp_path, expected=(
      "unexpected argument 'preset=smoke'",
      "flags start with --, e.g. --preset=smoke" if has_preset else "takes flags only"))
  assert list(tmp_path.iterdir()) == []


# ---- 3. Non-finite numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("module,args,expected", [
    ("stages.distill", ("--learning_rate=inf",), "train.learning_rates holds inf; each must be > 0 and finite"),
    ("stages.distill", ("--loss=soft_kl", "--temperature=1,inf"), "loss.temperature=inf must be > 0 and finite"),
    ("stages.distill", ("--teacher_mode=consistent", "--mixup=inf"), "--mixup=inf must be a finite number"),
    ("stages.pretrain", ("--checkpoint_minutes=inf",), "--checkpoint_minutes=inf must be a finite number"),
    ("stages.study", ("--finetune_learning_rate=nan",), "--finetune_learning_rate=nan must be a finite number"),
])
def test_non_finite_numbers_are_refused(tmp_path, module, args, expected):
  workdir, row = _finished_workdir(tmp_path)
  _refused(module, f"--workdir={workdir}", *SMOKE[:1], *args, expected=expected)
  _intact(workdir, row)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("build,expected", [
    (lambda: config_lib.TrainConfig(adam_learning_rate=INF), "adam_learning_rate=inf must be > 0 and finite"),
    (lambda: config_lib.TrainConfig(sgd_learning_rate=NAN), "sgd_learning_rate=nan must be > 0 and finite"),
    (lambda: config_lib.TrainConfig(learning_rates=(1e-3, INF)), "holds inf; each must be > 0 and finite"),
    (lambda: config_lib.TrainConfig(checkpoint_minutes=INF), "checkpoint_minutes=inf must be >= 0 and finite"),
    (lambda: config_lib.LossConfig(kind="soft_kl", temperature=INF), "temperature=inf must be > 0 and finite"),
    (lambda: config_lib.LossConfig(alpha=INF), "alpha=inf must be in [0, 1]"),
    (lambda: config_lib.TeacherConfig(modes=("consistent",), mixup=INF), "mixup=inf must be >= 0 and finite"),
    (lambda: config_lib.StudentConfig(dropout=INF), "dropout=inf must be in [0, 1)"),
    (lambda: study_config.PretrainConfig(learning_rate=INF), "learning_rate=inf must be > 0 and finite"),
    (lambda: study_config.PretrainConfig(temperature=NAN), "temperature=nan must be > 0 and finite"),
    (lambda: study_config.FinetuneConfig(learning_rate=INF), "learning_rate=inf must be > 0 and finite"),
    (lambda: study_config.FinetuneConfig(dropout=NAN), "dropout=nan must be in [0, 1)"),
])
def test_every_float_setting_refuses_inf_and_nan(build, expected):
  with pytest.raises(ValueError, match=re.escape(expected)):
    build()


# ---- 4. File-system errors ----------------------------------------------------------------------

def _unwritable_dir(tmp_path) -> pathlib.Path:
  """A directory this process may not write into: a read-only one for a normal user; for root,
  who ignores permission bits, a sysfs directory. Skips where there is none."""
  readonly = tmp_path / "readonly"
  readonly.mkdir()
  readonly.chmod(0o555)
  for directory in (readonly, pathlib.Path("/sys/fs")):
    try:
      os.rmdir(tempfile.mkdtemp(dir=directory))
    except OSError:
      return directory
  readonly.chmod(0o755)
  pytest.skip("no directory here refuses writes (running as root, and /sys is writable)")


def test_an_output_directory_that_is_a_file_or_under_one_is_refused(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("keep me\n")
  _refused("stages.distill", f"--workdir={blocker}", *SMOKE, expected=(
      f"cannot write {blocker}: it is a file", "give another --workdir"))
  _refused("stages.pretrain", f"--workdir={blocker / 'sub'}", "--preset=smoke", expected=(
      f"cannot write {blocker / 'sub'}: {blocker} is a file, not a directory"))
  _refused("stages.prepare", f"--output_dir={blocker}", f"--archive_dir={tmp_path}", expected=(
      f"cannot write {blocker}: it is a file", "--output_dir"))
  assert blocker.read_text() == "keep me\n"


def test_an_unwritable_workdir_is_refused(tmp_path):
  directory = _unwritable_dir(tmp_path)
  workdir = directory / "simclr_distill_work"
  try:
    _refused("stages.baseline", f"--workdir={workdir}", *SMOKE, expected=(
        f"cannot write {workdir}:", f"make {directory} writable, or give another --workdir"))
  finally:
    if directory.is_relative_to(tmp_path):
      directory.chmod(0o755)
  assert not workdir.exists()


def test_an_export_or_output_file_that_is_a_directory_is_refused(tmp_path):
  table = tmp_path / "table.csv"
  table.write_text("run_id,stage,f1\nr1,distill,0.5\n")
  target = tmp_path / "out"
  target.mkdir()
  (target / "earlier.html").write_text("an earlier report")
  _refused("stages.dashboard", f"--workdirs={table}", f"--export={target}", expected=(
      f"cannot write {target}: it is a directory", f"e.g. {target / 'report.html'}"))
  _refused("stages.results", f"--workdirs={table}", "--columns=run_id,f1", f"--output={target}",
           expected=(f"cannot write {target}: it is a directory", "--output"))
  _refused("stages.results", f"--workdirs={table}", "--columns=run_id,f1",
           f"--output={table / 'x.csv'}", expected=f"{table} is a file, not a directory")
  assert [p.name for p in target.iterdir()] == ["earlier.html"]
  # A missing parent is no error: it is created.
  code, out = _stage("stages.results", f"--workdirs={table}", "--columns=run_id,f1",
                     f"--output={tmp_path / 'new' / 'dir' / 'x.csv'}")
  assert code == 0 and (tmp_path / "new" / "dir" / "x.csv").read_text().count("r1") == 1, out


def test_a_path_error_found_late_is_a_message_not_a_traceback(tmp_path):
  workdir, row = _finished_workdir(tmp_path)
  (workdir / "data").write_text("")  # Where the digits demo data would go.
  _refused("stages.distill", f"--workdir={workdir}", *SMOKE, expected=(
      f"error: cannot read or write {workdir / 'data'}", "Not a directory"))
  _intact(workdir, row)


# ---- 5. Malformed inputs ------------------------------------------------------------------------

@pytest.mark.parametrize("content,expected", [
    ("", "is empty, not JSON (0 bytes)"),
    ('{"format": ', "is not valid JSON (Expecting value"),
    ("[1, 2]", "holds a JSON list, not a manifest"),
    ("\x89PNG\x00", "is not valid JSON (not UTF-8 text"),
])
def test_a_damaged_data_manifest_is_named(data, tmp_path, content, expected):
  root = _copy(data, tmp_path)
  (root / "dataset.json").write_bytes(content.encode("latin-1"))
  workdir, row = _finished_workdir(tmp_path)
  _refused("stages.baseline", f"--workdir={workdir}", f"--data_dir={root}", *SMOKE, expected=(
      f"{root / 'dataset.json'} {expected}", "stages.prepare"))
  _intact(workdir, row)


def test_a_junk_teacher_zoo_manifest_is_named(data, tmp_path):
  zoo = tmp_path / "zoo"
  zoo.mkdir()
  (zoo / "manifest.csv").write_text('teacher_id,labeling\n"unclosed,basic\n')
  workdir, row = _finished_workdir(tmp_path)
  _refused("stages.distill", f"--workdir={workdir}", f"--data_dir={data.root}", *SMOKE,
           f"--teacher_zoo={zoo}", expected=(
               f"{zoo / 'manifest.csv'} is not a readable CSV table", "EOF inside string"))
  _intact(workdir, row)


def test_junk_results_tables_are_named(tmp_path):
  empty, quoted, binary = tmp_path / "empty.csv", tmp_path / "quoted.csv", tmp_path / "binary.csv"
  empty.write_text("")
  quoted.write_text('run_id,f1\n"r1,0.5\n')
  binary.write_bytes(b"\xff\xfe\x00garbage")
  _refused("stages.results", f"--workdirs={empty}",
           expected=f"{empty} is not a readable CSV table (No columns to parse from file)")
  _refused("stages.results", f"--workdirs={quoted},{binary}",
           expected=f"{quoted} is not a readable CSV table (Error tokenizing data")
  _refused("stages.results", f"--workdirs={binary}", expected=f"{binary} is not a readable CSV")


def test_a_split_list_that_is_not_text_is_named(data, tmp_path):
  root = _copy(data, tmp_path)
  (root / "splits" / "basic" / "val_100").write_bytes(b"\x00\xff\xfe binary")
  _refused("stages.baseline", f"--workdir={tmp_path / 'work'}", f"--data_dir={root}", *SMOKE,
           expected=f"{root / 'splits' / 'basic' / 'val_100'} is not a split list (not UTF-8")
  assert not (tmp_path / "work" / results.RUNS).exists()


# ---- 6. Split lists naming ids the records lack -----------------------------------------------

def test_a_split_list_naming_absent_ids_is_refused_before_any_run(data, tmp_path):
  root = _copy(data, tmp_path)
  train = root / "splits" / "basic" / "train_100"
  train.write_text(train.read_text() + "ghost-1\nghost-2\nghost-3\nghost-4\n")
  workdir, row = _finished_workdir(tmp_path)
  _refused("stages.baseline", f"--workdir={workdir}", f"--data_dir={root}", *SMOKE, expected=(
      f"{train} names 4 example id(s) absent from the records of {root}",
      "(e.g. ghost-1, ghost-2, ghost-3)", "stages.prepare", "Fix the list"))
  _intact(workdir, row)


# ---- 7. The dashboard's address -----------------------------------------------------------------

def test_an_address_the_dashboard_cannot_listen_on_is_refused(tmp_path):
  table = tmp_path / "table.csv"
  table.write_text("run_id,stage,f1\nr1,distill,0.5\n")
  _refused("stages.dashboard", f"--workdirs={table}", "--host=no-such-host.invalid",
           expected=("--host=no-such-host.invalid does not resolve", "127.0.0.1"))
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    _refused("stages.dashboard", f"--workdirs={table}", "--host=127.0.0.1", f"--port={port}",
             expected=(f"cannot listen on 127.0.0.1:{port}", "give another --port"))


# ---- 8. Preparation with every patch rejected ---------------------------------------------------

def test_preparing_an_archive_of_only_bad_patches_writes_the_rejects_it_points_at(tmp_path):
  archive = tmp_path / "archive"
  for name in ("S2A_patch_1", "S2A_patch_2"):
    (archive / name).mkdir(parents=True)
  (archive / "S2A_patch_2" / "S2A_patch_2_B04.tif").write_bytes(b"not a tiff")
  output = tmp_path / "prepared"
  _refused("stages.prepare", f"--archive_dir={archive}", f"--output_dir={output}", "--workers=1",
           expected=("all 2 were rejected", f"see {output / 'rejects.csv'}"))
  lines = (output / "rejects.csv").read_text().splitlines()
  assert lines[0] == "patch,reason" and len(lines) == 3
  assert lines[1].startswith("S2A_patch_1,") and "missing band B04" in lines[1]
  assert lines[2].startswith("S2A_patch_2,") and "unreadable band B04" in lines[2]
  assert not (output / "dataset.json").exists()


# ---- the helpers the stages share ---------------------------------------------------------------

def test_check_writable_creates_nothing(tmp_path):
  fileio.check_writable(tmp_path / "a" / "b")
  fileio.check_writable(tmp_path / "a" / "report.html", directory=False)
  assert list(tmp_path.iterdir()) == []
