r"""Writes tests/data/torch_parity.json: PyTorch's numbers for a tiny course.

Six users (one without ratings) and eight movies, the tutorial's network
shape scaled down to 8-5-3-5-8, one epoch in user order (five updates),
with the gradients cleared before each step and with the tutorial's
accumulation. The file holds the ratings, PyTorch's initial parameters,
and for each run the parameters after the epoch, the tutorial's train
loss and its test loss. ``tests/test_course.py`` replays the same epoch
with aejax from the same initial parameters; it needs no torch.

  /tmp/torchvenv/bin/python -m benchmarks.torch_parity_fixture
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

from benchmarks import torch_reference

OUTPUT = (
  pathlib.Path(__file__).resolve().parent.parent
  / "tests"
  / "data"
  / "torch_parity.json"
)
N_USERS, N_MOVIES = 6, 8
EMPTY_USER = 3
HIDDEN_SIZES = (5, 3, 5)
SEED = 0


def make_ratings(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Integer train and test ratings, 0 where unrated, disjoint."""
  rng = np.random.default_rng(seed)
  ratings = rng.integers(1, 6, (N_USERS, N_MOVIES)).astype(np.float32)
  observed = rng.random((N_USERS, N_MOVIES)) < 0.6
  held_out = observed & (rng.random((N_USERS, N_MOVIES)) < 0.25)
  train = np.where(observed & ~held_out, ratings, 0.0).astype(np.float32)
  test = np.where(held_out, ratings, 0.0).astype(np.float32)
  train[EMPTY_USER] = 0.0
  return train, test


def as_lists(layers: list[dict[str, np.ndarray]]) -> list[dict[str, list]]:
  return [
    {name: array.tolist() for name, array in layer.items()} for layer in layers
  ]


def main() -> None:
  train, test = make_ratings(SEED)
  torch.manual_seed(SEED)
  initial = torch_reference.TutorialAutoencoder(N_MOVIES, HIDDEN_SIZES)
  record = {
    "torch_version": torch.__version__,
    "hidden_sizes": list(HIDDEN_SIZES),
    "learning_rate": torch_reference.LEARNING_RATE,
    "weight_decay": torch_reference.WEIGHT_DECAY,
    "train": train.tolist(),
    "test": test.tolist(),
    "initial": as_lists(torch_reference.layer_arrays(initial)),
    "runs": {},
  }
  train_tensor, test_tensor = torch.from_numpy(train), torch.from_numpy(test)
  for name, accumulate in (("cleared", False), ("accumulated", True)):
    model = torch_reference.clone(initial)
    optimizer = torch_reference.make_optimizer(model)
    train_loss = torch_reference.train_epoch(
      model, optimizer, train_tensor, accumulate=accumulate
    )
    record["runs"][name] = {
      "accumulate": accumulate,
      "steps": int((train > 0).any(axis=1).sum()),
      "train_loss": train_loss,
      "test_loss": torch_reference.evaluate(model, train_tensor, test_tensor),
      "final": as_lists(torch_reference.layer_arrays(model)),
    }
  OUTPUT.parent.mkdir(parents=True, exist_ok=True)
  OUTPUT.write_text(json.dumps(record, indent=1) + "\n")
  print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")


if __name__ == "__main__":
  main()
