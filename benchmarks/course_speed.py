r"""Epoch time of the tutorial's per-user training: aejax against PyTorch.

One epoch is 943 one-user steps on ML-100k u1 with the tutorial's faithful
set-up (``--variant=course --faithful``: gradient sums, first lines lost).
The script times, in the same process and on the same data, PyTorch's
reference (``benchmarks/torch_reference.py``), one aejax model, and
``--members`` aejax members vmapped into one program. Rounds interleave
the three so that they share the machine's load; after a warm-up epoch
each (compilation included for aejax) it prints the minimum and median
wall time per epoch, the minimum process CPU time (all threads; on a
loaded machine it shows the work done rather than the time spent
waiting), and the ratios:

- one model: PyTorch's epoch time / ours;
- members: PyTorch's per-model throughput against ours, i.e.
  ``members * t_torch / t_members``.

It needs torch beside aejax, for instance

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install -e . torch==2.13.0
  /tmp/torchvenv/bin/python -m benchmarks.course_speed
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import jax
import numpy as np

from aejax import batching, train, variants
from aejax.data import movielens
from aejax.data.ratings import Rows


def aejax_epoch(rows: Rows, n_members: int) -> Callable[[int], None]:
  """A function that trains ``n_members`` course models for one epoch."""
  config = variants.get_config("course", seeds=n_members, **variants.FAITHFUL)
  members = variants.members(config)
  program = train.make_program(config, rows.n_columns, members)
  states, hyper = train.init_members(program, members)
  device_rows = batching.DeviceRows.put(rows)
  epoch_fn = (
    train.make_epoch_fn(program, rows, config.batch_size)
    .lower(states, hyper, device_rows, np.int32(0))
    .compile()
  )
  holder = {"states": states}

  def run(epoch: int) -> None:
    states, totals = epoch_fn(
      holder["states"], hyper, device_rows, np.int32(epoch)
    )
    jax.block_until_ready((states, totals))
    holder["states"] = states

  return run


def torch_epoch(data, threads: int) -> Callable[[int], None]:
  """A function that trains PyTorch's reference for one epoch."""
  import torch

  from benchmarks import torch_reference

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  shape = (data.n_users, data.n_items)
  ratings = torch_reference.dense_ratings(
    data.train.users, data.train.items, data.train.values, shape
  )
  model = torch_reference.TutorialAutoencoder(data.n_items)
  optimizer = torch_reference.make_optimizer(model)

  def run(epoch: int) -> None:
    del epoch
    torch_reference.train_epoch(model, optimizer, ratings, accumulate=True)

  return run


def timed(run: Callable[[int], None], epoch: int) -> tuple[float, float]:
  wall, cpu = time.perf_counter(), time.process_time()
  run(epoch)
  return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--members", type=int, default=8)
  parser.add_argument(
    "--torch_threads",
    type=int,
    default=1,
    help="PyTorch intra-op threads; one is its fastest here",
  )
  args = parser.parse_args()

  data = movielens.load("ml-100k", "u1", drop_first_line=True)
  rows = Rows.from_ratings(data.train, "user")
  runners = {
    "pytorch": torch_epoch(data, args.torch_threads),
    "aejax, 1 model": aejax_epoch(rows, 1),
    f"aejax, {args.members} members": aejax_epoch(rows, args.members),
  }
  load_before = os.getloadavg()[0]
  for run in runners.values():
    run(0)  # warm-up (and compilation)
  times = {name: [] for name in runners}
  for epoch in range(1, args.rounds + 1):
    for name, run in runners.items():
      times[name].append(timed(run, epoch))
  load_after = os.getloadavg()[0]

  print(
    f"{rows.n_rows} one-user steps per epoch, {args.rounds} rounds; "
    f"load average {load_before:.1f} before, {load_after:.1f} after; "
    f"{os.cpu_count()} CPUs, PyTorch threads {args.torch_threads}"
  )
  print(f"{'':22s} {'min s':>8s} {'median s':>9s} {'cpu min s':>10s}")
  summary = {}
  for name, pairs in times.items():
    wall = np.array([w for w, _ in pairs])
    cpu = np.array([c for _, c in pairs])
    summary[name] = {
      "min": float(wall.min()),
      "median": float(np.median(wall)),
      "cpu_min": float(cpu.min()),
    }
    print(
      f"{name:22s} {wall.min():8.4f} {np.median(wall):9.4f} {cpu.min():10.4f}"
    )
  torch_times = summary["pytorch"]
  one = summary["aejax, 1 model"]
  many = summary[f"aejax, {args.members} members"]
  ratios = {}
  for stat in ("min", "median", "cpu_min"):
    ratios[f"one_model_{stat}"] = torch_times[stat] / one[stat]
    ratios[f"members_throughput_{stat}"] = (
      args.members * torch_times[stat] / many[stat]
    )
  print(
    f"one model: {ratios['one_model_min']:.1f}x faster than PyTorch "
    f"(min), {ratios['one_model_median']:.1f}x (median); target 20x"
  )
  print(
    f"{args.members} members: {ratios['members_throughput_min']:.1f}x "
    f"PyTorch's per-model throughput (min), "
    f"{ratios['members_throughput_median']:.1f}x (median); target 40x"
  )
  print(
    f"by process CPU time (unaffected by waiting for a loaded CPU): one "
    f"model {ratios['one_model_cpu_min']:.1f}x, {args.members} members "
    f"{ratios['members_throughput_cpu_min']:.1f}x"
  )
  print(json.dumps({"seconds": summary, "ratios": ratios}))


if __name__ == "__main__":
  main()
