"""Checkpoints: exact round trips, typed keys, the latest kept."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import checkpoint, train, variants


@functools.cache
def member_states(seeds=2):
  """Real training states: NNX parameters, optax state, typed keys."""
  config = variants.get_config(
    "denoising", hidden_sizes=(5,), batch_size=4, seeds=seeds
  )
  members = variants.members(config)
  program = train.make_program(config, 7, members)
  states, _ = train.init_members(program, members)
  return states


def assert_same_tree(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    if jnp.issubdtype(b.dtype, jax.dtypes.prng_key):
      assert jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
      assert jax.random.key_impl(a) == jax.random.key_impl(b)
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def shifted(states, amount):
  """A state that differs from ``states`` in every float leaf."""
  return jax.tree.map(
    lambda x: x + amount if jnp.issubdtype(x.dtype, jnp.floating) else x,
    states,
  )


def test_round_trip_is_exact_and_keys_draw_the_same(tmp_path):
  states = member_states()
  with checkpoint.Checkpoints(tmp_path / "ck") as checkpoints:
    checkpoints.save(
      3,
      states,
      metrics={"test_rmse": np.float32([0.9, 1.1]), "bad": np.nan},
      info={"data": "abc"},
    )
  # A fresh manager over the same folder sees what the first one wrote.
  with checkpoint.Checkpoints(tmp_path / "ck") as checkpoints:
    restored = checkpoints.restore_latest(member_states())
  assert restored.epoch == 3
  assert restored.metrics == {
    "test_rmse": [pytest.approx(0.9), pytest.approx(1.1)],
    "bad": None,
  }
  assert restored.info == {"data": "abc"}
  assert_same_tree(restored.state, states)
  # The rewrapped keys are keys again and draw exactly what the saved ones
  # drew.
  draw = lambda keys: jax.vmap(lambda k: jax.random.uniform(k, (4,)))(keys)
  np.testing.assert_array_equal(
    draw(restored.state.noise_key), draw(states.noise_key)
  )


def test_restore_takes_values_from_disk_not_from_the_template(tmp_path):
  states = member_states()
  with checkpoint.Checkpoints(tmp_path / "ck") as checkpoints:
    checkpoints.save(1, shifted(states, 1.0))
    restored = checkpoints.restore(1, states)
  assert_same_tree(restored.state, shifted(states, 1.0))


def test_the_latest_are_kept_the_rest_deleted(tmp_path):
  states = member_states()
  with checkpoint.Checkpoints(tmp_path / "ck") as checkpoints:
    assert checkpoints.latest_epoch() is None
    assert checkpoints.restore_latest(states) is None
    for epoch in range(1, 5):
      checkpoints.save(epoch, shifted(states, epoch))
    checkpoints.wait()
    assert checkpoints.epochs() == [4]
    latest = checkpoints.restore_latest(states)
  assert latest.epoch == 4
  assert_same_tree(latest.state, shifted(states, 4))
  with checkpoint.Checkpoints(tmp_path / "ck2", keep_latest=2) as checkpoints:
    for epoch in range(1, 6):
      checkpoints.save(epoch, states)
    checkpoints.wait()
    assert checkpoints.epochs() == [4, 5]


def test_an_epoch_is_saved_once(tmp_path):
  states = member_states()
  with checkpoint.Checkpoints(tmp_path / "ck") as checkpoints:
    checkpoints.save(4, states)
    with pytest.raises(ValueError, match="epoch 4 exists already"):
      checkpoints.save(4, states)
    with pytest.raises(FileNotFoundError, match="no checkpoint of epoch 3"):
      checkpoints.restore(3, states)


def test_unfinished_save_is_ignored_and_cleaned(tmp_path):
  states = member_states()
  directory = tmp_path / "ck"
  with checkpoint.Checkpoints(directory) as checkpoints:
    checkpoints.save(2, states)
  # What a process killed while writing epoch 4 leaves behind.
  partial = directory / "4.orbax-checkpoint-tmp"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "junk").write_bytes(b"\0" * 10)
  with checkpoint.Checkpoints(directory) as checkpoints:
    assert checkpoints.latest_epoch() == 2
    assert checkpoints.restore_latest(states).epoch == 2
  assert not partial.exists()


@pytest.mark.parametrize(
  ("kwargs", "message"),
  [({"keep_latest": 0}, "keep_latest"), ({"keep_latest": -3}, "keep_latest")],
)
def test_bad_options(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    checkpoint.Checkpoints(tmp_path / "ck", **kwargs)
