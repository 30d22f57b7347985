"""Are two workdirs' results the same? Row by row, every measured column, bit for bit.

  python -m benchmarks.same_results WORKDIR_A WORKDIR_B

For a change that must not change results (a refactoring): run the same command before and
after it into two workdirs, then compare them. Rows are matched by run id, except stage-2
teachers built on a pretrained encoder: their ids hash the encoder's `.keras` file, which holds
Keras' save time and Python object ids, so they differ between any two fresh pretrainings even
when the weights are identical; every row is therefore matched by its settings (KEY). Exit
status 0 when every compared column is equal, 1 when any differs.
"""

import sys

import pandas as pd

KEY = ["stage", "encoder", "teacher_id", "labeling", "split_percent", "arch", "student_optimizer",
       "seed", "init", "loss_kind", "temperature", "teacher_mode", "method"]
# What differs between two identical runs: timings, paths, the code's version, the data's
# fingerprint, and run ids (see above).
SKIP = {"wall_seconds", "finished_at", "images_per_second", "checkpoint", "code_version",
        "run_id", "dataset"}


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__, file=sys.stderr)
    return 2
  a, b = (pd.read_parquet(f"{w}/results.parquet") for w in argv[1:3])
  print(f"rows: {len(a)} vs {len(b)}; identical run ids: {sorted(a.run_id) == sorted(b.run_id)} "
        f"({len(set(a.run_id) & set(b.run_id))} shared)")
  a, b = (t.astype({k: str for k in KEY}).set_index(KEY).sort_index() for t in (a, b))
  if not (a.index.is_unique and b.index.is_unique and a.index.equals(b.index)):
    print("the two workdirs hold different runs")
    return 1
  compared = [c for c in a.columns if c not in SKIP]
  differ = [c for c in compared
            if not ((a[c] == b[c]) | (a[c].isna() & b[c].isna())).all()]
  print(f"columns compared: {len(compared)} | f1, tp, fp, tn, fn bit-equal: "
        f"{not {'f1', 'tp', 'fp', 'tn', 'fn'} & set(differ)}")
  print(f"columns that differ: {', '.join(differ) or 'none'}")
  return 1 if differ else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
