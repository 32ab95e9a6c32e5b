"""Several splits of one protocol: ML-100k's five folds, or seeded splits.

``--folds=N`` trains the same config on N splits and reports each figure's
mean and standard deviation over them:

- official ML-100k splits: ``u1`` .. ``uN`` (N at most 5), the five
  disjoint test folds of ``mku.sh``;
- ``random``: N independent seeded splits, seeds ``seed`` .. ``seed + N - 1``
  (repeated hold-out; the test sets may overlap).

Each split runs ``fit`` into its own sub-folder of the workdir; the summary
lands in ``folds.json``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from aejax import fit, report
from aejax.data.movielens import SplitData
from aejax.variants import Config

FOLD_SPLITS = ("u1", "u2", "u3", "u4", "u5")


def fold_configs(config: Config, folds: int) -> list[Config]:
  """The config of each fold: its split, or its seed for random splits.

  Args:
    config: the run's config; its split picks the protocol.
    folds: how many folds.

  Returns:
    One config per fold, otherwise ``config`` itself.

  Raises:
    ValueError: ``folds`` below 1, above 5 for official splits, or a split
      (``ua``, ``ub``) that has no folds.
  """
  if folds < 1:
    raise ValueError(f"folds must be at least 1, not {folds}")
  if config.split == "random":
    return [
      dataclasses.replace(config, seed=config.seed + offset)
      for offset in range(folds)
    ]
  if config.split not in FOLD_SPLITS:
    raise ValueError(
      f"split {config.split!r} has no folds; use u1..u5 or random"
    )
  if folds > len(FOLD_SPLITS):
    raise ValueError(f"ML-100k has 5 folds, not {folds}")
  return [dataclasses.replace(config, split=s) for s in FOLD_SPLITS[:folds]]


def fold_name(config: Config) -> str:
  """The sub-folder of a fold: ``u3``, or ``seed-2`` for random splits.

  Args:
    config: one of ``fold_configs``.

  Returns:
    The folder name.
  """
  return f"seed-{config.seed}" if config.split == "random" else config.split


def _numbers(entry: dict[str, Any]) -> dict[str, float]:
  return {
    k: float(v)
    for k, v in entry.items()
    if k.startswith(("train_", "valid_", "test_", "ensemble_", "selected_"))
    and not k.endswith("_std")
    and isinstance(v, (int, float))
  }


def _mean_std(values: list[dict[str, float]]) -> dict[str, float]:
  out = {}
  for name in values[0]:
    column = np.asarray([v.get(name, np.nan) for v in values], np.float64)
    out[name] = float(column.mean())
    out[f"{name}_std"] = report.sample_std(column)
  return out


def summarize_folds(
  results: list[dict[str, Any]], names: list[str] | None = None
) -> dict[str, Any]:
  """Mean and standard deviation over folds of every figure.

  A fold's model figures are its mean over members, its ensemble's (when
  there is one) and its predictor selected on validation
  (``selected_*``); each baseline is summarised under its name. The
  standard deviation is the sample one over folds (``ddof = 1``).

  Args:
    results: each fold's ``results.json``.
    names: each fold's name (default: its split).

  Returns:
    ``{"folds": [...], "model": {...}, "baselines": {name: {...}}}``.
  """
  baseline_names = [b["name"] for b in results[0]["baselines"]]
  return {
    "folds": names or [r["split"] for r in results],
    "model": _mean_std([_numbers(r) for r in results]),
    "baselines": {
      name: _mean_std(
        [
          _numbers(next(b for b in r["baselines"] if b["name"] == name))
          for r in results
        ]
      )
      for name in baseline_names
    },
  }


def run_folds(
  config: Config,
  folds: int,
  load: Callable[[Config], SplitData],
  workdir: os.PathLike | str,
  mesh: Mesh | None = None,
) -> dict[str, Any]:
  """Fits ``config`` on each fold; writes and returns the summary.

  Args:
    config: the run's config (its split picks the protocol).
    folds: how many folds.
    load: returns the data of a fold's config.
    workdir: each fold runs in ``workdir/<fold_name>``.
    mesh: the device mesh of ``fit``, or None.

  Returns:
    The contents of ``folds.json``, with each fold's results under
    ``"results"``.
  """
  workdir = pathlib.Path(workdir)
  results, names = [], []
  for fold_config in fold_configs(config, folds):
    names.append(fold_name(fold_config))
    data = load(fold_config)
    results.append(fit.fit(fold_config, data, workdir / names[-1], mesh))
  summary = summarize_folds(results, names)
  if jax.process_index() == 0:
    report.write_json(workdir / "folds.json", summary)
  summary["results"] = results
  return summary
