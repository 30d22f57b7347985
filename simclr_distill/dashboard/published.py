"""The study's published result tables, read into this package's results schema.

The study's repository ships three CSVs: `distill_results.csv` (180 students), `finetune_results.csv`
(36 teachers) and `supervised_results.csv` (120 baselines). Their columns differ from each other
and from `results.COLUMNS`; this module maps them:

  * labelling "balanced" is the basic scheme; supervised rows name their scheme in
    `model_type` (`supervised_baseline[_pretrained][_ex]`, `_ex` = expanded) and their
    initialisation there too (`_pretrained` = ImageNet);
  * `model` (BEN, CA_adam, CA_sgd) is the pretrained encoder; its optimizer is in its name;
  * teachers are ResNet152; the study's protocol is "original" for students (trained and
    scored on the test list) and "holdout" for teachers and baselines.

Every row gets `source="published"`, so a dashboard or a notebook can put the study beside a
reproduction.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import pandas as pd

from simclr_distill import results

SOURCE = "published"
FILES = {"distill_results.csv": "distill", "finetune_results.csv": "finetune",
         "supervised_results.csv": "baseline"}
_METRICS = ("loss", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "auc", "f1", "f0.5")


def _encoder_optimizer(encoder: str) -> str:
  return {"BEN": "adam", "CA_adam": "adam", "CA_sgd": "sgd"}.get(encoder, "")


def read_published(path: str | pathlib.Path, stage: str | None = None) -> pd.DataFrame:
  """Reads one of the study's CSVs (the stage is read from its file name or given).

  Raises:
    ValueError: for a file whose columns are none of the study's three layouts.
  """
  path = pathlib.Path(path)
  raw = pd.read_csv(path)
  raw = raw.drop(columns=[c for c in raw.columns if c.startswith("Unnamed")])
  stage = stage or FILES.get(path.name)
  missing = [m for m in ("split_percent", "f1") if m not in raw.columns]
  if missing or stage is None:
    raise ValueError(f"{path} is not one of the study's result tables ({', '.join(FILES)}): "
                     f"{'missing column(s) ' + ', '.join(missing) if missing else 'unknown name'}; "
                     "pass its stage (distill, finetune or baseline)")
  frame = pd.DataFrame({m: pd.to_numeric(raw[m], errors="coerce") for m in _METRICS if m in raw})
  frame["split_percent"] = raw["split_percent"].astype(int)
  if stage == "baseline":
    kind = raw.get("model_type", pd.Series([""] * len(raw))).astype(str)
    frame["labeling"] = kind.str.endswith("_ex").map({True: "expanded", False: "basic"})
    frame["init"] = kind.str.contains("pretrained").map({True: "imagenet", False: "scratch"})
    frame["arch"] = raw.get("architecture", raw.get("arch"))
    frame["model"] = ""
  else:
    frame["labeling"] = raw["labeling"].replace({"balanced": "basic"})
    frame["model"] = raw["model"]
    frame["arch"] = raw["arch"] if "arch" in raw else "ResNet152"
    frame["init"] = "scratch" if stage == "distill" else "simclr"
  frame["stage"] = stage
  frame["encoder"] = frame["model"]
  frame["encoder_optimizer"] = frame["model"].map(_encoder_optimizer)
  frame["protocol"] = "original" if stage == "distill" else "holdout"
  frame["loss_kind"] = "hard" if stage == "distill" else "supervised"
  frame["student_optimizer"] = "adam"
  frame["status"] = "ok"
  frame["task"] = "binary"
  frame["seed"] = 0
  frame["teacher_id"] = ""
  if stage == "distill":
    frame["teacher_id"] = frame["model"] + "-" + frame["labeling"] + "-" + frame["split_percent"].astype(str)
  frame["run_id"] = [f"published-{stage}-{i:03d}" for i in range(len(frame))]
  frame["dataset"] = "BigEarthNet-S2 (published)"
  out = frame.reindex(columns=list(results.COLUMNS))
  out["source"] = SOURCE
  return out


def load_published(paths: Sequence[str | pathlib.Path]) -> pd.DataFrame:
  """Reads the study's CSVs from files or directories (every known file name inside)."""
  frames = []
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      found = [path / name for name in FILES if (path / name).is_file()]
      if not found:
        raise FileNotFoundError(f"{path} holds none of the study's tables ({', '.join(FILES)})")
      frames.extend(read_published(f) for f in found)
    elif path.is_file():
      frames.append(read_published(path))
    else:
      raise FileNotFoundError(f"no published results at {path}")
  return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
      columns=[*results.COLUMNS, "source"])


KEYS = ("stage", "encoder", "labeling", "split_percent", "arch")


def compare(published: pd.DataFrame, reproduced: pd.DataFrame, metric: str = "f1") -> pd.DataFrame:
  """Published vs reproduced `metric` per (stage, encoder, labelling, split, architecture):
  the mean of each side, the reproduced spread and count, and the difference (reproduced -
  published). Keys present on one side only keep NaN on the other."""
  def side(frame, name):
    ok = frame[frame["status"].fillna("ok") == "ok"].copy()
    ok[metric] = pd.to_numeric(ok[metric], errors="coerce")
    for key in KEYS:
      ok[key] = ok[key].fillna("").astype(str)
    grouped = ok.groupby(list(KEYS))[metric].agg(["mean", "std", "count"])
    return grouped.add_prefix(f"{name}_")

  table = side(published, "published").join(side(reproduced, "reproduced"), how="outer")
  table["difference"] = table["reproduced_mean"] - table["published_mean"]
  return table.reset_index()
