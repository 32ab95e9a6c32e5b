"""The sparse and deep variants train as members sweeps.

The pretrained stacked variant's sweep over seeds is covered by
test_pretrain.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from aejax import fit, variants
from aejax.data import movielens

# Each variant shrunk to the tiny data set (20 movies), with one swept
# hyper-parameter crossed with two seeds.
CASES = {
  "sparse": {
    "hidden_sizes": (30,),
    "sweep": (("sparsity_weight", (0.01, 0.1)),),
  },
  "deep": {
    "hidden_sizes": (8, 4, 8),
    "pretrain_epochs": 1,
    "sweep": (("learning_rate", (1e-3, 1e-2)),),
  },
}


@pytest.mark.parametrize("variant", sorted(CASES))
def test_variant_trains_every_member_of_a_sweep(variant, tiny_split, tmp_path):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  config = variants.get_config(
    variant, epochs=2, batch_size=4, seeds=2, **CASES[variant]
  )
  results = fit.fit(config, data, tmp_path / "run")
  ((name, values),) = config.sweep
  members = results["members"]
  assert [(m[name], m["seed"]) for m in members] == [
    (values[0], 0),
    (values[0], 1),
    (values[1], 0),
    (values[1], 1),
  ]
  assert all(np.isfinite(m["test_rmse"]) for m in members)
  # Two epochs leave test predictions clipped alike; training errors (not
  # clipped) tell the members apart.
  assert len({m["train_rmse"] for m in members}) == 4
  if config.pretrain_epochs:
    lines = (tmp_path / "run" / "pretrain.jsonl").read_text().splitlines()
    for line in lines:
      loss = json.loads(line)["loss"]
      # Pretraining depends on the seed, not on the fine-tuning's rate.
      assert loss[0] == loss[2] != loss[1] == loss[3]


def test_every_variant_is_registered_and_valid():
  for name in ("sparse", "deep", "stacked_pretrained"):
    assert variants.validate(variants.VARIANTS[name]).variant == name
  sparse = variants.VARIANTS["sparse"]
  assert sparse.hidden_sizes[0] > 1682 and sparse.sparsity_weight > 0
  assert variants.VARIANTS["deep"].pretrain == "rbm"
  stacked = variants.VARIANTS["stacked_pretrained"]
  assert stacked.pretrain == "denoising" and stacked.pretrain_epochs > 0
