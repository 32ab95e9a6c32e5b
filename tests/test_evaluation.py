"""Ranking metrics, per-user figures, ensembles, AutoRec's loss and AdamW,
against hand computations and numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aejax import batching, evaluation, losses, metrics, optim, train, variants
from aejax.data.ratings import Ratings, Rows


def test_ranking_by_hand():
  # User 0 rated item 0 before; items 1 and 3 are relevant.
  # Ranking without item 0: 2 (0.8), 1 (0.7), 3 (0.1), 4 (0.0).
  # User 1 has nothing relevant and is skipped.
  scores = np.array([[0.9, 0.7, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5]])
  known = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
  relevant = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]], bool)
  out = metrics.ranking_figures(
    scores=scores, known=known, relevant=relevant, cutoffs=(1, 2, 3)
  )
  assert out["ranked_users"] == 1
  assert out["recall@1"] == 0.0 and out["ndcg@1"] == 0.0
  # One hit at rank 2 of min(2, 2) relevant.
  assert out["recall@2"] == pytest.approx(0.5)
  assert out["ndcg@2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
  # Both hits in the top 3: recall 2 / min(3, 2) = 1.
  assert out["recall@3"] == pytest.approx(1.0)
  assert out["ndcg@3"] == pytest.approx(
    (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
  )
  with pytest.raises(ValueError, match="both known and relevant"):
    metrics.ranking_figures(
      scores=scores, known=known, relevant=known, cutoffs=(1,)
    )


def test_rating_figures_by_hand():
  out = metrics.rating_figures(
    users=np.array([3, 3, 7]),
    predictions=np.array([4.0, 2.0, 1.0]),
    targets=np.array([5.0, 2.0, 3.0]),
  )
  assert out["rmse"] == pytest.approx(np.sqrt(5 / 3))
  assert out["mae"] == pytest.approx(1.0)
  # User 3: sqrt(1 / 2); user 7: 2.
  assert out["course_rmse"] == pytest.approx((np.sqrt(0.5) + 2) / 2)
  assert out["count"] == 3


def test_sum_normalization_and_l2_penalty_by_hand():
  errors = jnp.array([[1.0, 0.0, 4.0], [0.0, 9.0, 0.0]])
  mask = errors > 0
  assert losses.reduce_squared_error(errors, mask, "sum") == 14.0
  kernels = [jnp.array([[1.0, -2.0]]), jnp.array([[3.0], [0.5]])]
  assert losses.l2_penalty(kernels) == pytest.approx(0.5 * (1 + 4 + 9 + 0.25))


def test_adamw_step_matches_numpy():
  lr, wd, b1, b2, eps = 0.1, 0.01, 0.9, 0.999, 1e-8
  opt = optim.make_optimizer(
    "adamw", learning_rate=lr, weight_decay=wd, decay=b2, eps=eps
  )
  # A weight matrix: only matrices decay.
  theta = np.array([[1.0, -2.0]], np.float32)
  grads = [np.array([[0.5, 0.25]]), np.array([[-1.0, 2.0]])]
  state = opt.init(jnp.asarray(theta))
  params = jnp.asarray(theta)
  m = v = np.zeros((1, 2))
  expected = theta.astype(np.float64)
  for t, g in enumerate(grads, 1):
    updates, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
    params = optax.apply_updates(params, updates)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    expected = expected - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * expected)
  np.testing.assert_allclose(params, expected, rtol=1e-5)


def test_cosine_schedule_scales_every_update():
  multiplier = optim.lr_multiplier("cosine", 10)
  assert float(multiplier(0)) == pytest.approx(1.0)
  assert float(multiplier(5)) == pytest.approx(0.5)
  assert float(multiplier(10)) == pytest.approx(0.0, abs=1e-7)
  make = lambda schedule: optim.make_optimizer(
    "rmsprop",
    learning_rate=0.1,
    weight_decay=0.3,
    decay=0.9,
    eps=1e-8,
    schedule=schedule,
    total_steps=10,
  )
  scheduled, constant = make("cosine"), make("constant")
  params = jnp.ones(1)
  states = [
    optim.init_member_state(o, params, learning_rate=0.2, weight_decay=0.3)
    for o in (scheduled, constant)
  ]
  for step in range(6):
    grad = jnp.full(1, float(step + 1))
    a, states[0] = scheduled.update(grad, states[0], params)
    b, states[1] = constant.update(grad, states[1], params)
    # The member's own learning rate (0.2) is used, decay included.
    assert float(a[0]) == pytest.approx(
      float(b[0]) * float(multiplier(step)), rel=1e-5
    )
  assert float(states[0][0].hyperparams["learning_rate"]) == pytest.approx(0.2)


def _tiny_item_rows():
  rng = np.random.default_rng(2)
  mask = rng.random((6, 5)) < 0.6
  mask[:, 0] = True
  users, items = np.nonzero(mask)
  values = rng.integers(1, 6, len(users)).astype(np.float32)
  ratings = Ratings(users, items, values, n_users=6, n_items=5)
  return ratings, Rows.from_ratings(ratings, "item")


def _tiny_item_run():
  ratings, rows = _tiny_item_rows()
  config = variants.get_config(
    "autorec",
    hidden_sizes=(4,),
    seeds=3,
    ensemble=True,
    eval_batch_size=2,
    clip_predictions=False,
  )
  members = variants.members(config)
  program = train.make_program(config, rows.n_columns, members, rows.n_rows)
  states, hyper = train.init_members(program, members)
  return config, ratings, rows, program, states, hyper


def test_ensemble_and_per_user_course_rmse_match_numpy():
  """Item rows: predictions of each member and of the ensemble, scored on
  the device in batches, equal numpy's figures per user (the columns)."""
  config, ratings, rows, program, states, hyper = _tiny_item_run()
  weights = evaluation.predictor_weights(3, [[0, 1, 2]])
  np.testing.assert_allclose(weights[3], [1 / 3, 1 / 3, 1 / 3])
  # Score the training ratings themselves, fed as inputs.
  data = evaluation.eval_targets(rows, rows, config.eval_batch_size)
  evaluate = evaluation.make_eval_fn(
    program, rows, rows, config.eval_batch_size
  )
  totals = evaluate(states.params, hyper, data, jnp.asarray(weights))
  figures = metrics.summarize(totals)

  dense, _ = rows.densify(np.arange(rows.n_rows))
  reconstruct = jax.jit(
    lambda p, h: train.reconstruct(program, p, jnp.asarray(dense), h)[0]
  )
  per_member = []
  for member in range(3):
    one = lambda tree, m=member: jax.tree.map(lambda x: x[m], tree)
    output = reconstruct(one(states.params), one(hyper))
    per_member.append(np.asarray(output)[ratings.items, ratings.users])
  per_member.append(np.mean(per_member, axis=0))
  for index, predictions in enumerate(per_member):
    expected = metrics.rating_figures(
      users=ratings.users, predictions=predictions, targets=ratings.values
    )
    for name in ("rmse", "mae", "course_rmse"):
      assert figures[name][index] == pytest.approx(expected[name], rel=1e-5)

  predict_rows = evaluation.make_predict_fn(
    program, rows, config.eval_batch_size
  )
  order = batching.fixed_row_order(
    np.arange(rows.n_rows, dtype=np.int32), config.eval_batch_size
  )
  matrix = predict_rows(
    states.params,
    hyper,
    batching.DeviceRows.put(rows),
    jnp.asarray(order),
    data.scoring,
    jnp.asarray(weights[3:]),
  )
  np.testing.assert_allclose(
    np.asarray(matrix)[0, ratings.items, ratings.users],
    per_member[3],
    rtol=1e-5,
  )


