"""Continuing a run from its workdir, or refusing to when it differs.

A workdir belongs to one run: its ``config.json`` says which. Running again
with the same workdir resumes from the latest checkpoint when the config
is the same and the data are the same (checked by a fingerprint of the
ratings, since the rows and their order follow from them). Fields in
``CHANGEABLE_ON_RESUME`` may differ: they decide how long a run lasts and
how often it saves, not what it computes. ``epochs`` may grow, or shrink
down to the epoch of the latest checkpoint. Anything else that differs is
a ``ResumeError`` naming every differing field.

Resumed runs are bitwise the runs they continue: the checkpoint holds the
whole training state (parameters, optimizer state with each member's
hyper-parameters, step counters and root keys), every epoch's keys derive
from the root keys with ``fold_in(epoch)``, and ``metrics.jsonl`` is cut
back to the checkpoint's epoch before new epochs are appended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

from aejax import checkpoint, report
from aejax.data.movielens import SplitData
from aejax.errors import DataError
from aejax.variants import Config

# Config fields that may change between a run and its resumption.
CHANGEABLE_ON_RESUME = ("epochs", "checkpoint_every")


class ResumeError(ValueError):
  """A workdir holds a run that this config or data cannot continue."""


def config_differences(
  saved: Mapping[str, Any],
  current: Mapping[str, Any],
  changeable: tuple[str, ...] = CHANGEABLE_ON_RESUME,
) -> list[str]:
  """The fields that differ, as ``"name: saved -> current"``, sorted.

  Args:
    saved: the JSON form of the config a workdir holds.
    current: the JSON form of the config of this run.
    changeable: fields allowed to differ.

  Returns:
    One entry per differing field; a field missing on one side shows as
    ``(absent)``.
  """
  absent = object()
  show = lambda v: "(absent)" if v is absent else json.dumps(v)
  differences = []
  for name in sorted(set(saved) | set(current)):
    if name in changeable:
      continue
    old, new = saved.get(name, absent), current.get(name, absent)
    if old != new:
      differences.append(f"{name}: {show(old)} -> {show(new)}")
  return differences


def check_config(workdir: os.PathLike | str, config: Config) -> None:
  """Raises ResumeError when ``workdir`` holds a run of another config.

  Args:
    workdir: the run's folder; a folder without ``config.json`` is new.
    config: this run's config.

  Raises:
    ResumeError: naming every field that differs (other than those of
      ``CHANGEABLE_ON_RESUME``; ``epochs`` counts when a learning-rate or
      k schedule depends on it), or checkpoints without a ``config.json``.
      A field the saved config lacks counts as its ``Config`` default.
    DataError: ``config.json`` is not a JSON object.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / "config.json"
  if not path.exists():
    if any((workdir / "checkpoints").glob("[0-9]*")):
      raise ResumeError(
        f"{workdir} holds checkpoints but no config.json; use another --workdir"
      )
    return
  saved = report.read_json(path)
  if not isinstance(saved, dict):
    raise DataError(path, 0, "not a JSON object")
  # A field that the saved config lacks was added to Config later, with a
  # default that keeps the behaviour the run was trained with.
  saved = {**Config().to_json(), **saved}
  changeable = CHANGEABLE_ON_RESUME
  if config.lr_schedule != "constant" or config.k_start > 0:
    # A learning-rate schedule or a k schedule spans all the epochs: other
    # epochs, other rates or other k from the start.
    changeable = tuple(f for f in changeable if f != "epochs")
  differences = config_differences(saved, config.to_json(), changeable)
  if differences:
    raise ResumeError(
      f"{workdir} holds a run with another config ("
      + "; ".join(differences)
      + "); use another --workdir, or the same settings to resume"
    )


