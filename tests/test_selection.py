"""Honest model selection: validation carve, best epoch, early stopping,
and a test split that nothing but the final scores ever reads."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_rows, write_ratings

from aejax import fit, metrics, selection, variants
from aejax.data import movielens
from aejax.data.ratings import Ratings


def test_with_validation_carves_from_training_only(tiny_split):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  carved = movielens.with_validation(data, 0.25, seed=3)
  n = len(data.train)
  assert len(carved.valid) == round(0.25 * n)
  assert len(carved.train) + len(carved.valid) == n
  pairs = lambda r: set(zip(r.users.tolist(), r.items.tolist(), strict=True))
  assert pairs(carved.train) | pairs(carved.valid) == pairs(data.train)
  assert not pairs(carved.train) & pairs(carved.valid)
  assert carved.test is data.test
  again = movielens.with_validation(data, 0.25, seed=3)
  np.testing.assert_array_equal(again.valid.users, carved.valid.users)
  other = movielens.with_validation(data, 0.25, seed=4)
  assert pairs(other.valid) != pairs(carved.valid)
  assert movielens.with_validation(data, 0.0, seed=3) is data
  with pytest.raises(ValueError, match="valid_fraction must lie in"):
    movielens.with_validation(data, 1.0, seed=3)


def test_update_best_keeps_each_members_lower_rmse():
  params = {"w": jnp.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])}
  best = selection.init_best(params)
  first = metrics.ErrorSums(
    squared=jnp.array([4.0, 9.0, 1.0]),
    absolute=jnp.zeros(3),
    count=jnp.array([1.0, 1.0, 1.0]),
    row_rmse=jnp.zeros(3),
    rows=jnp.zeros(3),
  )
  best, improved = selection.update_best(best, params, first)
  np.testing.assert_array_equal(improved, [True, True, True])
  np.testing.assert_allclose(best.rmse, [2.0, 3.0, 1.0])

  newer = {"w": params["w"] * 10}
  # RMSEs 1, 4 and NaN (no rating): only member 0 improves.
  second = first._replace(
    squared=jnp.array([1.0, 16.0, 0.0]), count=jnp.array([1.0, 1.0, 0.0])
  )
  best, improved = selection.update_best(best, newer, second)
  np.testing.assert_array_equal(improved, [True, False, False])
  np.testing.assert_array_equal(
    best.params["w"], [[10.0, 10.0], [2.0, 2.0], [3.0, 3.0]]
  )
  np.testing.assert_allclose(best.rmse, [1.0, 3.0, 1.0])


def test_early_stopping_counts_epochs_since_any_improvement():
  stopping = selection.EarlyStopping.create(patience=2, n_members=2)
  assert not stopping.update(1, np.array([True, True]))
  assert not stopping.update(2, np.array([False, True]))
  assert not stopping.update(3, np.array([False, False]))
  assert stopping.update(4, np.array([False, False]))
  np.testing.assert_array_equal(stopping.best_epoch, [1, 2])
  never = selection.EarlyStopping.create(patience=0, n_members=1)
  assert not any(never.update(e, np.array([False])) for e in range(1, 50))


def _records(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  for record in records:
    record.pop("seconds")
  return records


def _with_test(data, users, items, values):
  test = Ratings(
    np.asarray(users, np.int32),
    np.asarray(items, np.int32),
    np.asarray(values, np.float32),
    data.n_users,
    data.n_items,
  )
  return movielens.SplitData(
    name=data.name,
    split=data.split,
    train=data.train,
    test=test,
    user_ids=data.user_ids,
    item_ids=data.item_ids,
    titles=data.titles,
  )


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
  """Two runs that differ only in their test ratings: different values at
  different places, one set of them absurd (1000)."""
  folder = tmp_path_factory.mktemp("twins")
  rows = synthetic_rows(n_users=14, n_items=22)
  data_dir = folder / "ml-100k"
  data_dir.mkdir()
  write_ratings(data_dir / "u1.base", rows)
  # A test file that only fixes the id universe (adding a user and an item
  # without training ratings); its ratings are replaced below.
  write_ratings(data_dir / "u1.test", [(1, 99, 3, 0), (99, 1, 4, 0)])
  data = movielens.load("ml-100k", "u1", data_dir=data_dir)
  cold_user, cold_item = data.n_users - 1, data.n_items - 1
  train_pairs = set(
    zip(data.train.users.tolist(), data.train.items.tolist(), strict=True)
  )
  free = [
    (u, i)
    for u in range(data.n_users)
    for i in range(data.n_items)
    if (u, i) not in train_pairs
  ]
  rng = np.random.default_rng(0)
  cold = [(cold_user, 0), (0, cold_item), (cold_user, 1), (1, cold_item)]
  warm = [pair for pair in free if pair not in cold]
  picks = [warm[k] for k in rng.choice(len(warm), 36, replace=False)]
  picks = cold[:2] + picks[:18] + cold[2:] + picks[18:]
  users, items = zip(*picks, strict=True)
  honest = _with_test(data, users[:20], items[:20], rng.integers(1, 6, 20))
  absurd = _with_test(data, users[20:], items[20:], np.full(20, 1000.0))

  config = variants.get_config(
    "autorec",
    hidden_sizes=(8,),
    epochs=10,
    batch_size=4,
    learning_rate=3e-2,
    noise_rate=0.1,
    seeds=2,
    ensemble=True,
    valid_fraction=0.25,
    patience=3,
    cold_start_predictor="bias",
  )
  first = fit.fit(config, honest, folder / "a")
  second = fit.fit(config, absurd, folder / "b")
  return folder, first, second


def test_selected_parameters_reproduce_the_best_validation_epoch(twin_runs):
  """With an ensemble, its members are kept at the epoch where the
  ensemble's validation RMSE is lowest; scoring them again after training
  gives that epoch's figures."""
  folder, results, _ = twin_runs
  records = _records(folder / "a")
  valid = np.array([r["valid_rmse"] for r in records])
  ensemble = np.array([r["ensemble_valid_rmse"][0] for r in records])
  assert results["epochs_run"] == len(records) <= 10
  best_epoch = int(np.argmin(ensemble)) + 1
  for index, member in enumerate(results["members"]):
    assert member["selected_epoch"] == best_epoch
    assert member["valid_rmse"] == pytest.approx(
      valid[best_epoch - 1, index], rel=1e-5
    )
  assert results["ensemble_valid_rmse"] == pytest.approx(
    ensemble[best_epoch - 1], rel=1e-5
  )
  if results["epochs_run"] < 10:
    assert results["epochs_run"] == best_epoch + 3


