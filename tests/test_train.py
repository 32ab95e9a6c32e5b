"""The training program: batches, the step, compilation and a tiny run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import batching, fit, train, variants
from aejax.data import movielens
from aejax.data.ratings import Ratings, Rows


def random_rows(seed=0, n_rows=9, n_columns=13):
  rng = np.random.default_rng(seed)
  mask = rng.random((n_rows, n_columns)) < 0.3
  mask[4] = False  # an empty row
  users, items = np.nonzero(mask)
  values = rng.integers(1, 6, len(users)).astype(np.float32)
  ratings = Ratings(users, items, values, n_rows, n_columns)
  return Rows.from_ratings(ratings, "user"), mask


@pytest.mark.parametrize("batch_size", [1, 3, 9])
def test_device_densify_matches_host(batch_size):
  rows, _ = random_rows()
  device_rows = batching.DeviceRows.put(rows)
  capacity = rows.batch_capacity(batch_size)
  order = batching.epoch_row_order(jax.random.key(0), rows.n_rows, batch_size)
  assert order.shape == (-(-rows.n_rows // batch_size), batch_size)
  for row_ids in np.asarray(order):
    values, mask = batching.densify(
      device_rows, jnp.asarray(row_ids), n_columns=13, capacity=capacity
    )
    expected_values, expected_mask = rows.densify(row_ids)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(mask, expected_mask)
  seen = np.sort(np.asarray(order).ravel())
  np.testing.assert_array_equal(seen[seen >= 0], np.arange(rows.n_rows))


def test_item_rows_transpose_user_rows():
  _, mask = random_rows()
  users, items = np.nonzero(mask)
  ratings = Ratings(users, items, np.ones(len(users), np.float32), 9, 13)
  item_rows = Rows.from_ratings(ratings, "item")
  _, dense_mask = item_rows.densify(np.arange(13))
  np.testing.assert_array_equal(dense_mask, mask.T)


def tiny_program(variant="plain", **overrides):
  config = variants.get_config(
    variant, hidden_sizes=(6,), batch_size=4, epochs=2, **overrides
  )
  members = variants.members(config)
  program = train.make_program(config, 13, members)
  states, hyper = train.init_members(program, members)
  return program, states, hyper


@pytest.mark.parametrize("variant", ["plain", "ksparse", "denoising"])
def test_jitted_and_eager_steps_agree(variant):
  overrides = {"k": 3} if variant == "ksparse" else {}
  program, states, hyper = tiny_program(variant, **overrides)
  rows, _ = random_rows()
  values, mask = rows.densify(np.array([0, 1, 4, 8]))
  one = jax.tree.map(lambda x: x[0], (states, hyper))
  key = jax.random.key(5)

  step = lambda s, h: train.train_step(program, s, values, mask, key, h)
  jitted_state, jitted_metrics = jax.jit(step)(*one)
  with jax.disable_jit():
    eager_state, eager_metrics = step(*one)
  for a, b in zip(
    jax.tree.leaves((jitted_state, jitted_metrics)),
    jax.tree.leaves((eager_state, eager_metrics)),
    strict=True,
  ):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
  assert int(jitted_state.step) == 1


def test_empty_batch_leaves_state_unchanged():
  program, states, hyper = tiny_program()
  one = jax.tree.map(lambda x: x[0], (states, hyper))
  values = jnp.zeros((4, 13))
  mask = jnp.zeros((4, 13), bool)
  new, step_metrics = train.train_step(
    program, one[0], values, mask, jax.random.key(0), one[1]
  )
  old_leaves = jax.tree.leaves(one[0].params)
  for a, b in zip(jax.tree.leaves(new.params), old_leaves, strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(new.step) == 0 and float(step_metrics.steps) == 0.0


def test_train_step_traces_once_per_run(tiny_split, tmp_path, monkeypatch):
  calls = []
  original = train.train_step

  def counting(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(train, "train_step", counting)
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = variants.get_config(
    "plain", hidden_sizes=(8,), epochs=4, batch_size=5
  )
  fit.fit(config, data, tmp_path / "run")
  assert len(calls) == 1


def test_tiny_end_to_end_run(tiny_split, tmp_path):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = variants.get_config(
    "plain", hidden_sizes=(8,), epochs=30, batch_size=4, learning_rate=1e-2
  )
  workdir = tmp_path / "run"
  results = fit.fit(config, data, workdir)

  for name in (
    "config.json",
    "metrics.jsonl",
    "results.json",
    "learning_curves.png",
  ):
    assert (workdir / name).is_file(), name
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["epoch"] for r in records] == list(range(1, 31))
  saved = json.loads((workdir / "results.json").read_text())
  assert saved == json.loads(json.dumps(results))
  for key in ("test_rmse", "test_mae", "test_course_rmse"):
    assert isinstance(saved[key], float) and np.isfinite(saved[key])
  assert saved["variant"] == "plain" and saved["split"] == "u1"
  assert saved["epochs"] == 30 and saved["seconds"] > 0
  # It learns: training error falls well below its first epoch's.
  assert records[-1]["train_rmse"][0] < 0.7 * records[0]["train_rmse"][0]
  # Scored ratings are all the test ratings (none dropped).
  assert saved["test_ratings"] == len(data.test)
  assert json.loads((workdir / "config.json").read_text())["epochs"] == 30