def test_l2_penalty_enters_the_gradient():
  """One member with lambda = 0 and one with lambda = 2 differ in their
  gradient by exactly lambda * (B / N) * W on the kernels."""
  _, rows = _tiny_item_rows()
  config = variants.get_config(
    "autorec", hidden_sizes=(4,), sweep=(("l2_weight", (0.0, 2.0)),)
  )
  members = variants.members(config)
  program = train.make_program(config, rows.n_columns, members, rows.n_rows)
  states, hyper = train.init_members(program, members)
  values, mask = rows.densify(np.array([0, 1, -1]))
  params = jax.tree.map(lambda x: x[0], states.params)

  loss = lambda p, h: train.loss_fn(
    p, program, values, mask, jax.random.key(0), h
  )[0]
  grad = jax.jit(jax.grad(loss))
  one = lambda member: jax.tree.map(lambda x: x[member], hyper)
  plain, penalised = grad(params, one(0)), grad(params, one(1))
  share = 2 / rows.n_rows
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = jax.tree_util.keystr(path)
    a = _leaf(plain, path)
    b = _leaf(penalised, path)
    extra = 2.0 * share * np.asarray(leaf) if "kernel" in name else 0.0
    np.testing.assert_allclose(b - a, extra, atol=1e-5, err_msg=name)


def _leaf(tree, path):
  for candidate, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if candidate == path:
      return np.asarray(leaf)
  raise KeyError(path)


def test_a_deep_ksparse_model_trains_on_item_rows():
  """One epoch on item rows; the course terms count users (the columns).

  Item rows change only the rows' meaning and the width: a stacked
  k-sparse model covers the layers and the top-k path of every variant.
  """
  rng = np.random.default_rng(4)
  mask = rng.random((7, 11)) < 0.5
  mask[:, 0] = True
  mask[6] = False  # a user without ratings
  users, items = np.nonzero(mask)
  values = rng.integers(1, 6, len(users)).astype(np.float32)
  ratings = Ratings(users, items, values, n_users=7, n_items=11)
  rows = Rows.from_ratings(ratings, "item")
  config = variants.get_config(
    "ksparse", orientation="item", hidden_sizes=(6, 3, 6), k=2, batch_size=3
  )
  members = variants.members(config)
  program = train.make_program(config, rows.n_columns, members, rows.n_rows)
  states, hyper = train.init_members(program, members)
  epoch = train.make_epoch_fn(program, rows, config.batch_size)
  states, totals = epoch(
    states, hyper, batching.DeviceRows.put(rows), np.int32(0)
  )
  assert np.isfinite(np.asarray(totals.loss)).all()
  assert float(totals.errors.count[0]) == len(values)
  assert float(totals.errors.rows[0]) == 6
  assert float(totals.steps[0]) == -(-11 // 3)