def test_members_alone_are_kept_at_their_own_best_epochs(tiny_split, tmp_path):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = variants.get_config(
    "plain",
    hidden_sizes=(6,),
    epochs=6,
    batch_size=4,
    learning_rate=3e-2,
    sweep=(("learning_rate", (3e-2, 1e-1)),),
    valid_fraction=0.3,
  )
  results = fit.fit(config, data, tmp_path / "run")
  valid = np.array([r["valid_rmse"] for r in _records(tmp_path / "run")])
  for index, member in enumerate(results["members"]):
    assert member["selected_epoch"] == int(np.argmin(valid[:, index])) + 1
    assert member["valid_rmse"] == pytest.approx(
      valid.min(axis=0)[index], rel=1e-5
    )
  # The swept setting with the lower validation RMSE is the one reported.
  chosen = int(np.argmin([m["valid_rmse"] for m in results["members"]]))
  assert results["selected"]["predictor"] == f"member {chosen}"
  assert (
    results["selected_test_rmse"] == results["members"][chosen]["test_rmse"]
  )


def test_test_ratings_reach_no_input_decision_or_statistic(twin_runs):
  """Everything before the final test scores is identical in the twin
  runs: every epoch's training and validation figures, the epochs chosen
  and run, the kept parameters, the cold-start predictor and clipping
  range, and the baselines' validation figures."""
  folder, first, second = twin_runs
  assert _records(folder / "a") == _records(folder / "b")
  for name in ("epochs_run", "valid_rmse", "ensemble_valid_rmse"):
    assert first[name] == second[name], name
  for a, b in zip(first["members"], second["members"], strict=True):
    assert a["selected_epoch"] == b["selected_epoch"]
    assert a["valid_rmse"] == b["valid_rmse"]
  for a, b in zip(first["baselines"], second["baselines"], strict=True):
    assert a["valid_rmse"] == b["valid_rmse"]
  with (
    np.load(folder / "a" / "selected.npz") as saved_a,
    np.load(folder / "b" / "selected.npz") as saved_b,
  ):
    assert saved_a.files == saved_b.files
    for name in saved_a.files:
      np.testing.assert_array_equal(saved_a[name], saved_b[name], name)
    # The clipping range is the training ratings', not the test's 1000.
    assert float(saved_a["scoring/high"]) <= 5.0
  # The test figures did read the test ratings, once, at the end, and
  # counted all of them, those of the new user and item included.
  assert first["test_rmse"] < 5 < second["test_rmse"]
  assert first["test_ratings"] == second["test_ratings"] == 20


def test_validation_selects_the_setting(twin_runs):
  _, results, _ = twin_runs
  # One setting: its ensemble is the selected predictor.
  assert results["selected"]["predictor"] == "ensemble 0"
  assert results["selected_test_rmse"] == results["ensemble_test_rmse"]


def test_selection_settings_are_validated():
  with pytest.raises(ValueError, match="patience=5 needs a validation set"):
    variants.get_config("plain", patience=5)
  with pytest.raises(ValueError, match="needs seeds >= 2, not 1"):
    variants.get_config("autorec", ensemble=True)
  with pytest.raises(ValueError, match=r"valid_fraction must lie in \[0, 1\)"):
    variants.get_config("autorec", valid_fraction=1.5)
