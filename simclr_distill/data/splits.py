"""The study's balanced label splits: generation, reading, writing and the unlabelled pool.

Procedure (SimCLR-S2): all positives plus an equal number of random negatives form a balanced
pool; 70% of it is the training pool and the rest is halved into validation and test. Label
splits of 1..100 percent are nested subsets of the training and validation pools. Here every
cut is stratified by label and seeded, so the same seed always gives the same lists.
"""

from __future__ import annotations

import pathlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from simclr_distill import fileio

TEST = "test"


def split_name(kind: str, percent: int) -> str:
  """"train_10", "val_3", ...: the study's file names."""
  return f"{kind}_{percent}"


def _take(ids_by_class: Sequence[np.ndarray], fraction: float, min_per_class: int) -> list[str]:
  out: list[str] = []
  for ids in ids_by_class:
    n = min(len(ids), max(min_per_class, int(round(fraction * len(ids)))))
    out.extend(ids[:n].tolist())
  return sorted(out)


def make_balanced_splits(
    ids: Sequence[str],
    labels: Sequence[int],
    *,
    percents: Iterable[int],
    seed: int = 0,
    train_fraction: float = 0.7,
    min_per_class: int = 1,
) -> dict[str, list[str]]:
  """Builds the study's splits for one binary labelling scheme.

  Args:
    ids: example ids (unique).
    labels: 0/1 label per id.
    percents: label-split sizes in percent of the train and val pools.
    seed: seeds every random choice.
    train_fraction: share of the balanced pool used for training.
    min_per_class: smallest number of examples of each class in a subset, so a 1% split of a
      small data set still holds both classes.

  Returns:
    {"test": [...], "train_P": [...], "val_P": [...]} for every P, each a sorted id list;
    subsets are nested (train_1 is inside train_3 ... inside train_100).

  Raises:
    ValueError: if ids repeat, lengths differ, labels are not 0/1 or a class is missing.
  """
  ids = np.asarray(ids, dtype=object)
  labels = np.asarray(labels)
  if len(ids) != len(labels):
    raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
  if len(set(ids.tolist())) != len(ids):
    raise ValueError("example ids repeat; every example needs a unique id")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError("labels must be 0 or 1 for balanced splits")
  rng = np.random.default_rng(seed)
  positives = ids[labels == 1]
  negatives = ids[labels == 0]
  if len(positives) == 0 or len(negatives) == 0:
    raise ValueError(f"need both classes; got {len(positives)} positives, {len(negatives)} negatives")
  n = min(len(positives), len(negatives))
  by_class = [rng.permutation(positives)[:n], rng.permutation(negatives)[:n]]
  n_train = int(round(train_fraction * n))
  n_val = (n - n_train) // 2
  train = [c[:n_train] for c in by_class]
  val = [c[n_train:n_train + n_val] for c in by_class]
  splits = {TEST: sorted(np.concatenate([c[n_train + n_val:] for c in by_class]).tolist())}
  for p in sorted(set(percents)):
    splits[split_name("train", p)] = _take(train, p / 100, min_per_class)
    splits[split_name("val", p)] = _take(val, p / 100, min_per_class)
  return splits


def write_split_lists(directory: str | pathlib.Path, splits: Mapping[str, Sequence[str]]) -> None:
  """Writes one file per split, one id per line (the study's format), atomically."""
  directory = pathlib.Path(directory)
  for name, ids in splits.items():
    fileio.write_text(directory / name, "".join(f"{i}\n" for i in ids))


def read_split_lists(directory: str | pathlib.Path) -> dict[str, list[str]]:
  """Reads every `train_*`, `val_*` and `test` file of a split directory.

  Raises:
    FileNotFoundError: if the directory or its test list is missing.
    ValueError: for a list that is not text.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"no split directory at {directory}")
  splits = {}
  for path in sorted(directory.iterdir()):
    if path.name == TEST or path.name.startswith(("train_", "val_")):
      try:
        text = path.read_text()
      except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a split list (not UTF-8 text: {e.reason} at byte "
                         f"{e.start}); a list holds one example id per line") from None
      splits[path.name] = [line.strip() for line in text.splitlines() if line.strip()]
  if TEST not in splits:
    raise FileNotFoundError(f"{directory} has no '{TEST}' list")
  return splits


def unlabelled_pool(all_ids: Iterable[str], splits: Mapping[str, Sequence[str]],
                    protocol: str, other_schemes: Iterable[Mapping[str, Sequence[str]]] = ()
                    ) -> list[str]:
  """The ids a student may learn from without labels.

  "holdout": every example except the test and validation lists of this scheme and of
  `other_schemes` (the study's pool excluded the union of both schemes' test sets, so an
  encoder or student shared across schemes never sees either test set), so students never
  see what they are selected or scored on. "original": the study's choice, the scheme's test
  list itself (students trained and scored on the same examples).
  """
  if protocol == "original":
    return list(splits[TEST])
  excluded: set[str] = set()
  for lists in (splits, *other_schemes):
    excluded.update(i for name, ids in lists.items()
                    if name == TEST or name.startswith("val_") for i in ids)
  return [i for i in all_ids if i not in excluded]

