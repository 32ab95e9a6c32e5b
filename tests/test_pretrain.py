"""Greedy layer-wise pretraining: CD-1, assembly, hand-over to fine-tuning."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from aejax import (
  batching,
  evaluation,
  fit,
  layer_trainers,
  metrics,
  pretrain,
  train,
  variants,
)
from aejax.data import movielens
from aejax.data.ratings import Rows
from aejax.models import rbm


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("gaussian", [True, False])
def test_cd1_update_matches_numpy(gaussian):
  model = rbm.RBM(5, 3, gaussian_visible=gaussian, rngs=nnx.Rngs(0))
  model.weights[...] = jax.random.normal(jax.random.key(1), (5, 3))
  model.visible_bias[...] = jnp.array([0.5, -0.2, 0.1, 0.3, -0.4])
  model.hidden_bias[...] = jnp.array([0.2, -0.1, 0.05])
  graphdef, params = nnx.split(model, nnx.Param)
  visible = np.array(
    [
      [4.0, 0.0, 2.0, 5.0, 0.0],
      [0.0, 0.0, 0.0, 0.0, 0.0],  # padding: no unit present
      [1.0, 3.0, 0.0, 0.0, 2.0],
    ],
    np.float32,
  )
  if not gaussian:
    visible = visible / 5
  mask = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 1]], bool)
  key = jax.random.key(7)
  grads, reconstruction = rbm.contrastive_divergence(
    graphdef, params, visible, mask, key
  )

  W = np.asarray(model.weights[...])
  b = np.asarray(model.visible_bias[...])
  c = np.asarray(model.hidden_bias[...])
  h0 = sigmoid(visible @ W + c)
  uniform = np.asarray(jax.random.uniform(key, h0.shape))
  sample = (uniform < h0).astype(np.float32)
  mean = sample @ W.T + b
  v1 = mask * (mean if gaussian else sigmoid(mean))
  h1 = sigmoid(v1 @ W + c)
  rows = mask.any(axis=1)
  n = rows.sum()
  dW = (visible.T @ h0 - v1.T @ h1) / n
  db = (mask * (visible - v1)).sum(axis=0) / n
  dc = (rows[:, None] * (h0 - h1)).sum(axis=0) / n

  np.testing.assert_allclose(reconstruction, v1, rtol=1e-5, atol=1e-6)
  grads = jax.tree.map(np.asarray, nnx.to_pure_dict(grads))
  np.testing.assert_allclose(grads["weights"], -dW, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads["visible_bias"], -db, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads["hidden_bias"], -dc, rtol=1e-4, atol=1e-6)

  # One step of plain SGD is the textbook update W + lr dW.
  sgd = optax.sgd(0.1)
  updates, _ = sgd.update(grads, sgd.init(grads))
  new = optax.apply_updates(nnx.to_pure_dict(params), updates)
  np.testing.assert_allclose(new["weights"], W + 0.1 * dW, rtol=1e-5)
  np.testing.assert_allclose(new["visible_bias"], b + 0.1 * db, rtol=1e-5)


def small_config(kind="denoising", **overrides):
  settings = {
    "hidden_sizes": (6, 3, 6),
    "epochs": 2,
    "batch_size": 4,
    "pretrain": kind,
    "pretrain_epochs": 3,
  }
  settings.update(overrides)
  return variants.get_config("stacked", **settings)


def records(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  out = [json.loads(line) for line in lines]
  for record in out:
    del record["seconds"]
  return out


def test_zero_pretrain_epochs_is_plain_training(tiny_split, tmp_path):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  plain = variants.get_config(
    "stacked", hidden_sizes=(6, 3, 6), epochs=2, batch_size=4
  )
  fit.fit(plain, data, tmp_path / "plain")
  fit.fit(small_config("rbm", pretrain_epochs=0), data, tmp_path / "zero")
  assert records(tmp_path / "zero") == records(tmp_path / "plain")
  assert not (tmp_path / "zero" / "pretrain.jsonl").exists()


@pytest.mark.parametrize("kind", ["denoising", "rbm"])
def test_pretraining_ignores_the_fine_tuning_schedule(kind, tiny_split):
  # The cosine schedule spans fine-tuning's steps; pretraining keeps its
  # own constant rate, so both runs pretrain to the same weights.
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  pretrained = []
  for schedule in ("constant", "cosine"):
    config = small_config(kind, lr_schedule=schedule, pretrain_epochs=4)
    program, members, states, _, train_rows, device_rows = setup(config, data)
    params = pretrain.pretrain(
      program, states, members, train_rows, device_rows
    ).params
    pretrained.append(jax.tree.map(np.asarray, params))
  for a, b in zip(*map(jax.tree.leaves, pretrained), strict=True):
    np.testing.assert_array_equal(a, b)


def setup(config, data):
  train_rows = Rows.from_ratings(data.train, config.orientation)
  members = variants.members(config)
  program = train.make_program(config, train_rows.n_columns, members)
  states, hyper = train.init_members(program, members)
  device_rows = batching.DeviceRows.put(train_rows)
  return program, members, states, hyper, train_rows, device_rows


def count_traces(kind, monkeypatch) -> list[int]:
  """Counts calls of a layer's step function, i.e. its traces."""
  module, name = (
    (rbm, "contrastive_divergence") if kind == "rbm" else (train, "train_step")
  )
  original = getattr(module, name)
  traced = []

  def counting(*args, **kwargs):
    traced.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, counting)
  return traced


