"""Top-N recommendations for one user from a finished run's workdir.

The run's ``config.json`` rebuilds the model and its data split (the same
carve of validation ratings), ``selected.npz`` supplies the selected
parameters and the cold-start predictor. When the run swept settings, the
setting with the lowest mean validation RMSE is used; its seeds'
predictions are averaged.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import jax.numpy as jnp
import numpy as np

from aejax import batching, evaluation, export, report, train, variants
from aejax.data import movielens
from aejax.data.ratings import Rows, concatenate


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


def _chosen_members(
  config: variants.Config, workdir: pathlib.Path, n_members: int
) -> list[int]:
  """The seeds of the setting with the lowest mean validation RMSE."""
  # Members are ordered settings outer, seeds inner.
  groups = [
    list(range(start, start + config.seeds))
    for start in range(0, n_members, config.seeds)
  ]
  if len(groups) == 1:
    return groups[0]
  results = report.read_json(workdir / "results.json")
  valid = [m.get("valid_rmse") for m in results["members"]]
  if any(v is None for v in valid):
    valid = [m["train_rmse"] for m in results["members"]]
  return min(groups, key=lambda g: float(np.mean([valid[i] for i in g])))


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
  workdir = pathlib.Path(workdir)
  config = variants.Config.from_json(report.read_json(workdir / "config.json"))
  data = movielens.load(
    config.dataset,
    config.split,
    data_dir=data_dir,
    seed=config.seed,
    test_fraction=config.test_fraction,
    drop_first_line=config.drop_first_line,
  )
  data = movielens.with_validation(data, config.valid_fraction, config.seed)
  found = np.flatnonzero(data.user_ids == user_id)
  if not len(found):
    raise ValueError(
      f"user {user_id} is not in {data.name} (ids "
      f"{data.user_ids.min()}..{data.user_ids.max()})"
    )
  user = int(found[0])

  members = variants.members(config)
  train_rows = Rows.from_ratings(data.train, config.orientation)
  program = train.make_program(
    config, train_rows.n_columns, members, train_rows.n_rows
  )
  template, hyper = train.init_members(program, members)
  params, scoring = export.load_selected(workdir, template.params)
  chosen = _chosen_members(config, workdir, len(members))
  weights = evaluation.predictor_weights(len(members), [chosen])[-1:]

  rows = [user] if config.orientation == "user" else range(train_rows.n_rows)
  batch = min(config.eval_batch_size, len(rows))
  order = batching.fixed_row_order(np.asarray(rows, np.int32), batch)
  predict = lambda clip: np.asarray(
    evaluation.make_predict_fn(program, train_rows, batch, clip=clip)(
      params,
      hyper,
      batching.DeviceRows.put(train_rows),
      jnp.asarray(order),
      evaluation.Scoring(*map(jnp.asarray, scoring)),
      jnp.asarray(weights),
    )
  )[0]
  scores, ratings = predict(False), predict(None)
  if config.orientation == "user":
    scores, ratings = scores[0], ratings[0]
  else:
    scores = scores[: train_rows.n_rows, user]
    ratings = ratings[: train_rows.n_rows, user]

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
    members=chosen,
    items=items,
    history=[(int(data.item_ids[i]), title(i), float(r)) for i, r in history],
  )
