r"""Training speed and peak memory on ML-20M-shaped synthetic data.

  python benchmarks/scale.py
  python benchmarks/scale.py --sizes=1000000 --hidden_sizes=100

For each size (default 1M, 5M and 20M ratings) a fresh process generates
synthetic ratings with ML-20M's 26,744 items and its mean of 144.4 ratings
per user (so 20M ratings are ML-20M's 138,493 users), holds out 10%, and
trains one epoch of the chosen variant at batch size 256 through the same
functions ``aejax.fit`` uses: CSR rows on the device, each batch densified
on demand. It then evaluates once on the held-out ratings. Each process
reports its peak resident memory (``ru_maxrss``), which covers generation,
the CSR rows, the model and optimizer state, compilation and both passes;
the full users x items matrix (15 GB at 20M ratings) is never built.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import app, flags

_SIZES = flags.DEFINE_list(
  "sizes", ["1000000", "5000000", "20000263"], "Ratings per data set."
)
_VARIANT = flags.DEFINE_string("variant", "plain", "Which autoencoder.")
_HIDDEN_SIZES = flags.DEFINE_list(
  "hidden_sizes", ["500"], "Hidden layer widths."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Rows per step.")
_EVAL_BATCH_SIZE = flags.DEFINE_integer(
  "eval_batch_size", 256, "Rows per evaluation step."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data and the model.")
_ONE_SIZE = flags.DEFINE_integer(
  "one_size", None, "Internal: measure this size in this process."
)
_TIMEOUT = flags.DEFINE_integer(
  "timeout", 3600, "Seconds allowed for one size."
)


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n_ratings: int) -> dict:
  """Generates, compiles, trains one epoch and evaluates; returns figures."""
  import jax
  import numpy as np

  from aejax import batching, evaluation, train, variants
  from aejax.data import synthetic
  from aejax.data.ratings import Rows

  started = time.perf_counter()
  shape = synthetic.ml20m_like(n_ratings)
  data = synthetic.split(synthetic.generate(shape, _SEED.value), 0.1, 0)
  generate_seconds = time.perf_counter() - started

  config = variants.get_config(
    _VARIANT.value,
    dataset="ml-100k",
    split="random",
    hidden_sizes=tuple(int(h) for h in _HIDDEN_SIZES.value),
    batch_size=_BATCH_SIZE.value,
    eval_batch_size=_EVAL_BATCH_SIZE.value,
    seed=_SEED.value,
    epochs=1,
  )
  members = variants.members(config)
  train_rows = Rows.from_ratings(data.train, config.orientation)
  test_rows = Rows.from_ratings(data.test, config.orientation)
  n_train = train_rows.nnz
  del data
  program = train.make_program(config, train_rows.n_columns, members)
  states, hyper = train.init_members(program, members)
  device_rows = batching.DeviceRows.put(train_rows)
  test_data = evaluation.eval_targets(
    train_rows, test_rows, config.eval_batch_size, inputs=device_rows
  )
  weights = evaluation.predictor_weights(len(members))

  started = time.perf_counter()
  epoch_fn = (
    train.make_epoch_fn(program, train_rows, config.batch_size)
    .lower(states, hyper, device_rows, np.int32(0))
    .compile()
  )
  eval_fn = (
    evaluation.make_eval_fn(
      program, train_rows, test_rows, config.eval_batch_size
    )
    .lower(states.params, hyper, test_data, weights)
    .compile()
  )
  compile_seconds = time.perf_counter() - started

  started = time.perf_counter()
  states, totals = epoch_fn(states, hyper, device_rows, np.int32(0))
  totals = jax.device_get(totals)
  epoch_seconds = time.perf_counter() - started

  started = time.perf_counter()
  test_totals = jax.device_get(
    eval_fn(states.params, hyper, test_data, weights)
  )
  eval_seconds = time.perf_counter() - started

  device_peak = None
  stats = jax.devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    device_peak = stats["peak_bytes_in_use"] / 2**20
  train_rmse = float(np.sqrt(totals.errors.squared / totals.errors.count)[0])
  test_rmse = float(np.sqrt(test_totals.squared / test_totals.count)[0])
  return {
    "ratings": n_ratings,
    "users": shape.n_users,
    "items": shape.n_items,
    "train_ratings": n_train,
    "batch_capacity": train_rows.batch_capacity(config.batch_size),
    "steps": int(totals.steps[0]),
    "generate_s": generate_seconds,
    "compile_s": compile_seconds,
    "epoch_s": epoch_seconds,
    "train_ratings_per_s": n_train / epoch_seconds,
    "eval_s": eval_seconds,
    "train_rmse": train_rmse,
    "test_rmse": test_rmse,
    "peak_rss_mib": peak_rss_mib(),
    "device_peak_mib": device_peak,
    "device": str(jax.devices()[0]),
  }


def run_size(n_ratings: int, argv: list[str]) -> dict:
  """Runs ``measure`` in a fresh process, so peak memory is its own."""
  forwarded = [a for a in argv[1:] if not a.startswith("--sizes")]
  result = subprocess.run(
    [sys.executable, argv[0], *forwarded, f"--one_size={n_ratings}"],
    capture_output=True,
    text=True,
    timeout=_TIMEOUT.value,
    check=False,
  )
  if result.returncode:
    sys.stderr.write(result.stderr[-4000:])
    raise SystemExit(f"size {n_ratings} failed with {result.returncode}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
  if _ONE_SIZE.value is not None:
    print(json.dumps(measure(_ONE_SIZE.value)), flush=True)
    return

  print(
    f"{_VARIANT.value}, hidden {','.join(_HIDDEN_SIZES.value)}, batch "
    f"{_BATCH_SIZE.value}, one epoch; {os.cpu_count()} CPUs"
  )
  header = (
    f"{'ratings':>10} {'users':>7} {'items':>6} {'capacity':>8} "
    f"{'gen s':>6} {'compile s':>9} {'epoch s':>8} {'ratings/s':>10} "
    f"{'eval s':>7} {'test RMSE':>9} {'peak RSS MiB':>12}"
  )
  print(header)
  for size in _SIZES.value:
    r = run_size(int(size), argv)
    print(
      f"{r['ratings']:>10} {r['users']:>7} {r['items']:>6} "
      f"{r['batch_capacity']:>8} {r['generate_s']:>6.1f} "
      f"{r['compile_s']:>9.1f} {r['epoch_s']:>8.1f} "
      f"{r['train_ratings_per_s']:>10.0f} {r['eval_s']:>7.1f} "
      f"{r['test_rmse']:>9.4f} {r['peak_rss_mib']:>12.0f}",
      flush=True,
    )
    print(json.dumps(r), file=sys.stderr, flush=True)


if __name__ == "__main__":
  app.run(main)
