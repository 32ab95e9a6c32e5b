r"""The tutorial's PyTorch autoencoder, reimplemented as a reference.

A 1682-20-10-20-1682 network with sigmoid hidden layers, trained one user
per step in id order with ``nn.MSELoss`` on an output zeroed where the
user has no rating, and ``torch.optim.RMSprop(lr=0.01, weight_decay=0.5)``.
The tutorial's loop never calls ``zero_grad()``, so every step uses the
sum of all gradients of the run; ``accumulate=False`` clears them first.
Its printed "loss" is each user's ``sqrt(MSE * n_movies / n_rated)``,
averaged over users with ratings, measured before that user's update.

The parity fixture and ``benchmarks/course_speed.py`` use this module.
It needs torch, which aejax itself never imports: run it from a separate
environment that has both, for instance

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install -e . torch==2.13.0
  /tmp/torchvenv/bin/python -m benchmarks.torch_reference --faithful
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

HIDDEN_SIZES = (20, 10, 20)
LEARNING_RATE = 0.01
WEIGHT_DECAY = 0.5


class TutorialAutoencoder(nn.Module):
  """``n_movies -> hidden_sizes -> n_movies``, sigmoid on all but the last."""

  def __init__(self, n_movies: int, hidden_sizes: Sequence[int] = HIDDEN_SIZES):
    super().__init__()
    sizes = (n_movies, *hidden_sizes, n_movies)
    self.layers = nn.ModuleList(
      nn.Linear(a, b) for a, b in itertools.pairwise(sizes)
    )

  def forward(self, inputs: torch.Tensor) -> torch.Tensor:
    hidden = inputs
    for layer in self.layers[:-1]:
      hidden = torch.sigmoid(layer(hidden))
    return self.layers[-1](hidden)


def make_optimizer(
  model: nn.Module,
  learning_rate: float = LEARNING_RATE,
  weight_decay: float = WEIGHT_DECAY,
) -> torch.optim.Optimizer:
  """The tutorial's optimizer; PyTorch's defaults alpha 0.99, eps 1e-8."""
  return torch.optim.RMSprop(
    model.parameters(), lr=learning_rate, weight_decay=weight_decay
  )


def train_epoch(
  model: nn.Module,
  optimizer: torch.optim.Optimizer,
  ratings: torch.Tensor,
  accumulate: bool,
) -> float:
  """One pass over the users in order; returns the tutorial's train loss.

  Args:
    model: the autoencoder, updated in place.
    optimizer: its optimizer.
    ratings: ``(n_users, n_movies)`` float32, 0 where unrated.
    accumulate: keep the gradients of all earlier steps (the tutorial);
      False clears them before each backward pass.

  Returns:
    The mean over users with ratings of ``sqrt(MSE * n_movies / n_rated)``.
  """
  criterion = nn.MSELoss()
  n_movies = ratings.shape[1]
  total, counted = 0.0, 0
  for user in range(ratings.shape[0]):
    inputs = ratings[user].unsqueeze(0)
    target = inputs.clone()
    n_rated = int(torch.sum(target > 0))
    if n_rated == 0:
      continue
    if not accumulate:
      optimizer.zero_grad()
    output = model(inputs)
    output[target == 0] = 0
    loss = criterion(output, target)
    loss.backward()
    total += math.sqrt(loss.item() * n_movies / (n_rated + 1e-10))
    counted += 1
    optimizer.step()
  return total / max(counted, 1)


@torch.no_grad()
def evaluate(
  model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> float:
  """The tutorial's test loss: training rows in, held-out rows scored.

  Returns:
    The mean over users with a held-out rating of their RMSE on those
    ratings (the course RMSE), from raw, unclipped predictions.
  """
  criterion = nn.MSELoss()
  n_movies = inputs.shape[1]
  total, counted = 0.0, 0
  for user in range(inputs.shape[0]):
    target = targets[user].unsqueeze(0)
    n_rated = int(torch.sum(target > 0))
    if n_rated == 0:
      continue
    output = model(inputs[user].unsqueeze(0))
    output[target == 0] = 0
    loss = criterion(output, target)
    total += math.sqrt(loss.item() * n_movies / (n_rated + 1e-10))
    counted += 1
  return total / max(counted, 1)


def dense_ratings(
  users: np.ndarray, items: np.ndarray, values: np.ndarray, shape
) -> torch.Tensor:
  """A float32 ``(n_users, n_movies)`` tensor, 0 where unrated."""
  matrix = np.zeros(shape, np.float32)
  matrix[users, items] = values
  return torch.from_numpy(matrix)


def layer_arrays(model: nn.Module) -> list[dict[str, np.ndarray]]:
  """Each layer's ``weight`` (out x in, PyTorch's layout) and ``bias``."""
  return [
    {
      "weight": layer.weight.detach().numpy().copy(),
      "bias": layer.bias.detach().numpy().copy(),
    }
    for layer in model.layers
  ]


def clone(model: nn.Module) -> nn.Module:
  """An independent copy of ``model`` (parameters included)."""
  return copy.deepcopy(model)


def main() -> None:
  """Trains the tutorial's model on ML-100k u1 and prints its losses."""
  import argparse

  from aejax.data import movielens

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, default=200)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--threads",
    type=int,
    default=1,
    help="torch intra-op threads (one is fastest for this tiny network)",
  )
  parser.add_argument(
    "--faithful",
    action="store_true",
    help="accumulate gradients and drop each file's first line",
  )
  args = parser.parse_args()

  data = movielens.load("ml-100k", "u1", drop_first_line=args.faithful)
  shape = (data.n_users, data.n_items)
  train = dense_ratings(
    data.train.users, data.train.items, data.train.values, shape
  )
  test = dense_ratings(
    data.test.users, data.test.items, data.test.values, shape
  )
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  model = TutorialAutoencoder(data.n_items)
  optimizer = make_optimizer(model)
  started = time.perf_counter()
  for epoch in range(1, args.epochs + 1):
    loss = train_epoch(model, optimizer, train, accumulate=args.faithful)
    print(f"epoch: {epoch} loss: {loss:.4f}")
  seconds = time.perf_counter() - started
  print(f"test loss: {evaluate(model, train, test):.4f}")
  print(f"{seconds:.1f} s, {seconds / args.epochs:.3f} s per epoch")


if __name__ == "__main__":
  main()
