"""Evaluation on the device: predictions from training rows, scored sums.

The model's input is always a row's training ratings; held-out ratings are
only targets. ``Scoring`` carries everything that turns reconstructions
into predictions (the cold-start predictor and the clipping range), all
computed from training ratings. Members' predictions can be mixed into
ensembles before scoring (``predictor_weights``), inside one compiled
program.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from aejax import batching, metrics, parallel
from aejax.baselines import Biases
from aejax.data.ratings import Rows
from aejax.train import Hyper, Program, evaluation_k, reconstruct


class Scoring(NamedTuple):
  """What turns reconstructions into predictions, from training data only.

  Attributes:
    column_seen: ``(n_columns,)`` columns with a training rating.
    mean: ``mu`` of the cold-start predictor.
    row_bias: ``(n_rows,)`` bias of each row in that predictor.
    column_bias: ``(n_columns,)`` bias of each column in that predictor.
    low: smallest training rating, for clipping.
    high: largest training rating, for clipping.
  """

  column_seen: jax.Array
  mean: jax.Array
  row_bias: jax.Array
  column_bias: jax.Array
  low: jax.Array
  high: jax.Array


def make_scoring(
  train_rows: Rows, fallback: Biases | None = None, orientation: str = "user"
) -> Scoring:
  """``Scoring`` from host training rows and a cold-start predictor.

  Args:
    train_rows: the training rows (``Rows``).
    fallback: ``mu + b_user + b_item`` for cold-start entries; by default
      the mean of ``train_rows`` with no biases.
    orientation: what the rows are (``user`` or ``item``), to map the
      predictor's user and item biases onto rows and columns.

  Returns:
    The ``Scoring``, on the device.
  """
  seen = np.zeros(train_rows.n_columns, bool)
  seen[train_rows.columns] = True
  values = train_rows.values
  if fallback is None:
    mean = values.mean() if len(values) else 0.0
    row_bias = np.zeros(train_rows.n_rows)
    column_bias = np.zeros(train_rows.n_columns)
  else:
    mean = fallback.mean
    row_bias, column_bias = fallback.user, fallback.item
    if orientation == "item":
      row_bias, column_bias = column_bias, row_bias
  return Scoring(
    column_seen=jnp.asarray(seen),
    mean=jnp.float32(mean),
    row_bias=jnp.asarray(row_bias, jnp.float32),
    column_bias=jnp.asarray(column_bias, jnp.float32),
    low=jnp.float32(values.min() if len(values) else 0.0),
    high=jnp.float32(values.max() if len(values) else 0.0),
  )


class EvalTargets(NamedTuple):
  """What evaluation needs besides the parameters, on the device.

  Attributes:
    inputs: training rows (the model's input, always).
    targets: held-out rows to score.
    order: ``(n_batches, batch)`` rows with a held-out rating, ``-1`` padded.
    scoring: cold-start predictor and clipping range, from training data.
  """

  inputs: batching.DeviceRows
  targets: batching.DeviceRows
  order: jax.Array
  scoring: Scoring


def eval_targets(
  train_rows: Rows,
  target_rows: Rows,
  batch_size: int,
  scoring: Scoring | None = None,
  *,
  inputs: batching.DeviceRows | None = None,
  mesh: Mesh | None = None,
) -> EvalTargets:
  """Builds ``EvalTargets`` from host rows (training input, held-out).

  Only rows with at least one held-out rating are visited, in index order,
  ``batch_size`` at a time (``batching.fixed_row_order``).

  Args:
    train_rows: the training rows, the model's input.
    target_rows: the held-out rows to score, indexed like ``train_rows``.
    batch_size: rows per evaluation batch.
    scoring: the cold-start predictor and clipping range; by default
      ``make_scoring(train_rows)``, the training mean.
    inputs: the training rows already on the device, so that they are not
      copied twice; by default ``train_rows`` is copied.
    mesh: if given, everything is replicated on it.

  Returns:
    The ``EvalTargets``, on the device.
  """
  scored = np.flatnonzero(target_rows.lengths > 0).astype(np.int32)
  order = batching.fixed_row_order(scored, batch_size)
  scoring = make_scoring(train_rows) if scoring is None else scoring
  if mesh is None:
    put_rows = batching.DeviceRows.put
    order = jnp.asarray(order)
  else:
    put_rows = functools.partial(parallel.put_rows, mesh=mesh)
    order, scoring = parallel.put((order, scoring), parallel.replicated(mesh))
  return EvalTargets(
    inputs=put_rows(train_rows) if inputs is None else inputs,
    targets=put_rows(target_rows),
    order=order,
    scoring=scoring,
  )


def predict(
  program: Program,
  params: Any,
  hyper: Hyper,
  inputs: jax.Array,
  input_mask: jax.Array,
  row_ids: jax.Array,
  scoring: Scoring,
  clip: bool | None = None,
) -> jax.Array:
  """Predicted ratings of one member for a batch of training rows.

  The input is the clean training row. Where the model has no information
  (a column never rated in training, or a row with no training rating) the
  prediction is the cold-start predictor ``mu + b_row + b_column`` if the
  config asks for it; predictions are clipped to the training ratings'
  range if ``clip`` (by default the config) asks for it. A k-sparse member
  keeps ``evaluation_k`` code units here:

  ``r_hat = clip(known ? f(x) : mu + b_row + b_column, low, high)`` with
  ``f`` the autoencoder and ``known`` true where the column has a training
  rating and the row has one in ``input_mask``.

  Args:
    program: the run's static part.
    params: one member's parameters.
    hyper: the member's hyper-parameters.
    inputs: ``(batch, n_columns)`` training ratings, 0 where unobserved.
    input_mask: where ``inputs`` holds a rating.
    row_ids: ``(batch,)`` index of each row, ``-1`` for padding.
    scoring: the cold-start predictor and clipping range.
    clip: overrides ``config.clip_predictions`` unless None.

  Returns:
    ``(batch, n_columns)`` predicted ratings.
  """
  config = program.config
  if program.use_top_k:
    hyper = hyper._replace(k=evaluation_k(config, hyper.k, program.code_width))
  predictions, _ = reconstruct(program, params, inputs, hyper)
  if config.cold_start_fallback:
    known = scoring.column_seen[None, :] & input_mask.any(
      axis=-1, keepdims=True
    )
    row_bias = scoring.row_bias[jnp.maximum(row_ids, 0)]
    fallback = scoring.mean + row_bias[:, None] + scoring.column_bias[None, :]
    predictions = jnp.where(known, predictions, fallback)
  if config.clip_predictions if clip is None else clip:
    predictions = jnp.clip(predictions, scoring.low, scoring.high)
  return predictions


def _predict_members(
  program, params, hyper, inputs, mask, row_ids, scoring, clip=None, mesh=None
):
  one = lambda p, h: predict(
    program, p, h, inputs, mask, row_ids, scoring, clip
  )
  if mesh is None:
    return jax.vmap(one)(params, hyper)
  return jax.vmap(one, spmd_axis_name=parallel.MEMBERS)(params, hyper)


def predictor_weights(
  n_members: int, groups: Sequence[Sequence[int]] = ()
) -> np.ndarray:
  """The rows that mix members' predictions into predictors.

  Predictor ``p`` predicts ``sum_m W[p, m] r_hat_m``: the first
  ``n_members`` rows are the identity (each member alone), then one row
  per group with ``1 / |group|`` on its members (their ensemble, the mean
  prediction of its seeds).

  Args:
    n_members: members of the run.
    groups: the members of each ensemble.

  Returns:
    ``W``, of shape ``(n_members + len(groups), n_members)``.
  """
  weights = [np.eye(n_members, dtype=np.float32)]
  for group in groups:
    row = np.zeros((1, n_members), np.float32)
    row[0, list(group)] = 1.0 / len(group)
    weights.append(row)
  return np.concatenate(weights)


def make_eval_fn(
  program: Program,
  train_rows: Rows,
  target_rows: Rows,
  batch_size: int,
  mesh: Mesh | None = None,
) -> jax.stages.Wrapped:
  """A jitted ``evaluate(params, hyper, targets, weights) -> ErrorSums``.

  ``weights`` (``(n_predictors, n_members)``, see ``predictor_weights``)
  mixes the members' clipped predictions into predictors, each scored on
  its own: the identity scores each member, a row of ``1 / n`` entries an
  ensemble. The result has a leading predictor axis. With item rows the
  course RMSE is taken over users (the columns). ``train_rows`` and
  ``target_rows`` (host ``Rows``) fix the capacities. With a ``mesh`` the
  rows of each batch are split over its ``data`` axis and the members over
  its ``members`` axis, as in training; the sums are replicated.

  Args:
    program: the run's static part.
    train_rows: the training rows (host), the model's input.
    target_rows: the held-out rows (host) that will be scored.
    batch_size: rows per evaluation batch.
    mesh: the device mesh, or None for one device.

  Returns:
    ``evaluate``: parameters and hyper-parameters with a leading member
    axis, ``EvalTargets`` from ``eval_targets`` and the
    ``(n_predictors, n_members)`` weights; it returns ``ErrorSums`` with a
    leading predictor axis.
  """
  n_columns = program.n_columns
  densify_inputs = parallel.densifier(mesh, train_rows, batch_size, n_columns)
  densify_targets = parallel.densifier(mesh, target_rows, batch_size, n_columns)
  by_column = program.config.orientation == "item"

  def evaluate(params, hyper, data: EvalTargets, weights):
    n_predictors = weights.shape[0]

    def body(carry, row_ids):
      totals, columns = carry
      inputs, input_mask = densify_inputs(data.inputs, row_ids)
      targets, target_mask = densify_targets(data.targets, row_ids)
      members = _predict_members(
        program,
        params,
        hyper,
        inputs,
        input_mask,
        row_ids,
        data.scoring,
        mesh=mesh,
      )
      mixed = jnp.einsum("pm,mbc->pbc", weights, members)
      score = lambda p: metrics.error_sums(
        predictions=p, targets=targets, mask=target_mask
      )
      totals = totals + jax.vmap(score)(mixed)
      if by_column:
        column = lambda p: metrics.column_sums(
          predictions=p, targets=targets, mask=target_mask
        )
        columns = columns + jax.vmap(column)(mixed)
      return (totals, columns), None

    zeros = jax.tree.map(
      lambda x: jnp.zeros((n_predictors, *x.shape), x.dtype),
      metrics.ErrorSums.zeros(),
    )
    columns = None
    if by_column:
      columns = metrics.ColumnSums(
        *(jnp.zeros((n_predictors, n_columns), jnp.float32) for _ in range(2))
      )
    (totals, columns), _ = jax.lax.scan(body, (zeros, columns), data.order)
    if by_column:
      totals = jax.vmap(metrics.course_from_columns)(totals, columns)
    return totals

  if mesh is None:
    return jax.jit(evaluate)
  members = parallel.member_sharding(mesh)
  everywhere = parallel.replicated(mesh)
  return jax.jit(
    evaluate,
    in_shardings=(members, members, everywhere, everywhere),
    out_shardings=everywhere,
  )


def make_predict_fn(
  program: Program,
  train_rows: Rows,
  batch_size: int,
  clip: bool | None = None,
) -> jax.stages.Wrapped:
  """A jitted ``predict_rows(params, hyper, inputs, order, scoring, weights)``.

  ``predict_rows`` returns ``(n_predictors, n_batches * batch_size,
  n_columns)`` predictions, ``r_hat_p = sum_m weights[p, m] r_hat_m``, for
  the rows of ``order`` (``(n_batches, batch_size)``, ``-1`` padded), each
  fed its training row from ``inputs``; padded rows come out as they are
  computed and are the caller's to drop.

  Args:
    program: the run's static part.
    train_rows: the training rows (host), which fix the batch capacity.
    batch_size: rows per batch of ``order``.
    clip: overrides the config's clipping unless None (ranking wants raw
      scores).

  Returns:
    The jitted ``predict_rows``.
  """
  n_columns = program.n_columns
  capacity = train_rows.batch_capacity(batch_size)

  def predict_rows(params, hyper, inputs, order, scoring, weights):
    def body(_, row_ids):
      values, mask = batching.densify(
        inputs, row_ids, n_columns=n_columns, capacity=capacity
      )
      members = _predict_members(
        program, params, hyper, values, mask, row_ids, scoring, clip
      )
      return None, jnp.einsum("pm,mbc->pbc", weights, members)

    _, out = jax.lax.scan(body, None, order)
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape(out.shape[0], -1, n_columns)

  return jax.jit(predict_rows)
