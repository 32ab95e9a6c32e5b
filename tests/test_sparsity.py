"""The KL sparsity penalty and k-sparse selection as Makhzani and Frey."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import batching, evaluation, train, variants
from aejax.data.ratings import Ratings, Rows
from aejax.models import autoencoder, sparsity


def kl_by_hand(rho: float, rho_hat: float) -> float:
  return rho * math.log(rho / rho_hat) + (1 - rho) * math.log(
    (1 - rho) / (1 - rho_hat)
  )


def test_kl_penalty_matches_hand_computation():
  # 0.1 ln(0.1 / 0.5) + 0.9 ln(0.9 / 0.5) = -0.16094 + 0.52901.
  assert kl_by_hand(0.1, 0.5) == pytest.approx(0.368064, abs=1e-6)
  rho_hat = [0.5, 0.1, 0.02, 0.9]
  got = sparsity.kl_sparsity(mean_activation=jnp.array(rho_hat), target=0.1)
  expected = [kl_by_hand(0.1, r) for r in rho_hat]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert float(got[1]) == pytest.approx(0.0, abs=1e-7)


def test_kl_penalty_stays_finite_when_units_saturate():
  saturated = jnp.array([0.0, 1.0])
  value = sparsity.kl_sparsity(mean_activation=saturated, target=0.05)
  grad = jax.grad(
    lambda m: sparsity.kl_sparsity(mean_activation=m, target=0.05).sum()
  )(saturated)
  assert np.isfinite(value).all() and np.isfinite(grad).all()
  # Fully on is heavily penalised, fully off mildly.
  assert float(value[1]) > 10 * float(value[0]) > 0


def sparse_program(n_columns=5, hidden=6, beta=0.3, rho=0.2, **overrides):
  config = variants.get_config(
    "sparse",
    hidden_sizes=(hidden,),
    sparsity_target=rho,
    sparsity_weight=beta,
    **overrides,
  )
  members = variants.members(config)
  program = train.make_program(config, n_columns, members)
  states, hyper = train.init_members(program, members)
  one = jax.tree.map(lambda x: x[0], (states, hyper))
  return program, *one


def test_loss_adds_kl_of_the_batch_mean_activation():
  program, state, hyper = sparse_program()
  values = np.array(
    [[5, 0, 3, 0, 1], [0, 0, 0, 0, 0], [2, 4, 0, 0, 0]], np.float32
  )
  mask = values > 0
  loss, _ = train.loss_fn(
    state.params, program, values, mask, jax.random.key(0), hyper
  )

  params = jax.tree.map(np.asarray, nnx.to_pure_dict(state.params))
  enc, dec = params["encoder"][0], params["decoder"][0]
  code = 1 / (1 + np.exp(-(values @ enc["kernel"] + enc["bias"])))
  output = code @ dec["kernel"] + dec["bias"]
  squared = np.where(mask, (output - values) ** 2, 0.0).sum() / mask.sum()
  # The empty row (a padded or unrated user) is left out of the mean.
  rho_hat = code[[0, 2]].mean(axis=0)
  penalty = sum(kl_by_hand(0.2, float(r)) for r in rho_hat)
  np.testing.assert_allclose(loss, squared + 0.3 * penalty, rtol=1e-5)


def test_saturated_codes_give_finite_loss_and_gradients():
  program, state, hyper = sparse_program()
  values = jnp.full((2, 5), 1e4)
  mask = jnp.ones((2, 5), bool)
  loss, grads = jax.value_and_grad(
    lambda p: train.loss_fn(p, program, values, mask, jax.random.key(0), hyper)[
      0
    ]
  )(state.params)
  assert np.isfinite(loss)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_ties_keep_exactly_k_units_in_the_code():
  model = autoencoder.Autoencoder(
    3, (6,), activation="identity", rngs=nnx.Rngs(0)
  )
  # Zero weights: every row's pre-activations are the biases, with ties.
  model.encoder[0].kernel[...] = jnp.zeros((3, 6))
  model.encoder[0].bias[...] = jnp.array([1.0, 3.0, 3.0, 3.0, 0.5, 3.0])
  inputs = jnp.ones((2, 3))
  codes = jax.vmap(lambda k: model.encode(inputs, k=k))(
    jnp.array([1, 2, 3, 4, 5], jnp.int32)
  )
  np.testing.assert_array_equal(
    (codes != 0).sum(axis=-1), [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]
  )
  # Equal values rank by index: k = 2 keeps units 1 and 2 of the four 3s.
  np.testing.assert_array_equal(codes[1, 0], [0, 3, 3, 0, 0, 0])
  np.testing.assert_array_equal(codes[4, 0], [1, 3, 3, 3, 0, 3])


def test_k_schedule_falls_linearly_over_the_first_half():
  config = variants.get_config(
    "ksparse", k=5, k_start=25, k_schedule_fraction=0.5, epochs=10
  )
  ks = [int(train.scheduled_k(config, jnp.int32(5), e)) for e in range(10)]
  assert ks == [25, 21, 17, 13, 9, 5, 5, 5, 5, 5]
  jitted = jax.jit(lambda e: train.scheduled_k(config, jnp.int32(5), e))
  assert [int(jitted(jnp.int32(e))) for e in range(10)] == ks
  plain = variants.get_config("ksparse", k=5, epochs=10)
  assert int(train.scheduled_k(plain, jnp.int32(5), 0)) == 5


def test_evaluation_keeps_alpha_k_units_capped_at_the_width():
  config = variants.get_config("ksparse", k=4, eval_k_multiplier=3.0)
  k = jnp.array([2, 4, 1], jnp.int32)
  np.testing.assert_array_equal(
    train.evaluation_k(config, k, code_width=10), [6, 10, 3]
  )


def rows_and_targets(n_rows=8, n_columns=12, seed=0):
  rng = np.random.default_rng(seed)
  mask = rng.random((n_rows, n_columns)) < 0.4
  users, items = np.nonzero(mask)
  values = rng.integers(1, 6, len(users)).astype(np.float32)
  test = rng.random(len(users)) < 0.3
  make = lambda keep: Rows.from_ratings(
    Ratings(users[keep], items[keep], values[keep], n_rows, n_columns),
    "user",
  )
  return make(~test), make(test)


def ksparse_setup(**overrides):
  train_rows, test_rows = rows_and_targets()
  config = variants.get_config(
    "ksparse", hidden_sizes=(10,), batch_size=3, epochs=6, **overrides
  )
  members = variants.members(config)
  program = train.make_program(config, train_rows.n_columns, members)
  states, hyper = train.init_members(program, members)
  return program, states, hyper, train_rows, test_rows


def test_evaluation_with_alpha_equals_evaluation_with_alpha_k():
  program, states, hyper, train_rows, test_rows = ksparse_setup(
    k=3, eval_k_multiplier=2.0
  )
  targets = evaluation.eval_targets(train_rows, test_rows, 4)
  weights = evaluation.predictor_weights(len(hyper.k))

  def evaluate(program, hyper):
    return evaluation.make_eval_fn(program, train_rows, test_rows, 4)(
      states.params, hyper, targets, weights
    )

  widened = evaluate(program, hyper)
  plain_program, *_ = ksparse_setup(k=3)
  direct = evaluate(plain_program, hyper._replace(k=hyper.k * 2))
  narrow = evaluate(plain_program, hyper)
  np.testing.assert_array_equal(widened.squared, direct.squared)
  assert not np.array_equal(widened.squared, narrow.squared)


def test_first_scheduled_epoch_trains_with_k_start():
  program, states, hyper, train_rows, _ = ksparse_setup(k=2, k_start=7)
  device_rows = batching.DeviceRows.put(train_rows)
  scheduled, _ = train.make_epoch_fn(program, train_rows, 3)(
    jax.tree.map(jnp.copy, states), hyper, device_rows, np.int32(0)
  )
  plain_program, *_ = ksparse_setup(k=2)
  fixed, _ = train.make_epoch_fn(plain_program, train_rows, 3)(
    jax.tree.map(jnp.copy, states),
    hyper._replace(k=jnp.full_like(hyper.k, 7)),
    device_rows,
    np.int32(0),
  )
  for a, b in zip(
    jax.tree.leaves(scheduled.params),
    jax.tree.leaves(fixed.params),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  ("overrides", "message"),
  [
    ({"k": 30, "k_start": 20}, "needs 1 <= k <= k_start, not k=30"),
    ({"k": 5, "k_start": 600}, "k_start must be an integer in [0, 500]"),
    ({"k_start": 60, "k_schedule_fraction": 0.0}, "k_schedule_fraction"),
    ({"eval_k_multiplier": 0.5}, "eval_k_multiplier must be at least 1"),
  ],
)
def test_bad_k_settings_are_named(overrides, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[")):
    variants.get_config("ksparse", **overrides)


@pytest.mark.parametrize(
  ("overrides", "message"),
  [
    ({"activation": "relu"}, "sparsity_weight > 0 needs activation=sigmoid"),
    ({"sparsity_target": 1.0}, "sparsity_target must lie in (0, 1)"),
    ({"relevance_threshold": 10.0}, "relevance_threshold must lie in (0, 5]"),
  ],
)
def test_bad_sparse_settings_are_named(overrides, message):
  pattern = message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
  with pytest.raises(ValueError, match=pattern):
    variants.get_config("sparse", **overrides)
  variants.get_config("sparse")