@pytest.mark.parametrize("kind", ["denoising", "rbm"])
def test_pretrained_weights_reach_fine_tuning_unchanged(
  kind, tiny_split, tmp_path, monkeypatch
):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  # A vanishing learning rate: fine-tuning leaves every weight as it was.
  config = small_config(kind, epochs=1, learning_rate=1e-30, seeds=2)
  results = fit.fit(config, data, tmp_path / "run")

  program, members, states, hyper, train_rows, device_rows = setup(config, data)
  initial = jax.tree.map(np.asarray, states.params)
  traced = count_traces(kind, monkeypatch)
  pretrained = pretrain.pretrain(
    program, states, members, train_rows, device_rows
  ).params
  assert len(traced) == 2  # each layer compiles once, not once per epoch
  test_rows = Rows.from_ratings(data.test, config.orientation)
  evaluate = evaluation.make_eval_fn(program, train_rows, test_rows, 8)
  totals = evaluate(
    pretrained,
    hyper,
    evaluation.eval_targets(train_rows, test_rows, 8),
    evaluation.predictor_weights(len(members)),
  )
  for index, member in enumerate(results["members"]):
    member_totals = jax.tree.map(lambda x, i=index: x[i], totals)
    expected = metrics.summarize(member_totals)
    assert member["test_rmse"] == pytest.approx(expected["rmse"], rel=1e-6)
    assert member["test_mae"] == pytest.approx(expected["mae"], rel=1e-6)
  changed = [
    not np.allclose(a, b)
    for a, b in zip(
      jax.tree.leaves(initial), jax.tree.leaves(pretrained), strict=True
    )
  ]
  assert all(changed)
  lines = (tmp_path / "run" / "pretrain.jsonl").read_text().splitlines()
  assert [json.loads(x)["layer"] for x in lines] == [1, 1, 1, 2, 2, 2]


def test_assemble_unrolls_layers_into_encoder_and_mirrored_decoder():
  config = small_config("rbm")
  members = variants.members(config)
  program = train.make_program(config, 9, members)
  states, _ = train.init_members(program, members)
  rng = np.random.default_rng(0)
  layers = []
  for n_in, n_out in pretrain.encoder_pairs(9, config.hidden_sizes):
    W = rng.normal(size=(1, n_in, n_out)).astype(np.float32)
    c = rng.normal(size=(1, n_out)).astype(np.float32)
    b = rng.normal(size=(1, n_in)).astype(np.float32)
    layers.append(layer_trainers.Layer(W, c, np.swapaxes(W, 1, 2), b))
  params = pretrain.assemble(program, states.params, layers)

  model = nnx.merge(program.graphdef, jax.tree.map(lambda x: x[0], params))
  x = rng.integers(0, 6, size=(4, 9)).astype(np.float32)
  (W0, c0, _, b0), (W1, c1, _, b1) = [
    [None if a is None else a[0] for a in layer] for layer in layers
  ]
  hidden = sigmoid(x @ W0 + c0)
  code = sigmoid(hidden @ W1 + c1)
  expected = sigmoid(code @ W1.T + b1) @ W0.T + b0
  reconstruction, model_code = model(jnp.asarray(x))
  np.testing.assert_allclose(model_code, code, rtol=1e-5)
  np.testing.assert_allclose(reconstruction, expected, rtol=1e-4, atol=1e-5)
  # The starting parameters are left as they were.
  assert not np.allclose(states.params["encoder"][0]["kernel"][...], W0)


@pytest.mark.parametrize(
  ("overrides", "message"),
  [
    ({"pretrain": "pca"}, "pretrain 'pca' unknown"),
    ({"pretrain_epochs": -1}, "pretrain_epochs must be a non-negative"),
    ({"hidden_sizes": (6, 3)}, "needs mirrored hidden_sizes"),
    ({"pretrain": "rbm", "activation": "relu"}, "activation=sigmoid"),
    ({"pretrain_noise_rate": 1.0}, "pretrain_noise_rate must lie in"),
    ({"pretrain_learning_rate": 0.0}, "pretrain_learning_rate must be"),
  ],
)
def test_bad_pretraining_settings_are_named(overrides, message):
  with pytest.raises(ValueError, match=message):
    small_config(**overrides)


def test_diverged_pretraining_names_layer_epoch_and_member(
  tiny_split, tmp_path
):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = small_config("rbm", hidden_sizes=(4,), pretrain_learning_rate=1e30)
  with pytest.raises(
    fit.NonFiniteLossError, match="pretraining loss of layer 1"
  ):
    fit.fit(config, data, tmp_path / "run")
