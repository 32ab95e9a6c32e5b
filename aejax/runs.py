"""A finished run, loaded back from its workdir to predict again.

``config.json`` rebuilds the model and the data split (the same carve of
validation ratings), ``selected.npz`` supplies the chosen parameters and
the cold-start predictor, and ``results.json`` names the predictor that
validation selected: an ensemble (its members' predictions are averaged)
or a single member.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from aejax import (
  batching,
  evaluation,
  export,
  fit,
  report,
  resume,
  train,
  variants,
)
from aejax.data import movielens
from aejax.data.movielens import SplitData
from aejax.data.ratings import Rows


def chosen_members(config: variants.Config, results: dict) -> list[int]:
  """The members behind ``results["selected"]``.

  Args:
    config: the run's config.
    results: its ``results.json``.

  Returns:
    The selected ensemble's members, or the selected member alone.

  Raises:
    ValueError: ``results`` names no selected predictor.
  """
  n_members = len(variants.members(config))
  kind, _, index = str(results.get("selected", {}).get("predictor")).partition(
    " "
  )
  if kind == "ensemble" and index.isdigit():
    return fit.ensemble_groups(config, n_members)[int(index)]
  if kind == "member" and index.isdigit():
    return [int(index)]
  raise ValueError("results.json names no selected predictor")


@dataclasses.dataclass(frozen=True)
class FinishedRun:
  """Everything needed to predict with a finished run's chosen predictor.

  Attributes:
    workdir: the run's folder.
    config: its config.
    data: its split, validation carve included.
    program: the model's static part.
    params: the selected parameters of every member.
    hyper: the members' hyper-parameters.
    scoring: its cold-start predictor and clipping range.
    rows: the training rows the model reads.
    members: the members averaged into the chosen predictor.
  """

  workdir: pathlib.Path
  config: variants.Config
  data: SplitData
  program: train.Program
  params: Any
  hyper: train.Hyper
  scoring: evaluation.Scoring
  rows: Rows
  members: list[int]

  @classmethod
  def load(
    cls,
    workdir: os.PathLike | str,
    data_dir: os.PathLike | str | None = None,
  ) -> FinishedRun:
    """Loads the run in ``workdir`` (trained with ``data_dir``, if any).

    The data split is rebuilt from ``config.json`` (its ratings read
    through ``movielens.load``) and the members' parameters from
    ``selected.npz``.

    Args:
      workdir: the run's folder.
      data_dir: where the run's rating files are cached; None for the
        default cache.

    Returns:
      The ``FinishedRun``.

    Raises:
      FileNotFoundError: the run has no ``selected.npz``.
      ValueError: the files do not describe a finished run, or the ratings
        read are not those the run was trained on (its ``results.json``
        holds their fingerprint); a
        ``config.json`` or ``results.json`` that is missing or unreadable
        raises ``aejax.errors.DataError``, a ``ValueError``.
    """
    workdir = pathlib.Path(workdir)
    config = variants.Config.from_json(
      report.read_json(workdir / "config.json")
    )
    results = report.read_json(workdir / "results.json")
    data = movielens.load(
      config.dataset,
      config.split,
      data_dir=data_dir,
      seed=config.seed,
      test_fraction=config.test_fraction,
      drop_first_line=config.drop_first_line,
    )
    data = movielens.with_validation(data, config.valid_fraction, config.seed)
    trained_on = results.get("data_fingerprint")
    if trained_on is not None and trained_on != resume.data_fingerprint(data):
      raise ValueError(
        f"{workdir} was trained on other ratings than "
        f"{data_dir or 'the download cache'} holds; pass the --data_dir "
        "it was trained with"
      )
    members = variants.members(config)
    rows = Rows.from_ratings(data.train, config.orientation)
    program = train.make_program(
      config, rows.n_columns, members, int(np.count_nonzero(rows.lengths))
    )
    template, hyper = train.init_members(program, members)
    params, scoring = export.load_selected(workdir, template.params)
    return cls(
      workdir=workdir,
      config=config,
      data=data,
      program=program,
      params=params,
      hyper=hyper,
      scoring=evaluation.Scoring(*map(jnp.asarray, scoring)),
      rows=rows,
      members=chosen_members(config, results),
    )

  def predict_rows(
    self, rows: np.ndarray, clip: bool | None = None
  ) -> np.ndarray:
    """Predictions of the chosen predictor for the given rows.

    ``r_hat = sum_{m in chosen} r_hat_m / |chosen|``: the chosen members'
    mean prediction, each member fed the row's training ratings
    (``evaluation.predict``).

    Args:
      rows: indices of users or items, as the run's rows are.
      clip: overrides the config's clipping unless None.

    Returns:
      ``(len(rows), n_columns)`` predicted ratings.
    """
    rows = np.asarray(rows, np.int32)
    batch = max(min(self.config.eval_batch_size, len(rows)), 1)
    order = batching.fixed_row_order(rows, batch)
    weights = evaluation.predictor_weights(
      len(variants.members(self.config)), [self.members]
    )[-1:]
    predict = evaluation.make_predict_fn(
      self.program, self.rows, batch, clip=clip
    )
    out = predict(
      self.params,
      self.hyper,
      batching.DeviceRows.put(self.rows),
      jnp.asarray(order),
      self.scoring,
      jnp.asarray(weights),
    )
    return np.asarray(out)[0, : len(rows)]

  def predict_matrix(self, clip: bool | None = None) -> np.ndarray:
    """``(n_users, n_items)`` predictions of the chosen predictor.

    Args:
      clip: overrides the config's clipping unless None.

    Returns:
      ``predict_rows`` of every row, transposed for item rows.
    """
    matrix = self.predict_rows(np.arange(self.rows.n_rows), clip)
    return matrix.T if self.config.orientation == "item" else matrix
