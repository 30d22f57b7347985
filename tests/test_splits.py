import numpy as np
import pytest

from simclr_distill.data import splits as S

PERCENTS = (1, 3, 10, 25, 50, 100)


def _data(n=2000, positives=150, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.zeros(n, int)
  labels[rng.choice(n, positives, replace=False)] = 1
  return [f"ex-{i}" for i in range(n)], labels


def test_study_procedure_balanced_pool_70_15_15_nested_and_seeded():
  ids, labels = _data()
  label_of = dict(zip(ids, labels))
  splits = S.make_balanced_splits(ids, labels, percents=PERCENTS, seed=3)
  pool = set(splits["test"]) | set(splits["train_100"]) | set(splits["val_100"])
  assert len(pool) == 300  # all 150 positives plus 150 negatives
  assert sum(label_of[i] for i in pool) == 150
  assert len(splits["train_100"]) == 210 and len(splits["val_100"]) == 44 and len(splits["test"]) == 46
  assert not set(splits["test"]) & set(splits["train_100"])
  assert not set(splits["val_100"]) & (set(splits["train_100"]) | set(splits["test"]))
  for kind in ("train", "val"):
    for small, big in zip(PERCENTS, PERCENTS[1:]):
      assert set(splits[f"{kind}_{small}"]) <= set(splits[f"{kind}_{big}"])
    for p in PERCENTS:  # stratified: each subset is balanced
      sub = splits[f"{kind}_{p}"]
      assert sum(label_of[i] for i in sub) * 2 == len(sub)
  assert len(splits["train_10"]) == 20  # round(0.1 * 105) = 10 per class (half to even)
  assert splits == S.make_balanced_splits(ids, labels, percents=PERCENTS, seed=3)
  assert splits != S.make_balanced_splits(ids, labels, percents=PERCENTS, seed=4)


def test_min_per_class_keeps_tiny_splits_usable():
  ids, labels = _data(n=300, positives=20)
  splits = S.make_balanced_splits(ids, labels, percents=(1,), min_per_class=2)
  label_of = dict(zip(ids, labels))
  assert sorted(label_of[i] for i in splits["train_1"]) == [0, 0, 1, 1]


def test_bad_inputs():
  with pytest.raises(ValueError, match="ids repeat"):
    S.make_balanced_splits(["a", "a"], [0, 1], percents=(100,))
  with pytest.raises(ValueError, match="need both classes"):
    S.make_balanced_splits(["a", "b"], [0, 0], percents=(100,))
  with pytest.raises(ValueError, match="0 or 1"):
    S.make_balanced_splits(["a", "b"], [0, 2], percents=(100,))


def test_write_read_and_pools(tmp_path):
  ids, labels = _data(n=400, positives=50)
  splits = S.make_balanced_splits(ids, labels, percents=(10, 100))
  S.write_split_lists(tmp_path / "basic", splits)
  assert S.read_split_lists(tmp_path / "basic") == splits
  holdout = S.unlabelled_pool(ids, splits, "holdout")
  assert not set(holdout) & (set(splits["test"]) | set(splits["val_100"]))
  assert set(splits["train_100"]) <= set(holdout)
  assert len(holdout) == 400 - len(splits["test"]) - len(splits["val_100"])
  assert S.unlabelled_pool(ids, splits, "original") == splits["test"]
  with pytest.raises(FileNotFoundError, match="no split directory"):
    S.read_split_lists(tmp_path / "missing")


# The study's published sizes (STUDY.md), read from ../shared in place.
PUBLISHED = {
    "balanced_splits": {"train": (190, 570, 1902, 4756, 9512, 19024),
                        "val": (40, 122, 406, 1018, 2038, 3696), "test": 4076},
    "balanced_splits_expanded": {"train": (512, 1540, 5136, 12840, 25680, 51360),
                                 "val": (110, 330, 1100, 2750, 5502, 8288), "test": 11006},
}


@pytest.mark.parametrize("folder", sorted(PUBLISHED))
def test_importing_the_study_split_lists_gives_the_published_sizes(reference_dir, folder):
  splits = S.read_split_lists(reference_dir / folder)
  expected = PUBLISHED[folder]
  assert len(splits["test"]) == expected["test"]
  for kind in ("train", "val"):
    assert tuple(len(splits[f"{kind}_{p}"]) for p in PERCENTS) == expected[kind]


def test_holdout_pool_excludes_every_schemes_test_and_val_lists():
  ids, labels = _data(n=400, positives=50)
  basic = S.make_balanced_splits(ids, labels, percents=(10, 100), seed=0)
  expanded = S.make_balanced_splits(ids, (np.arange(400) % 3 == 0).astype(int), percents=(10, 100), seed=1)
  pool = set(S.unlabelled_pool(ids, basic, "holdout", [expanded]))
  for lists in (basic, expanded):
    assert not pool & (set(lists["test"]) | set(lists["val_100"]) | set(lists["val_10"]))
  assert pool == set(ids) - set(basic["test"]) - set(basic["val_100"]) - set(expanded["test"]) - set(expanded["val_100"])
