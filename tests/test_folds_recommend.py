"""The five-fold protocol and the recommendation script, as a user runs
them, on tiny synthetic folds with titles."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import run_module as run
from conftest import synthetic_rows, write_ratings

from aejax import blend, fit, folds, recommend, variants
from aejax.data import movielens
from aejax.runs import FinishedRun

N_ITEMS = 20


def test_fold_configs():
  config = variants.get_config("autorec")
  assert [c.split for c in folds.fold_configs(config, 5)] == [
    "u1",
    "u2",
    "u3",
    "u4",
    "u5",
  ]
  random = variants.get_config("autorec", split="random", seed=4)
  assert [c.seed for c in folds.fold_configs(random, 3)] == [4, 5, 6]
  assert folds.fold_name(folds.fold_configs(random, 3)[1]) == "seed-5"
  with pytest.raises(ValueError, match="ML-100k has 5 folds, not 6"):
    folds.fold_configs(config, 6)
  with pytest.raises(ValueError, match="split 'ua' has no folds"):
    folds.fold_configs(variants.get_config("autorec", split="ua"), 2)


@pytest.fixture(scope="module")
def two_fold_run(tmp_path_factory):
  folder = tmp_path_factory.mktemp("folds")
  data_dir = folder / "ml-100k"
  data_dir.mkdir()
  rows = synthetic_rows(n_users=10, n_items=N_ITEMS, density=0.5)
  rng = np.random.default_rng(3)
  fold_of = rng.integers(0, 2, len(rows))
  for fold in (0, 1):
    name = f"u{fold + 1}"
    held = fold_of == fold
    write_ratings(
      data_dir / f"{name}.base",
      [r for r, h in zip(rows, held, strict=True) if not h],
    )
    write_ratings(
      data_dir / f"{name}.test",
      [r for r, h in zip(rows, held, strict=True) if h],
    )
  titles = [f"{i}|Movie {i} ({1990 + i})|01-Jan-1990" for i in range(1, 21)]
  titles[6] = "7|Café Society (1996)|01-Jan-1996"
  (data_dir / "u.item").write_bytes("\n".join(titles).encode("latin-1"))
  workdir = folder / "run"
  result = run(
    "experiments.movielens",
    "--variant=autorec",
    f"--data_dir={data_dir}",
    f"--workdir={workdir}",
    "--folds=2",
    "--epochs=3",
    "--hidden_sizes=6",
    "--seeds=2",
    "--ensemble",
    "--valid_fraction=0.2",
    cache=folder / "cache",
  )
  return data_dir, workdir, rows, fold_of, result


def test_folds_report_mean_and_std_over_folds(two_fold_run):
  _, workdir, _, _, result = two_fold_run
  assert result.returncode == 0, result.stderr
  assert "folds u1, u2: mean +- standard deviation" in result.stdout
  assert "Selected on validation: ensemble 0" in result.stdout
  assert re.search(r"\| user \+ item biases +\| [0-9.]+ \+- ", result.stdout)
  summary = json.loads((workdir / "folds.json").read_text())
  assert summary["folds"] == ["u1", "u2"]
  per_fold = [
    json.loads((workdir / name / "results.json").read_text())
    for name in ("u1", "u2")
  ]
  for key in (
    "test_rmse",
    "ensemble_test_rmse",
    "valid_rmse",
    "selected_test_rmse",
  ):
    values = [r[key] for r in per_fold]
    assert summary["model"][key] == pytest.approx(np.mean(values))
    assert summary["model"][f"{key}_std"] == pytest.approx(
      np.std(values, ddof=1)
    )
  biases = [
    next(b for b in r["baselines"] if b["name"] == "user + item biases")
    for r in per_fold
  ]
  assert summary["baselines"]["user + item biases"][
    "test_rmse"
  ] == pytest.approx(np.mean([b["test_rmse"] for b in biases]))


def test_recommend_lists_unrated_movies_with_titles(two_fold_run):
  data_dir, workdir, rows, fold_of, _ = two_fold_run
  result = run(
    "experiments.recommend",
    f"--workdir={workdir / 'u1'}",
    f"--data_dir={data_dir}",
    "--user=3",
    "--top=4",
    cache=workdir / "cache",
  )
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert "Top 4 unrated movies for user 3" in out
  assert "top-rated training movies" in out

  listed = recommend.recommend(workdir / "u1", 3, top=4, data_dir=data_dir)
  assert len(listed.items) == 4
  predicted = [r.predicted for r in listed.items]
  assert predicted == sorted(predicted, reverse=True)
  for item in listed.items:
    assert f"| {item.title} " in out
  # None of them was rated by user 3 in fold u1's training ratings (the
  # validation carve is part of them).
  trained = {
    r[1] for r, f in zip(rows, fold_of, strict=True) if f != 0 and r[0] == 3
  }
  assert not trained & {r.item_id for r in listed.items}
  held = {
    r[1]: r[2]
    for r, f in zip(rows, fold_of, strict=True)
    if f == 0 and r[0] == 3
  }
  for item in listed.items:
    assert item.held_out == held.get(item.item_id)
  ratings = [rating for _, _, rating in listed.history]
  assert ratings == sorted(ratings, reverse=True)
  assert {i for i, _, _ in listed.history} <= trained
  data = movielens.load("ml-100k", "u1", data_dir=data_dir)
  assert data.titles[7] == "Café Society (1996)"
  for item in listed.items:
    assert item.title == data.titles[item.item_id]

  with pytest.raises(ValueError, match="user 99 is not in ml-100k"):
    recommend.recommend(workdir / "u1", 99, data_dir=data_dir)


def test_blend_weights_recover_a_mixture():
  rng = np.random.default_rng(0)
  predictions = rng.normal(3.0, 1.0, (2, 500))
  targets = 0.3 * predictions[0] + 0.7 * predictions[1]
  np.testing.assert_allclose(
    blend.blend_weights(predictions, targets), [0.3, 0.7], atol=1e-6
  )
  noisy = targets + rng.normal(0, 0.1, 500)
  assert blend.blend_weights(predictions, noisy).sum() == pytest.approx(1.0)


def test_blend_of_item_and_user_runs(two_fold_run, tmp_path):
  data_dir, workdir, _, _, _ = two_fold_run
  data = movielens.load("ml-100k", "u1", data_dir=data_dir)
  user_rows = variants.get_config(
    "autorec",
    orientation="user",
    epochs=3,
    hidden_sizes=(6,),
    seeds=2,
    ensemble=True,
    valid_fraction=0.2,
  )
  fit.fit(user_rows, data, tmp_path / "user")
  runs = [workdir / "u1", tmp_path / "user"]
  out = blend.blend(runs, tmp_path / "blend", data_dir=data_dir)

  weights = np.array([r["weight"] for r in out["runs"]])
  assert weights.sum() == pytest.approx(1.0)
  # Each run alone is a feasible blend: the fitted one is no worse on the
  # ratings it was fitted on.
  assert (
    out["blend"]["valid_rmse"]
    <= min(r["valid_rmse"] for r in out["runs"]) + 1e-9
  )
  loaded = [FinishedRun.load(run, data_dir) for run in runs]
  test = loaded[0].data.test
  mixed = sum(
    w * r.predict_matrix() for w, r in zip(weights, loaded, strict=True)
  )
  train_values = loaded[0].data.train.values
  expected = np.clip(mixed, train_values.min(), train_values.max())
  expected = expected[test.users, test.items]
  assert out["blend"]["test_rmse"] == pytest.approx(
    np.sqrt(np.mean((expected - test.values) ** 2)), rel=1e-5
  )
  saved = json.loads((tmp_path / "blend" / "blend.json").read_text())
  assert saved["blend"]["test_rmse"] == out["blend"]["test_rmse"]

  with pytest.raises(ValueError, match="differ in split"):
    blend.blend([workdir / "u1", workdir / "u2"], tmp_path / "x", data_dir)


def test_recommend_refuses_other_ratings_than_the_run_saw(
  two_fold_run, tmp_path
):
  data_dir, workdir, *_ = two_fold_run
  altered = tmp_path / "ml-100k"
  shutil.copytree(data_dir, altered)
  base = altered / "u1.base"
  lines = base.read_text().splitlines()
  user, item, rating, stamp = lines[0].split("\t")
  lines[0] = "\t".join([user, item, "1" if rating != "1" else "5", stamp])
  base.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match="trained on other ratings"):
    recommend.recommend(workdir / "u1", 3, top=4, data_dir=altered)
  recommend.recommend(workdir / "u1", 3, top=4, data_dir=data_dir)
