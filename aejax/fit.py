"""The host side of a run: ``fit(config, data, workdir)``.

``fit`` builds the rows, compiles the epoch and evaluation programs once,
trains every member for ``config.epochs`` epochs, and writes into the
workdir: ``config.json``, ``metrics.jsonl`` (one object per epoch with one
value per member), ``results.json`` and ``learning_curves.png``. Metrics
leave the device once per epoch.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from aejax import batching, metrics, report, train, variants
from aejax.data.movielens import SplitData
from aejax.data.ratings import Rows
from aejax.models import autoencoder
from aejax.variants import Config

RESULT_METRICS = ("rmse", "mae", "course_rmse")


class NonFiniteLossError(FloatingPointError):
  """A member's training loss became NaN or infinite."""

  def __init__(self, epoch: int, member: int, settings: dict[str, float]):
    self.epoch = epoch
    self.member = member
    super().__init__(
      f"non-finite training loss at epoch {epoch} in member {member} "
      f"({_describe(settings)})"
    )


def _describe(settings: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:g}" for k, v in sorted(settings.items()))


def _member_figures(totals: metrics.ErrorSums, prefix: str) -> dict:
  figures = metrics.summarize(totals)
  return {f"{prefix}_{name}": figures[name] for name in RESULT_METRICS}


def initial_output_bias(config: Config, rows: Rows) -> np.ndarray | None:
  """Each column's mean training rating (the global mean where a column has
  none), when ``config.output_bias`` asks for it; else None."""
  if config.output_bias == "zeros":
    return None
  counts = np.bincount(rows.columns, minlength=rows.n_columns)
  sums = np.bincount(rows.columns, rows.values, minlength=rows.n_columns)
  fallback = rows.values.mean() if rows.nnz else 0.0
  safe = np.maximum(counts, 1)
  return np.where(counts > 0, sums / safe, fallback).astype(np.float32)


def fit(
  config: Config,
  data: SplitData,
  workdir: os.PathLike | str,
) -> dict[str, Any]:
  """Trains the members of ``config`` on ``data``; writes into ``workdir``.

  Args:
    config: a validated configuration.
    data: train and test ratings (the test rows are only scored: the
      model's input is always the training row).
    workdir: the run's folder; created if missing.

  Returns:
    The contents of ``results.json``.

  Raises:
    NonFiniteLossError: a member's loss was not finite; the epoch and the
      member are named.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  config = variants.validate(config)
  members = variants.members(config)
  report.write_json(workdir / "config.json", config.to_json())

  train_rows = Rows.from_ratings(data.train, config.orientation)
  test_rows = Rows.from_ratings(data.test, config.orientation)
  program = train.make_program(config, train_rows.n_columns, members)
  states, hyper = train.init_members(
    program, members, initial_output_bias(config, train_rows)
  )
  n_params = autoencoder.count_parameters(
    jax.tree.map(lambda x: x[0], states.params)
  )
  logging.info(
    "%s on %s/%s (%s rows): %d rows x %d columns, %d train and %d test "
    "ratings, %d members of %d parameters, devices %s",
    config.variant,
    data.name,
    data.split,
    config.orientation,
    train_rows.n_rows,
    train_rows.n_columns,
    train_rows.nnz,
    test_rows.nnz,
    len(members),
    n_params,
    jax.devices(),
  )

  device_rows = batching.DeviceRows.put(train_rows)
  test_data = train.eval_targets(train_rows, test_rows, config.eval_batch_size)
  started = time.perf_counter()
  epoch_fn = (
    train.make_epoch_fn(program, train_rows, config.batch_size)
    .lower(states, hyper, device_rows, np.int32(0))
    .compile()
  )
  eval_fn = (
    train.make_eval_fn(program, train_rows, test_rows, config.eval_batch_size)
    .lower(states.params, hyper, test_data)
    .compile()
  )
  compile_seconds = time.perf_counter() - started
  logging.info("Compiled in %.1f s", compile_seconds)

  records = []
  train_seconds = 0.0
  with report.MetricsWriter(workdir / "metrics.jsonl") as writer:
    for epoch in range(config.epochs):
      started = time.perf_counter()
      states, train_totals = epoch_fn(
        states, hyper, device_rows, np.int32(epoch)
      )
      test_totals = eval_fn(states.params, hyper, test_data)
      train_totals, test_totals = jax.device_get((train_totals, test_totals))
      seconds = time.perf_counter() - started
      train_seconds += seconds

      loss = train_totals.loss / np.maximum(train_totals.steps, 1)
      bad = np.flatnonzero(~np.isfinite(loss))
      if bad.size:
        raise NonFiniteLossError(epoch + 1, int(bad[0]), members[bad[0]])
      record = {
        "epoch": epoch + 1,
        "seconds": seconds,
        "train_loss": loss,
        **_member_figures(train_totals.errors, "train"),
        **_member_figures(test_totals, "test"),
      }
      writer.write(record)
      records.append(record)
      logging.info(
        "epoch %d/%d  train loss %.4f  train RMSE %.4f  test RMSE %.4f  "
        "test course RMSE %.4f  %.2f s",
        epoch + 1,
        config.epochs,
        np.mean(loss),
        np.mean(record["train_rmse"]),
        np.mean(record["test_rmse"]),
        np.mean(record["test_course_rmse"]),
        seconds,
      )

  results = summarize_run(config, data, members, records[-1])
  results.update(
    seconds=train_seconds,
    compile_seconds=compile_seconds,
    parameters=n_params,
    test_ratings=int(np.asarray(test_totals.count).reshape(-1)[0]),
  )
  report.write_json(workdir / "results.json", results)
  report.plot_learning_curves(
    records,
    workdir / "learning_curves.png",
    title=f"{config.variant} on {data.name} {data.split}",
  )
  return results


def summarize_run(
  config: Config,
  data: SplitData,
  members: list[dict[str, float]],
  last: dict[str, Any],
) -> dict[str, Any]:
  """``results.json``: identification, mean figures, and each member's."""
  names = [
    f"{split}_{m}" for split in ("train", "test") for m in RESULT_METRICS
  ]
  per_member = []
  for index, settings in enumerate(members):
    entry = dict(settings)
    entry.update({name: float(last[name][index]) for name in names})
    per_member.append(entry)
  results: dict[str, Any] = {
    "variant": config.variant,
    "dataset": data.name,
    "split": data.split,
    "orientation": config.orientation,
    "epochs": config.epochs,
    "n_members": len(members),
    "swept": [name for name, _ in config.sweep],
  }
  for name in names:
    values = np.asarray(last[name], np.float64)
    results[name] = float(values.mean())
    results[f"{name}_std"] = report.sample_std(values)
  results["members"] = per_member
  return results
