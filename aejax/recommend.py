"""Top-N recommendations for one user from a finished run's workdir.

The run's predictor selected on validation (``aejax.runs``) ranks the
movies the user has not rated.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from aejax import runs
from aejax.data.ratings import concatenate


@dataclasses.dataclass(frozen=True)
class Recommendation:
  """One movie: raw id, title, predicted rating and, when the user rated
  it in the held-out test split, that rating."""

  item_id: int
  title: str
  predicted: float
  held_out: float | None


@dataclasses.dataclass(frozen=True)
class Recommendations:
  """What ``recommend`` returns.

  Attributes:
    user_id: the raw user id.
    members: indices of the members whose predictions were averaged.
    items: the unrated movies, best first.
    history: the user's own training ratings, highest first, as
      ``(item_id, title, rating)``.
  """

  user_id: int
  members: list[int]
  items: list[Recommendation]
  history: list[tuple[int, str, float]]


def recommend(
  workdir: os.PathLike | str,
  user_id: int,
  top: int = 10,
  data_dir: os.PathLike | str | None = None,
) -> Recommendations:
  """The ``top`` movies the user has not rated, by predicted rating.

  Movies the user rated in training or validation are excluded; a movie
  the user rated in the test split is listed with that rating. Movies are
  ordered by predicted rating, ties (such as ratings clipped to the top of
  the scale) by the unclipped score.

  Args:
    workdir: a finished run's folder (``config.json``, ``selected.npz``).
    user_id: the raw MovieLens user id.
    top: how many movies to list (and of the user's own ratings).
    data_dir: the ``--data_dir`` the run used, if any.

  Returns:
    The recommendations and the user's top-rated training movies.

  Raises:
    ValueError: an unknown user or a bad ``top``.
    FileNotFoundError: the workdir lacks ``config.json`` or
      ``selected.npz``.
  """
  if top < 1:
    raise ValueError(f"top must be at least 1, not {top}")
  run = runs.FinishedRun.load(workdir, data_dir)
  data = run.data
  found = np.flatnonzero(data.user_ids == user_id)
  if not len(found):
    raise ValueError(
      f"user {user_id} is not in {data.name} (ids "
      f"{data.user_ids.min()}..{data.user_ids.max()})"
    )
  user = int(found[0])
  if run.config.orientation == "user":
    scores = run.predict_rows(np.array([user]), clip=False)[0]
    ratings = run.predict_rows(np.array([user]))[0]
  else:
    scores = run.predict_matrix(clip=False)[user]
    ratings = run.predict_matrix()[user]

  known = (
    data.train if data.valid is None else concatenate([data.train, data.valid])
  )
  rated = np.zeros(data.n_items, bool)
  rated[known.items[known.users == user]] = True
  held_out = dict(
    zip(
      data.test.items[data.test.users == user].tolist(),
      data.test.values[data.test.users == user].tolist(),
      strict=True,
    )
  )
  candidates = np.flatnonzero(~rated)
  best = candidates[
    np.lexsort((-scores[candidates], -ratings[candidates]))[:top]
  ]
  titles = data.titles or {}
  title = lambda item: titles.get(int(data.item_ids[item]), "?")
  items = [
    Recommendation(
      int(data.item_ids[i]), title(i), float(ratings[i]), held_out.get(int(i))
    )
    for i in best
  ]
  mine = data.train.users == user
  history = sorted(
    zip(
      data.train.items[mine].tolist(),
      data.train.values[mine].tolist(),
      strict=True,
    ),
    key=lambda pair: (-pair[1], title(pair[0])),
  )[:top]
  return Recommendations(
    user_id=user_id,
    members=run.members,
    items=items,
    history=[(int(data.item_ids[i]), title(i), float(r)) for i, r in history],
  )
