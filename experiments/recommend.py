r"""Recommends movies to one user from a finished run.

  python -m experiments.movielens --variant=autorec --workdir=runs/autorec
  python -m experiments.recommend --workdir=runs/autorec --user=42 --top=10

Lists the movies the user has not rated, best first, with their titles and
predicted ratings (and the user's held-out rating where the test split has
one), then the user's own top-rated training movies for context.
"""

from __future__ import annotations

import sys

from absl import app, flags

from aejax import recommend, report
from aejax.data import movielens, sources

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's folder.")
_USER = flags.DEFINE_integer("user", None, "MovieLens user id.")
_TOP = flags.DEFINE_integer("top", 10, "How many movies to list.")
_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "The --data_dir the run was trained with, if any."
)
flags.mark_flags_as_required(["workdir", "user"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    result = recommend.recommend(
      _WORKDIR.value, _USER.value, _TOP.value, data_dir=_DATA_DIR.value
    )
  except (ValueError, FileNotFoundError, movielens.DataError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except sources.FetchError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1

  used = (
    f"member {result.members[0]}"
    if len(result.members) == 1
    else f"members {', '.join(map(str, result.members))} averaged"
  )
  print(
    f"Top {len(result.items)} unrated movies for user {result.user_id} "
    f"({used}):"
  )
  print(
    report.format_table(
      ["rank", "movie", "title", "predicted", "held-out rating"],
      [
        [
          rank,
          r.item_id,
          r.title,
          f"{r.predicted:.2f}",
          None if r.held_out is None else f"{r.held_out:g}",
        ]
        for rank, r in enumerate(result.items, 1)
      ],
    )
  )
  print(f"\nUser {result.user_id}'s top-rated training movies:")
  print(
    report.format_table(
      ["movie", "title", "rating"],
      [[item, title, f"{rating:g}"] for item, title, rating in result.history],
    )
  )
  return 0


if __name__ == "__main__":
  app.run(main)
