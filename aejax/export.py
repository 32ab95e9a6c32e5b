"""The chosen model of a run, saved for later predictions.

``selected.npz`` in the workdir holds every member's selected parameters
(keyed by their path in the parameter tree) and the ``Scoring`` that turns
reconstructions into predictions. It is plain ``.npz``, written atomically
and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import numpy as np

from aejax import report
from aejax.evaluation import Scoring

FILE_NAME = "selected.npz"
_PARAMS = "params/"
_SCORING = "scoring/"


def save_selected(
  workdir: os.PathLike | str, params: Any, scoring: Scoring
) -> pathlib.Path:
  """Writes ``params`` (member axis first) and ``scoring`` to the workdir.

  Args:
    workdir: the run's folder.
    params: the selected parameters of every member.
    scoring: the cold-start predictor and clipping range of the run.

  Returns:
    The file written.
  """
  arrays = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    arrays[_PARAMS + jax.tree_util.keystr(path)] = np.asarray(leaf)
  for name, value in scoring._asdict().items():
    arrays[_SCORING + name] = np.asarray(value)
  return report.write_atomic(
    pathlib.Path(workdir) / FILE_NAME, lambda f: np.savez(f, **arrays)
  )


def load_selected(
  workdir: os.PathLike | str, template: Any
) -> tuple[Any, Scoring]:
  """Reads what ``save_selected`` wrote, into the structure of ``template``.

  Args:
    workdir: the run's folder.
    template: a parameter tree of the same structure and shapes (from
      ``train.init_members`` with the run's config).

  Returns:
    ``(params, scoring)``.

  Raises:
    FileNotFoundError: the workdir has no ``selected.npz``.
    ValueError: the file does not match ``template``.
  """
  path = pathlib.Path(workdir) / FILE_NAME
  with np.load(path, allow_pickle=False) as saved:
    stored = {name: saved[name] for name in saved.files}
  leaves = []
  paths = jax.tree_util.tree_leaves_with_path(template)
  for key_path, leaf in paths:
    name = _PARAMS + jax.tree_util.keystr(key_path)
    if name not in stored:
      raise ValueError(f"{path}: no parameter {name}")
    if stored[name].shape != leaf.shape:
      raise ValueError(
        f"{path}: {name} has shape {stored[name].shape}, the model {leaf.shape}"
      )
    leaves.append(stored[name])
  params = jax.tree_util.tree_unflatten(
    jax.tree_util.tree_structure(template), leaves
  )
  missing = [f for f in Scoring._fields if _SCORING + f not in stored]
  if missing:
    raise ValueError(f"{path}: no scoring fields {', '.join(missing)}")
  scoring = Scoring(*(stored[_SCORING + f] for f in Scoring._fields))
  return params, scoring
