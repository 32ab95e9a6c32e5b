r"""Wall time per epoch as the member axis grows, against one-by-one runs.

  python -m benchmarks.member_scaling
  python -m benchmarks.member_scaling --members=1,8 --batch_sizes=32

Trains the ksparse variant on ML-100k u1 with 1, 8 and 32 members in one
compiled program (seeds as members), at the variant's batch size and at
batch size 1, and prints for each: the minimum and median seconds per
epoch over the timed epochs (after one untimed epoch that absorbs
compilation), the cost relative to one member, and the throughput gained
over training the same members one after another (N x one member's time).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from aejax import batching, report, train, variants
from aejax.data import movielens
from aejax.data.ratings import Rows

_MEMBERS = flags.DEFINE_list("members", ["1", "8", "32"], "Member counts.")
_BATCH_SIZES = flags.DEFINE_list(
  "batch_sizes", ["default", "1"], "Batch sizes; default is the variant's."
)
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Timed epochs per setting.")
_VARIANT = flags.DEFINE_string("variant", "ksparse", "Variant to time.")


def time_epochs(config, rows, epochs: int) -> list[float]:
  """Seconds of each of ``epochs`` epochs after one warm-up epoch."""
  members = variants.members(config)
  program = train.make_program(config, rows.n_columns, members)
  states, hyper = train.init_members(program, members)
  device_rows = batching.DeviceRows.put(rows)
  epoch_fn = train.make_epoch_fn(program, rows, config.batch_size)
  times = []
  for epoch in range(epochs + 1):
    started = time.perf_counter()
    states, totals = epoch_fn(states, hyper, device_rows, np.int32(epoch))
    jax.block_until_ready((states, totals))
    if epoch:
      times.append(time.perf_counter() - started)
  return times


def main(argv):
  del argv
  data = movielens.load("ml-100k", "u1")
  base = variants.get_config(_VARIANT.value)
  print(f"{_VARIANT.value} on ML-100k u1, devices {jax.devices()}")
  rows_out = []
  for size_text in _BATCH_SIZES.value:
    batch_size = base.batch_size if size_text == "default" else int(size_text)
    rows = Rows.from_ratings(data.train, base.orientation)
    # One member is the reference, so it is always timed, and first.
    counts = sorted({1, *(int(m) for m in _MEMBERS.value)})
    one = None
    for count in counts:
      config = variants.get_config(
        _VARIANT.value, batch_size=batch_size, seeds=count
      )
      times = time_epochs(config, rows, _EPOCHS.value)
      best, median = min(times), statistics.median(times)
      if count == 1:
        one = best
      relative = best / one
      rows_out.append([
        batch_size, count, best, median, relative, count / relative,
      ])  # fmt: skip
      print(
        f"batch {batch_size:>3}, {count:>2} members: min {best:.3f} s, "
        f"median {median:.3f} s per epoch",
        flush=True,
      )
  print()
  print(
    report.format_table(
      ["batch", "members", "min s/epoch", "median s/epoch",
       "x one member", "speed-up vs one by one"],
      rows_out,
      digits=3,
    )
  )  # fmt: skip


if __name__ == "__main__":
  app.run(main)
