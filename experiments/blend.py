r"""Blends finished runs on one split, with weights fitted on validation.

  python -m experiments.movielens --variant=autorec --workdir=runs/item
  python -m experiments.movielens --variant=autorec --orientation=user \
      --l2_weight=300 --workdir=runs/user
  python -m experiments.blend --runs=runs/item,runs/user --workdir=runs/blend

Prints each run's weight and figures and the blend's; ``blend.json`` in
``--workdir`` keeps them.
"""

from __future__ import annotations

import sys

from absl import app, flags

from aejax import blend, report
from aejax.data import sources

_RUNS = flags.DEFINE_list("runs", None, "Workdirs of finished runs.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where blend.json goes.")
_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "The --data_dir the runs were trained with, if any."
)
flags.mark_flags_as_required(["runs", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    out = blend.blend(_RUNS.value, _WORKDIR.value, data_dir=_DATA_DIR.value)
  except (ValueError, FileNotFoundError) as error:  # DataError included
    print(f"error: {error}", file=sys.stderr)
    return 2
  except sources.FetchError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1

  keys = ["valid_rmse", "test_rmse", "test_mae", "test_course_rmse"]
  rows = [
    [r["workdir"], r["orientation"], f"{r['weight']:.3f}", *map(r.get, keys)]
    for r in out["runs"]
  ]
  rows.append(["blend", "-", "1", *map(out["blend"].get, keys)])
  print(
    f"Blend on {out['dataset']} {out['split']} (weights fitted on "
    f"{out['valid_ratings']} validation ratings):"
  )
  print(
    report.format_table(
      [
        "run",
        "rows",
        "weight",
        "valid RMSE",
        "test RMSE",
        "test MAE",
        "test course RMSE",
      ],
      rows,
    )
  )
  return 0


if __name__ == "__main__":
  app.run(main)
