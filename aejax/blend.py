"""Blends of finished runs on one split, weighted on validation ratings.

Runs of different kinds (item rows and user rows, say) make errors of
different kinds, and a weighted mean of their predictions can beat each of
them. The weights are fitted on the runs' common validation ratings only;
the test ratings are read once, after, to score the blend and its parts.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from aejax import metrics, report
from aejax.runs import FinishedRun

# Config fields that make the split and the validation carve; blended runs
# must agree on all of them.
SAME_SPLIT = (
  "dataset",
  "split",
  "seed",
  "test_fraction",
  "valid_fraction",
  "drop_first_line",
)
FIGURES = ("rmse", "mae", "course_rmse")


def blend_weights(
  predictions: np.ndarray, targets: np.ndarray, ridge: float = 1e-9
) -> np.ndarray:
  """Least-squares weights that sum to one.

  ``w = argmin_w ||P^T w - r||^2`` subject to ``sum_k w_k = 1``, solved
  with a Lagrange multiplier: ``w = A^-1 (b - nu 1)`` with ``A = P P^T``,
  ``b = P r`` and ``nu`` such that the weights sum to one (a linear
  stacking of predictors, Breiman, 1996, "Stacked Regressions", without
  its positivity constraint).

  Args:
    predictions: ``(n_runs, n_ratings)`` predictions ``P``.
    targets: ``(n_ratings,)`` ratings ``r``.
    ridge: added to the diagonal of ``A``, relative to its trace, so that
      two identical runs still give an answer.

  Returns:
    ``(n_runs,)`` weights.
  """
  p = np.asarray(predictions, np.float64)
  r = np.asarray(targets, np.float64)
  gram = p @ p.T
  gram += ridge * np.trace(gram) * np.eye(len(p))
  ones = np.ones(len(p))
  solve_b = np.linalg.solve(gram, p @ r)
  solve_1 = np.linalg.solve(gram, ones)
  nu = (ones @ solve_b - 1.0) / (ones @ solve_1)
  return solve_b - nu * solve_1


def _check_same_split(runs: Sequence[FinishedRun]) -> None:
  first = runs[0]
  for run in runs[1:]:
    for name in SAME_SPLIT:
      a, b = getattr(first.config, name), getattr(run.config, name)
      if a != b:
        raise ValueError(
          f"runs {first.workdir} and {run.workdir} differ in {name} "
          f"({a!r} and {b!r}): a blend needs one split and one "
          "validation carve"
        )
  if first.data.valid is None:
    raise ValueError("the runs have no validation set to fit weights on")


def blend(
  workdirs: Sequence[os.PathLike | str],
  workdir: os.PathLike | str,
  data_dir: os.PathLike | str | None = None,
) -> dict[str, Any]:
  """Blends finished runs; writes ``blend.json`` into ``workdir``.

  Each run contributes its predictor selected on validation (see
  ``aejax.runs``), clipped as the run scores it; the blend is
  ``clip(sum_k w_k r_hat_k)`` with ``blend_weights`` fitted on the
  validation ratings. Ranking figures rank the unclipped blend.

  Args:
    workdirs: two or more finished runs on the same split and carve.
    workdir: where ``blend.json`` goes; created if missing.
    data_dir: the ``--data_dir`` the runs used, if any.

  Returns:
    The contents of ``blend.json``: each run's weight and figures, and the
    blend's (its validation figures are those the weights were fitted on).

  Raises:
    ValueError: fewer than two runs, or runs on different splits.
  """
  if len(workdirs) < 2:
    raise ValueError(f"a blend needs two runs or more, not {len(workdirs)}")
  runs = [FinishedRun.load(w, data_dir) for w in workdirs]
  _check_same_split(runs)
  data = runs[0].data
  valid, test = data.valid, data.test
  clipped = np.stack([run.predict_matrix() for run in runs])
  weights = blend_weights(clipped[:, valid.users, valid.items], valid.values)
  low, high = data.train.values.min(), data.train.values.max()

  def figures(predicted: np.ndarray, ratings, prefix: str) -> dict:
    scored = metrics.rating_figures(
      users=ratings.users, predictions=predicted, targets=ratings.values
    )
    return {f"{prefix}_{name}": scored[name] for name in FIGURES}

  blended = np.clip(np.tensordot(weights, clipped, axes=1), low, high)
  out: dict[str, Any] = {"runs": [], "blend": {}}
  for index, run in enumerate(runs):
    entry = {
      "workdir": str(run.workdir),
      "variant": run.config.variant,
      "orientation": run.config.orientation,
      "weight": float(weights[index]),
      **figures(clipped[index, valid.users, valid.items], valid, "valid"),
    }
    out["runs"].append(entry)
  out["blend"].update(
    figures(blended[valid.users, valid.items], valid, "valid")
  )

  # The test ratings, once.
  for index, entry in enumerate(out["runs"]):
    entry.update(figures(clipped[index, test.users, test.items], test, "test"))
  out["blend"].update(figures(blended[test.users, test.items], test, "test"))
  raw = np.tensordot(
    weights, np.stack([run.predict_matrix(clip=False) for run in runs]), 1
  )
  known = np.zeros((data.n_users, data.n_items), bool)
  for ratings in (data.train, valid):
    known[ratings.users, ratings.items] = True
  relevant = np.zeros_like(known)
  good = test.values >= runs[0].config.relevance_threshold
  relevant[test.users[good], test.items[good]] = True
  ranking = metrics.ranking_figures(
    scores=raw,
    known=known,
    relevant=relevant,
    cutoffs=runs[0].config.ranking_cutoffs,
  )
  out["blend"].update(
    {f"test_{k}": v for k, v in ranking.items() if k != "ranked_users"}
  )
  out.update(
    dataset=data.name,
    split=data.split,
    seed=runs[0].config.seed,
    test_ratings=len(test),
    valid_ratings=len(valid),
  )
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  report.write_json(workdir / "blend.json", out)
  return out
