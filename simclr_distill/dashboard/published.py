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
reproduction: on the same axes only where the two share a (stage, encoder, labelling, split,
architecture) key (`overlay`), in a view of its own otherwise.
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
  if stage in ("distill", "finetune"):  # A teacher's row and its students' share its id.
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


def keys(frame: pd.DataFrame) -> pd.Series:
  """Each row's (stage, encoder, labelling, split, architecture) as one text, "a | b | ..."."""
  parts = []
  for key in KEYS:
    values = frame[key] if key in frame else pd.Series("", index=frame.index)
    if key == "split_percent":  # 10, 10.0 and "10" are one split.
      number = pd.to_numeric(values, errors="coerce")
      values = number.map(lambda v: f"{v:g}", na_action="ignore").where(number.notna(), values)
    parts.append(values.astype(object).where(values.notna(), "").astype(str))
  out = parts[0]
  for part in parts[1:]:
    out = out + " | " + part
  return out


def overlay(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
  """Splits a dashboard's rows between the shared axes and the published study's own view.

  Returns:
    (shared, own, note). `shared` holds the reproduced rows and those published rows whose
    key (`KEYS`) some reproduced row has too: comparable, so drawn beside the reproduction;
    `own` every published row, for the study's own figures (empty when nothing was reproduced:
    the study is then on the shared axes itself); `note` says why the study is or is not
    overlaid ("" without both sides).
  """
  is_published = frame["source"] == SOURCE if "source" in frame else pd.Series(False, index=frame.index)
  mine, theirs = frame[~is_published], frame[is_published]
  if mine.empty or theirs.empty:
    return frame, frame.iloc[:0], ""
  their_keys = keys(theirs)
  matched = their_keys.isin(set(keys(mine)))
  groups, shared_groups = their_keys.nunique(), their_keys[matched].nunique()
  if not shared_groups:
    def encoders(rows):
      values = sorted({str(v) for v in rows["encoder"].dropna() if str(v)}) if "encoder" in rows else []
      return ", ".join(values) or "none"
    note = (f"The published study ({len(theirs)} rows) is not drawn on these axes: none of its "
            f"{groups} (stage, encoder, labelling, split, arch) groups occurs among the "
            f"{len(mine)} reproduced rows (encoders {encoders(mine)}; the study's "
            f"{encoders(theirs)}), so a line of it beside them would compare different "
            "experiments. It has its own figures below.")
  else:
    note = (f"{shared_groups} of the published study's {groups} (stage, encoder, labelling, "
            f"split, arch) groups occur among the reproduced rows: their {int(matched.sum())} "
            "rows are drawn dashed beside the reproduction ([published]) and compared in "
            "'Published vs reproduced'; the whole study has its own figures below.")
  return pd.concat([mine, theirs[matched]]).sort_index(), theirs, note