def data_fingerprint(data: SplitData) -> str:
  """SHA-256 of the ratings of every split and of the data's identity.

  Two runs whose fingerprints agree read the same rows in the same order.

  The digest covers ``name/split`` and, for train, validation and test in
  turn, ``n_users``, ``n_items``, the number of ratings and the int32
  users, int32 items and float32 values (``none`` for a missing validation
  split).

  Args:
    data: the run's splits.

  Returns:
    The hex digest.
  """
  digest = hashlib.sha256()
  digest.update(f"{data.name}/{data.split}".encode())
  for part in (data.train, data.valid, data.test):
    if part is None:
      digest.update(b"none")
      continue
    digest.update(np.int64([part.n_users, part.n_items, len(part)]).tobytes())
    for array, dtype in (
      (part.users, np.int32),
      (part.items, np.int32),
      (part.values, np.float32),
    ):
      digest.update(np.ascontiguousarray(array, dtype).tobytes())
  return digest.hexdigest()


def start_epoch(
  workdir: os.PathLike | str, config: Config, fingerprint: str
) -> int:
  """The epoch a run in ``workdir`` resumes after: 0 for a new run.

  Everything that would make resuming wrong is checked here, from files
  alone, before any model is built or compiled.

  Args:
    workdir: the run's folder.
    config: this run's config.
    fingerprint: ``data_fingerprint`` of this run's data.

  Returns:
    The epoch of the latest checkpoint, or 0 when there is none.

  Raises:
    ResumeError: the workdir holds a run of another config (see
      ``check_config``), or its latest checkpoint was trained on other data
      or is of an epoch past ``config.epochs``.
    DataError: ``config.json`` cannot be read.
  """
  workdir = pathlib.Path(workdir)
  check_config(workdir, config)
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return 0
  with checkpoint.Checkpoints(directory) as checkpoints:
    epoch = checkpoints.latest_epoch()
    if epoch is None:
      return 0
    with _unreadable(directory, epoch):
      saved = checkpoints.info(epoch).get("data")
  if epoch > config.epochs:
    raise ResumeError(
      f"epochs: {config.epochs} is fewer than the {epoch} already trained "
      f"in {workdir}"
    )
  if saved != fingerprint:
    raise ResumeError(
      f"the checkpoint of epoch {epoch} in {directory} was trained on other "
      f"data (fingerprint {saved}, now {fingerprint})"
    )
  return epoch


def restore(workdir: os.PathLike | str, epoch: int, like: Any) -> Any:
  """The training state saved after ``epoch`` in ``workdir``.

  Args:
    workdir: the run's folder.
    epoch: the checkpoint's epoch (from ``start_epoch``).
    like: the freshly initialised state, the template of the restored one.

  Returns:
    The state, shaped, typed and placed like ``like``.

  Raises:
    ResumeError: the checkpoint cannot be read.
  """
  return restore_checkpoint(workdir, epoch, like).state


def restore_checkpoint(
  workdir: os.PathLike | str, epoch: int, like: Any
) -> checkpoint.Restored:
  """As ``restore``, with the metrics and information saved beside it.

  Args:
    workdir: the run's folder.
    epoch: the checkpoint's epoch (from ``start_epoch``).
    like: the freshly initialised state, the template of the restored one.

  Returns:
    The restored state, metrics and information.

  Raises:
    ResumeError: the checkpoint cannot be read.
  """
  directory = pathlib.Path(workdir) / "checkpoints"
  with (
    checkpoint.Checkpoints(directory) as checkpoints,
    _unreadable(directory, epoch),
  ):
    restored = checkpoints.restore(epoch, like)
  logging.info("Resuming after epoch %d from %s", epoch, directory)
  return restored


@contextlib.contextmanager
def _unreadable(directory: pathlib.Path, epoch: int):
  """Turns what a damaged checkpoint raises into a ResumeError."""
  try:
    yield
  except (OSError, ValueError, KeyError) as error:
    reason = (str(error).splitlines() or [""])[0][:200]
    raise ResumeError(
      f"the checkpoint of epoch {epoch} in {directory} cannot be read "
      f"({type(error).__name__}: {reason}); remove it or use another "
      "--workdir"
    ) from error


def checkpoint_due(epoch: int, config: Config) -> bool:
  """Whether the state after ``epoch`` (1-based) is saved.

  Every ``config.checkpoint_every`` epochs, and after the last.

  Args:
    epoch: the 1-based epoch just trained.
    config: the run's configuration.

  Returns:
    True when ``epoch`` is a multiple of ``checkpoint_every`` or equals
    ``config.epochs``.
  """
  return epoch % config.checkpoint_every == 0 or epoch == config.epochs
