"""The member axis: one compiled program trains seeds and sweeps exactly."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from aejax import batching, evaluation, fit, report, train, variants
from aejax.data import movielens
from aejax.data.ratings import Rows


def run_members(config, data, epochs=3):
  """Trains ``config``'s members; returns final params and test sums."""
  members = variants.members(config)
  rows = Rows.from_ratings(data.train, config.orientation)
  test_rows = Rows.from_ratings(data.test, config.orientation)
  program = train.make_program(config, rows.n_columns, members)
  states, hyper = train.init_members(program, members)
  epoch_fn = train.make_epoch_fn(program, rows, config.batch_size)
  eval_fn = evaluation.make_eval_fn(program, rows, test_rows, 64)
  device_rows = batching.DeviceRows.put(rows)
  targets = evaluation.eval_targets(rows, test_rows, 64)
  weights = evaluation.predictor_weights(len(members))
  for epoch in range(epochs):
    states, _ = epoch_fn(states, hyper, device_rows, np.int32(epoch))
  return states.params, eval_fn(states.params, hyper, targets, weights)


SWEEPS = {
  "denoising": (("learning_rate", (1e-3, 3e-3)), ("noise_rate", (0.1, 0.4))),
  "ksparse": (("k", (2, 5)),),
}


@pytest.mark.parametrize("variant", sorted(SWEEPS))
def test_member_i_equals_a_run_of_member_i_alone(tiny_split, variant):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  sweep = SWEEPS[variant]
  config = variants.get_config(
    variant, hidden_sizes=(8,), batch_size=4, seeds=2, seed=7, sweep=sweep
  )
  members = variants.members(config)
  params, sums = run_members(config, data)

  # The last member: its seed and every swept value differ from member 0's.
  index = len(members) - 1
  member = members[index]
  assert member["seed"] == 8
  alone = variants.get_config(
    variant,
    hidden_sizes=(8,),
    batch_size=4,
    seed=member["seed"],
    **{name: member[name] for name, _ in sweep},
  )
  alone_params, alone_sums = run_members(alone, data)
  for a, b in zip(
    jax.tree.leaves(params), jax.tree.leaves(alone_params), strict=True
  ):
    np.testing.assert_allclose(a[index], b[0], rtol=1e-5, atol=1e-6)
  for a, b in zip(sums, alone_sums, strict=True):
    np.testing.assert_allclose(a[index], b[0], rtol=1e-5)


def test_seeds_differ_in_parameters_and_noise(tiny_split):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = variants.get_config(
    "denoising", hidden_sizes=(8,), batch_size=4, seeds=2
  )
  members = variants.members(config)
  assert [m["seed"] for m in members] == [0, 1]
  program = train.make_program(config, data.n_items, members)
  states, hyper = train.init_members(program, members)
  kernel = np.asarray(states.params["encoder"][0]["kernel"][...])
  assert not np.allclose(kernel[0], kernel[1])

  values = np.full((4, data.n_items), 3.0, np.float32)
  masks = [
    np.asarray(
      train.corrupt(
        values, jax.random.fold_in(states.noise_key[m], 0), hyper.noise_rate[m]
      )
      == 0
    )
    for m in range(2)
  ]
  assert masks[0].any() and masks[1].any()
  assert not np.array_equal(masks[0], masks[1])


def test_results_keep_each_member_and_the_spread(tiny_split, tmp_path):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = variants.get_config(
    "plain",
    hidden_sizes=(8,),
    batch_size=4,
    epochs=2,
    seeds=3,
    sweep=(("learning_rate", (1e-3, 1e-2)),),
  )
  results = fit.fit(config, data, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["n_members"] == 6 and len(saved["members"]) == 6
  assert saved["swept"] == ["learning_rate"]
  rmse = [m["test_rmse"] for m in saved["members"]]
  assert saved["test_rmse"] == pytest.approx(np.mean(rmse))
  assert saved["test_rmse_std"] == pytest.approx(np.std(rmse, ddof=1))
  assert [m["learning_rate"] for m in saved["members"]] == [1e-3] * 3 + [
    1e-2
  ] * 3
  assert results["members"] == saved["members"]

  rows = report.comparison_rows([saved])
  assert [r["setting"] for r in rows] == [
    "learning_rate=0.001",
    "learning_rate=0.01",
  ]
  first = [m["test_rmse"] for m in saved["members"][:3]]
  assert rows[0]["seeds"] == 3
  assert rows[0]["test_rmse_mean"] == pytest.approx(np.mean(first))
  assert rows[0]["test_rmse_std"] == pytest.approx(np.std(first, ddof=1))


def test_sweep_validation_names_the_bad_value():
  with pytest.raises(ValueError, match="cannot sweep 'epochs'"):
    variants.get_config("plain", sweep=(("epochs", (1, 2)),))
  with pytest.raises(ValueError, match="noise_rate must lie in"):
    variants.get_config("denoising", sweep=(("noise_rate", (0.1, 1.2)),))
  with pytest.raises(ValueError, match="k must be an integer"):
    variants.get_config("ksparse", sweep=(("k", (2.5,)),))
